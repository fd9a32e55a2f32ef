"""Alias of `tfcluster train` (tfcluster/cli/train.py), for running from a checkout."""

from tfcluster.cli import train

if __name__ == "__main__":
    train.run()
