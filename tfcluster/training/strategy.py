"""tf.distribute strategy selection and logical CPU devices for testing."""

from __future__ import annotations

import functools
import os

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


def worker_role(strategy: tf.distribute.Strategy) -> tuple[str, int, bool]:
    """(task type, task id, is chief) of this process in `strategy`'s cluster.

    Single-process strategies (and a multi-worker strategy without a cluster in
    TF_CONFIG) are ("chief", 0, True). Otherwise the chief is the process the
    strategy itself says should write checkpoints (`extended.should_checkpoint`:
    the "chief" task, or worker 0 in a cluster without one).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return "chief", 0, True
    task_type, task_id = str(resolver.task_type), int(resolver.task_id or 0)
    return task_type, task_id, bool(strategy.extended.should_checkpoint)


def worker_workdir(workdir: str, strategy: tf.distribute.Strategy) -> str:
    """The directory this process writes to: `workdir` itself for the chief.

    Every worker of a multi-worker run must save checkpoints and SavedModels
    (saving distributed variables takes part in collective ops), but a shared
    work directory must have one writer: the other workers write to
    workdir/workers/<task type>_<task id>/. All of them resume from the chief's
    checkpoints (`workdir/checkpoints`), so resuming needs a work directory
    the workers share, as TensorFlow's multi-worker training does.
    """
    task_type, task_id, is_chief = worker_role(strategy)
    return workdir if is_chief else os.path.join(workdir, "workers", f"{task_type}_{task_id}")
