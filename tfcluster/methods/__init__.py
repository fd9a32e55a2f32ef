"""Clustering methods and their registry (`--method=NAME`).

The registry, the configs and the presets live in `tfcluster.configs` (no
TensorFlow there); `get` imports a method's module, which does.
"""

from __future__ import annotations

import importlib

from tfcluster import configs


def names() -> list[str]:
    return configs.names()


def presets(name: str) -> list[str]:
    """The preset names of method `name` (without importing TensorFlow)."""
    return sorted(configs.presets(name))


def get(name: str):
    """Returns the Method subclass registered as `name` (InputError for an unknown name)."""
    module, cls = configs.method_path(name).split(":")
    return getattr(importlib.import_module(module), cls)
