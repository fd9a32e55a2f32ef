"""Clustering methods and their registry (`--method=NAME`)."""

from __future__ import annotations

import importlib

from tfcluster.errors import InputError

# name -> module:class.
_METHODS = {
    "dac": "tfcluster.methods.dac:DAC",
    "kmeans": "tfcluster.methods.kmeans:KMeansPixels",
    "dbc": "tfcluster.methods.dbc:DBC",
    "fcae_kms": "tfcluster.methods.dbc:FCAEKMeans",
    "dccm": "tfcluster.methods.dccm:DCCM",
    "gatcluster": "tfcluster.methods.gatcluster:GATCluster",
    "precise_gan": "tfcluster.methods.precise_gan:PreciseGAN",
}
# Published methods whose modules have not been written yet.
_PLANNED: tuple = ()


def names() -> list[str]:
    return sorted(_METHODS)


def presets(name: str) -> list[str]:
    """The preset names of method `name` (imports its module)."""
    return sorted(get(name).presets)


def get(name: str):
    """Returns the Method subclass registered as `name`."""
    if name not in _METHODS:
        if name in _PLANNED:
            raise InputError(f"method {name!r} is planned but not implemented yet; available: "
                             + ", ".join(names()))
        raise InputError(f"unknown method {name!r}; available: " + ", ".join(names()))
    module, cls = _METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)
