"""Alias of `tfcluster predict` (tfcluster/cli/predict.py), for running from a checkout."""

from tfcluster.cli import predict

if __name__ == "__main__":
    predict.run()
