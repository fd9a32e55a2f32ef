"""TensorBoard summaries: scalars and the per-cluster gallery."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def write_scalars(writer, values: dict, step: int) -> None:
    with writer.as_default(step=int(step)):
        for key, value in values.items():
            tf.summary.scalar(key, float(value))
    writer.flush()


def write_logs(writer, values: dict, step: int) -> None:
    """Writes a dict of logs by kind: numbers as scalars, 1-D arrays as
    histograms, [N, H, W, C] arrays as images (values rescaled to [0, 1])."""
    with writer.as_default(step=int(step)):
        for key, value in values.items():
            arr = np.asarray(value)
            if arr.ndim == 0:
                tf.summary.scalar(key, float(arr))
            elif arr.ndim == 1:
                tf.summary.histogram(key, arr)
            elif arr.ndim == 4:
                lo, hi = float(arr.min()), float(arr.max())
                tf.summary.image(key, (arr - lo) / max(hi - lo, 1e-12), max_outputs=arr.shape[0])
            else:
                raise ValueError(f"cannot summarise log {key!r} of shape {arr.shape}")
    writer.flush()


def cluster_gallery(images: np.ndarray, clusters: np.ndarray, confidence: np.ndarray, num_clusters: int,
                    per_cluster: int = 8, max_clusters: int = 32) -> np.ndarray:
    """A grid: one row per cluster, its `per_cluster` most confident members.

    Args:
      images: raw uint8 [N, H, W, C] images.
      clusters: int [N] assignments; confidence: float [N].
    Returns:
      float32 [1, rows*H, per_cluster*W, C] in [0, 1] (empty cells are black).
    """
    n, h, w, c = images.shape
    rows = min(num_clusters, max_clusters)
    grid = np.zeros((rows * h, per_cluster * w, c), np.float32)
    for k in range(rows):
        members = np.flatnonzero(clusters == k)
        members = members[np.argsort(-confidence[members])][:per_cluster]
        for j, i in enumerate(members):
            grid[k * h:(k + 1) * h, j * w:(j + 1) * w] = images[i] / 255.0
    return grid[None]


def write_gallery(writer, name: str, gallery: np.ndarray, step: int) -> None:
    with writer.as_default(step=int(step)):
        tf.summary.image(name, gallery, max_outputs=1)
    writer.flush()
