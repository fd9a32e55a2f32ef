"""Alias of `tfcluster transfer` (tfcluster/cli/transfer.py), for running from a checkout."""

from tfcluster.cli import transfer

if __name__ == "__main__":
    transfer.run()
