"""Alias of `tfcluster transfer` (tfcluster/cli/transfer.py), for running from a checkout."""

import sys

from tfcluster import cli

if __name__ == "__main__":
    sys.exit(cli.main(["tfcluster", "transfer", *sys.argv[1:]], hide_native_logs=True))
