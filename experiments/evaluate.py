"""Alias of `tfcluster evaluate` (tfcluster/cli/evaluate.py), for running from a checkout."""

from tfcluster.cli import evaluate

if __name__ == "__main__":
    evaluate.run()
