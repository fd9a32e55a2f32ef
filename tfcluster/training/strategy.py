"""tf.distribute strategy selection and logical CPU devices for testing."""

from __future__ import annotations

import functools

import tensorflow as tf

from tfcluster.errors import InputError

STRATEGIES = ("mirrored", "one_device", "multi_worker")


def split_cpu(num_devices: int) -> None:
    """Splits the first physical CPU into `num_devices` logical devices.

    Must run before TensorFlow initialises its devices (before any op). Used by
    tests and `--cpu_replicas` to stand two logical CPUs in for two replicas.
    """
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) == num_devices:
        return
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)


@functools.lru_cache(maxsize=None)
def make_strategy(name: str = "mirrored") -> tf.distribute.Strategy:
    """Returns the named strategy (one instance per process and name).

    Strategies are cached: several MirroredStrategy objects in one process
    allocate clashing collective-op keys (SyncBatchNorm's all-reduces of one
    run then meet another run's).

    mirrored:     MirroredStrategy over every visible GPU, or every logical CPU
                  when there is no GPU (one CPU -> one replica).
    one_device:   a single device (first GPU, else CPU).
    multi_worker: MultiWorkerMirroredStrategy, configured from TF_CONFIG.
    """
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise InputError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
