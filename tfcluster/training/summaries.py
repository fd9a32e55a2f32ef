"""TensorBoard summaries: scalars, histograms, images and galleries (rows of images)."""

from __future__ import annotations

import functools
import re

import numpy as np
import tensorflow as tf

from tfcluster.errors import StorageError, short_reason


def _storage_errors(write):
    """A failed write of event files (full disk, file size limit, permissions) -> StorageError naming the
    file; the run's checkpoints are not touched by it."""

    @functools.wraps(write)
    def wrapped(*args, **kwargs):
        try:
            return write(*args, **kwargs)
        except (tf.errors.OpError, OSError) as e:
            text = str(getattr(e, "message", "") or e)
            if isinstance(e, tf.errors.OpError) and "tfevents" not in text:
                raise
            found = re.search(r"(\S*events\.out\.tfevents\S*?)[;:\s]", text + " ")
            where = found.group(1) if found else "the TensorBoard directory"
            raise StorageError(f"could not write TensorBoard events to {where} ({short_reason(e)}): free "
                               "space (or fix the directory), then re-run the same command to resume from the "
                               "last checkpoint") from e

    return wrapped


@_storage_errors
def write_scalars(writer, values: dict, step: int) -> None:
    with writer.as_default(step=int(step)):
        for key, value in values.items():
            tf.summary.scalar(key, float(value))
    writer.flush()


@_storage_errors
def write_logs(writer, values: dict, step: int) -> None:
    """Writes a dict of logs by kind: numbers as scalars, 1-D arrays as
    histograms, [N, H, W, C] arrays as images (values rescaled to [0, 1]),
    lists of image rows as one gallery image (`gallery`)."""
    with writer.as_default(step=int(step)):
        for key, value in values.items():
            arr = gallery(value) if isinstance(value, list) else np.asarray(value)
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


def gallery(rows: list, per_row: int | None = None) -> np.ndarray:
    """Tiles rows of images into one image: row i of the grid holds rows[i]'s images, left to right.

    Args:
      rows: float arrays [m_i, H, W, C] in [0, 1] (m_i may be 0; all of one H, W, C).
      per_row: columns (default: the longest row); longer rows are cut.
    Returns:
      float32 [1, len(rows) * H, per_row * W, C]; empty cells are black.
    """
    filled = [r for r in rows if len(r)]
    if not filled:
        raise ValueError("a gallery needs at least one image")
    h, w, c = filled[0].shape[1:]
    per_row = per_row or max(len(r) for r in rows)
    grid = np.zeros((len(rows) * h, per_row * w, c), np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row[:per_row]):
            grid[i * h:(i + 1) * h, j * w:(j + 1) * w] = img
    return grid[None]


def cluster_gallery(images: np.ndarray, clusters: np.ndarray, confidence: np.ndarray, num_clusters: int,
                    per_cluster: int = 8, max_clusters: int = 32) -> np.ndarray:
    """A grid: one row per cluster, its id and size on the left, then its `per_cluster` most confident members.

    Args:
      images: raw uint8 [N, H, W, C] images.
      clusters: int [N] assignments; confidence: float [N].
    Returns:
      float32 [1, rows*H', LABEL_WIDTH + per_cluster*W', C] in [0, 1], with H', W' = H, W enlarged
      (pixel for pixel) to at least 24 so the row labels fit; empty cells are black.
    """
    scale = max(1, -(-24 // min(images.shape[1:3])))
    rows, names = [], []
    for k in range(min(num_clusters, max_clusters)):
        members = np.flatnonzero(clusters == k)
        best = images[members[np.argsort(-confidence[members])][:per_cluster]] / 255.0
        rows.append(best.repeat(scale, axis=1).repeat(scale, axis=2))
        names.append((f"#{k}", f"n={len(members)}"))
    if not any(len(r) for r in rows):
        rows[0] = np.zeros((1, images.shape[1] * scale, images.shape[2] * scale, images.shape[3]), np.float32)
    grid = gallery(rows, per_cluster)
    return np.concatenate([row_labels(names, grid.shape[1] // len(rows), grid.shape[-1]), grid], axis=2)


# Width in pixels of the row-label column of a cluster gallery.
LABEL_WIDTH = 44


def row_labels(names: list, row_height: int, channels: int) -> np.ndarray:
    """A column [1, len(names) * row_height, LABEL_WIDTH, channels] in [0, 1]: each row's text lines, white on black."""
    from PIL import Image, ImageDraw

    column = Image.new("L", (LABEL_WIDTH, row_height * len(names)), 0)
    draw = ImageDraw.Draw(column)
    for r, lines in enumerate(names):
        for j, text in enumerate(lines):
            draw.text((2, r * row_height + 1 + 11 * j), text, fill=255)
    arr = np.asarray(column, np.float32)[None, :, :, None] / 255.0
    return np.repeat(arr, channels, axis=-1)


@_storage_errors
def write_gallery(writer, name: str, image: np.ndarray, step: int) -> None:
    with writer.as_default(step=int(step)):
        tf.summary.image(name, image, max_outputs=1)
    writer.flush()


def read_scalars(logdir: str, tags) -> dict:
    """{tag: [(step, value), ...] sorted by step} of scalar summaries of `tags` under `logdir`.

    Every event file is read (a resumed run adds files); a step written twice keeps its last value.
    """
    import glob
    import os

    wanted, found = set(tags), {}
    for path in sorted(glob.glob(os.path.join(logdir, "**", "events.*"), recursive=True), key=os.path.getmtime):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag in wanted:
                    found.setdefault(value.tag, {})[int(event.step)] = float(tf.make_ndarray(value.tensor))
    return {tag: sorted(steps.items()) for tag, steps in found.items()}


def learning_curve(logdir: str, metric: str = "eval/acc") -> list:
    """[[training images, metric], ...] at every evaluation of a run (eval/train_images on the x axis)."""
    scalars = read_scalars(logdir, ("eval/train_images", metric))
    images = dict(scalars.get("eval/train_images", []))
    return [[int(images[step]), round(value, 4)] for step, value in scalars.get(metric, []) if step in images]
