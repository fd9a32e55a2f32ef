"""Using exported models: evaluation on labelled data and prediction on new images."""

from __future__ import annotations

import csv
import os
import shutil
import sys

import numpy as np

from tfcluster.data import sources
from tfcluster.errors import InputError
from tfcluster.evaluation import metrics
from tfcluster.export import drift
from tfcluster.export.saved_model import ExportedModel


def evaluate(model_dir: str, dataset: str, nmi_average: str = metrics.DEFAULT_NMI_AVERAGE) -> dict:
    """ACC/NMI/ARI of an exported model on a labelled dataset spec."""
    model = ExportedModel(model_dir)
    source = sources.load(dataset)
    if not source.has_labels:
        raise InputError(f"dataset {dataset!r} has no labels to evaluate against")
    out = model.predict(source.x)
    result = metrics.evaluate(source.y, out["cluster"], nmi_average)
    result.update(metrics.cluster_size_stats(out["cluster"], out["probabilities"].shape[1]))
    result.update({"num_samples": len(source), "dataset": dataset, "model": model.path,
                   "method": model.meta.get("method"), "seed": model.meta.get("seed"), "nmi_average": nmi_average})
    return result


def load_input(model: ExportedModel, path: str) -> sources.Source:
    """Loads a folder (resized to the model's input) or an .npz file."""
    if os.path.isdir(path):
        h, w, c = model.input_shape
        return sources.load(f"folder:{path}?size={h}x{w}&channels={c}")
    if path.endswith(".npz"):
        return sources.load(f"npz:{path}")
    raise InputError(f"--input must be an image folder or an .npz file, got {path!r}")


def predict(model_dir: str, input_path: str, output_dir: str, copy_images: bool = False,
            batch_size: int = 256, warn=None) -> tuple[str, list]:
    """Writes assignments.csv (item, cluster, confidence); returns (path, cluster sizes).

    `warn(text)` (default: print to stderr) hears when the inputs look unlike the
    training data (export.drift; exports from before it was kept are not checked).
    """
    model = ExportedModel(model_dir)
    source = load_input(model, input_path)
    out = model.predict(source.x, batch_size)
    clusters, confidence = out["cluster"], out["probabilities"].max(1)
    for text in drift.compare(model.meta.get("input_statistics"), source.x, clusters):
        (warn or (lambda t: print(f"warning: {t}", file=sys.stderr)))(text)
    items = list(source.info.items) or [str(i) for i in range(len(source))]
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "assignments.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["item", "cluster", "confidence"])
        for item, k, p in zip(items, clusters, confidence):
            writer.writerow([item, int(k), f"{p:.6f}"])
    if copy_images:
        from PIL import Image

        for i, (item, k) in enumerate(zip(items, clusters)):
            folder = os.path.join(output_dir, f"cluster_{int(k):02d}")
            os.makedirs(folder, exist_ok=True)
            if source.info.items:
                shutil.copy2(item, os.path.join(folder, f"{i:06d}_{os.path.basename(item)}"))
            else:
                img = source.x[i]
                Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(os.path.join(folder, f"{i:06d}.png"))
    counts = np.bincount(clusters, minlength=out["probabilities"].shape[1]).tolist()
    return path, counts
