"""Alias of `tfcluster predict` (tfcluster/cli/predict.py), for running from a checkout."""

import sys

from tfcluster import cli

if __name__ == "__main__":
    sys.exit(cli.main(["tfcluster", "predict", *sys.argv[1:]], hide_native_logs=True))
