"""Test set-up: two logical CPU devices stand in for two replicas."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tfcluster.training.strategy import split_cpu  # noqa: E402

split_cpu(2)


@pytest.fixture
def tiny_images():
    """40 random uint8 images [40, 12, 12, 1] with 4 labels (blobs at four corners)."""
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(4), 10)
    x = rng.randint(0, 40, size=(40, 12, 12, 1)).astype(np.uint8)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * 6:(r + 1) * 6, c * 6:(c + 1) * 6] = 220
    return x, y
