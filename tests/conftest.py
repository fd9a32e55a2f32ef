"""Test set-up: two logical CPU devices stand in for two replicas."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfcluster.training.strategy import split_cpu  # noqa: E402

split_cpu(2)

