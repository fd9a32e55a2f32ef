"""Plots: the DAC supplement's label-feature -> circle mapping (eq. 1)."""

from __future__ import annotations

import numpy as np


def circle_mapping(features: np.ndarray) -> np.ndarray:
    """Maps label features [N, K] (non-negative) to 2-D points [N, 2] (supplement eq. 1).

    o_i = [sum_h l_ih/||l_i||_1 sin(2 pi h / k), sum_h l_ih/||l_i||_1 cos(2 pi h / k)], h = 1..k.
    One-hot features land on the k vertices of a regular polygon on the unit circle.
    """
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or np.any(features < 0):
        raise ValueError("label features must be a non-negative [N, K] array")
    k = features.shape[1]
    p = features / np.maximum(features.sum(1, keepdims=True), 1e-12)
    angles = 2.0 * np.pi * np.arange(1, k + 1) / k
    return np.stack([p @ np.sin(angles), p @ np.cos(angles)], axis=1)


def plot_circle(features: np.ndarray, colours: np.ndarray | None, path: str, title: str = "") -> str:
    """Saves the circle-mapping scatter plot of `features` [N, K] to `path` (PNG, PDF, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = circle_mapping(features)
    k = features.shape[1]
    fig, ax = plt.subplots(figsize=(5, 5))
    vertices = circle_mapping(np.eye(k))
    ax.plot(np.r_[vertices[:, 0], vertices[:1, 0]], np.r_[vertices[:, 1], vertices[:1, 1]], color="0.8", lw=0.8)
    ax.scatter(points[:, 0], points[:, 1], c=colours if colours is not None else "C0", s=3, cmap="tab10"
               if colours is not None and np.max(colours) < 10 else "tab20", alpha=0.6)
    for h, (x, y) in enumerate(vertices):
        ax.annotate(str(h), (x * 1.08, y * 1.08), ha="center", va="center", fontsize=8)
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title or "label features (DAC supplement eq. 1); colour = class")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
