"""Numeric precision of a run: float32, or Keras' mixed bfloat16 where the hardware has bf16 units.

`bfloat16` is Keras' `mixed_bfloat16` policy for the networks: layers compute
in bfloat16, variables and optimizer state stay float32. The networks' output
layers (softmaxes, the restraint layer, logits, generator and critic outputs,
features the losses read) are float32 islands (`dtype="float32"` on those
layers), so losses, similarities, thresholds, gradient penalties and every
serving output are computed in float32; Keras' BatchNormalization computes its
statistics in float32 for bfloat16 inputs.

`auto` picks bfloat16 where matrix work in bfloat16 is fast: a CPU with the
`amx_bf16` or `avx512_bf16` flags, or a GPU of compute capability 8.0 or more;
float32 elsewhere, and for methods whose bfloat16 results were measured worse
(`Method.auto_bfloat16 = False`; docs/RESULTS.md).

The policy only matters while models are built (layers take it at creation):
`policy(precision)` sets it for a `with` block and restores the previous one.
"""

from __future__ import annotations

import contextlib
import functools

from tfcluster.errors import InputError

PRECISIONS = ("auto", "float32", "bfloat16")
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=None)
def _cpuinfo(field: str, path: str = "/proc/cpuinfo") -> str:
    """The first value of `field` in /proc/cpuinfo ("" where it is not readable)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> frozenset:
    """The CPU's feature flags (empty where /proc/cpuinfo is not readable)."""
    return frozenset(_cpuinfo("flags").split())


def cpu_model() -> str:
    return _cpuinfo("model name") or "unknown"


def bf16_hardware() -> str:
    """What makes bfloat16 fast here ("cpu:amx_bf16", "gpu:8.0", ...), or "" when nothing does."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and tuple(capability) >= (8, 0):
            return f"gpu:{capability[0]}.{capability[1]}"
    flags = cpu_flags()
    found = [f for f in BF16_CPU_FLAGS if f in flags]
    return f"cpu:{'+'.join(found)}" if found else ""


def resolve(precision: str, method_prefers_bf16: bool = True) -> str:
    """"auto" -> "bfloat16" or "float32" for this machine and method; others as they are."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bfloat16" if method_prefers_bf16 and bf16_hardware() else "float32"


@contextlib.contextmanager
def policy(precision: str):
    """Keras' global dtype policy for `precision` ("float32" or "bfloat16") inside the block."""
    import keras

    if precision not in _POLICIES:
        raise InputError(f"a run's precision is float32 or bfloat16, got {precision!r}")
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(_POLICIES[precision])
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
