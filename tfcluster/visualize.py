"""Plots: the label-feature circle mapping (DAC supplement eq. 1 = GATCluster appendix A eq. A1)
and attention-map overlays (GATCluster Fig. 4)."""

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


def plot_circle(features: np.ndarray, colours: np.ndarray | None, path: str, title: str = "",
                class_names=None) -> str:
    """Saves the circle-mapping scatter plot of `features` [N, K] to `path` (PNG, PDF, ...).

    colours: int [N] classes (a legend names them, with `class_names` where given) or None.
    """
    fig = _circle_figure(features, colours, title, class_names)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def circle_image(features: np.ndarray, colours: np.ndarray | None, title: str = "",
                 class_names=None) -> np.ndarray:
    """The circle-mapping plot rendered as an image float32 [1, H, W, 3] in [0, 1] (for TensorBoard)."""
    import matplotlib.pyplot as plt

    fig = _circle_figure(features, colours, title, class_names)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba(), dtype=np.float32) / 255.0
    plt.close(fig)
    return rgba[None, :, :, :3]


def _circle_figure(features: np.ndarray, colours: np.ndarray | None, title: str, class_names=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = circle_mapping(features)
    k = features.shape[1]
    fig, ax = plt.subplots(figsize=(5, 5) if colours is None else (6.2, 5))
    if colours is not None:
        fig.subplots_adjust(left=0.02, right=0.8)  # room for the legend, also when drawn without bbox "tight"
    vertices = circle_mapping(np.eye(k))
    ax.plot(np.r_[vertices[:, 0], vertices[:1, 0]], np.r_[vertices[:, 1], vertices[:1, 1]], color="0.8", lw=0.8)
    if colours is None:
        ax.scatter(points[:, 0], points[:, 1], c="C0", s=3, alpha=0.6)
    else:
        colours = np.asarray(colours)
        classes = np.unique(colours)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            mask = colours == c
            name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
            ax.scatter(points[mask, 0], points[mask, 1], color=cmap(i % cmap.N), s=3, alpha=0.6, label=name)
        if len(classes) <= 20:
            ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, title_fontsize=8,
                      markerscale=3, frameon=False)
    for h, (x, y) in enumerate(vertices):
        ax.annotate(str(h), (x * 1.08, y * 1.08), ha="center", va="center", fontsize=8)
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title or "label features (DAC supplement eq. 1)")
    ax.text(0.5, -0.02, "numbers on the polygon: cluster ids (a one-hot feature sits on its vertex)"
            + ("; colour: class" if colours is not None else ""), transform=ax.transAxes, ha="center",
            va="top", fontsize=7, color="0.3")
    return fig


def overlay_attention(images: np.ndarray, maps: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """Blends attention maps onto images, as GATCluster's Fig. 4.

    Args:
      images: raw uint8 [n, H, W, C] (C = 1 or 3).
      maps: [n, h, w] attention maps in [0, 1] (bilinearly resized to H x W).
    Returns:
      float32 [n, H, W, 3] in [0, 1]: the grey or colour image darkened where
      the map is low, with the map in the red channel.
    """
    import tensorflow as tf

    images = np.asarray(images, np.float32) / 255.0
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    h, w = images.shape[1:3]
    a = tf.image.resize(np.asarray(maps, np.float32)[..., None], (h, w)).numpy()
    a = np.clip(a, 0.0, 1.0)
    out = images * ((1.0 - strength) + strength * a)
    out[..., 0] = np.maximum(out[..., 0], strength * a[..., 0])
    return np.clip(out, 0.0, 1.0)
