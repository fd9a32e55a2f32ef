"""k-means on pixels: `KMeansConfig` and its preset (methods.kmeans fits it).

TF-free (see tfcluster.configs).
"""

from __future__ import annotations

import dataclasses

from tfcluster.configs.base import BaseConfig
from tfcluster.errors import InputError


@dataclasses.dataclass(frozen=True)
class KMeansConfig(BaseConfig):
    """Attributes: n_init restarts, max_iter per restart (scikit-learn's)."""

    epochs: int = 0
    n_init: int = 10
    max_iter: int = 300

    def validate(self):
        super().validate()
        if self.n_init < 1 or self.max_iter < 1:
            raise InputError(f"n_init and max_iter must be positive; got {self.n_init}, {self.max_iter}")


def _preset(info) -> KMeansConfig:
    """k-means++ with 10 restarts. Command: tfcluster train --method=kmeans"""
    return KMeansConfig()

PRESETS = {"paper": _preset, "cpu": _preset}
