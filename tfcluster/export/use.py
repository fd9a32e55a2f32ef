"""Using exported models: evaluation on labelled data and prediction on new images."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

import numpy as np

from tfcluster.data import images, sources
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
        return sources.load(f"folder:{path}?size={h}x{w}&channels={c}&labels=none")
    if path.endswith(".npz"):
        return sources.load(f"npz:{path}")
    raise InputError(f"--input must be an image folder or an .npz file, got {path!r}")


@dataclasses.dataclass
class Prediction:
    """What `predict` wrote.

    Attributes:
      assignments: path of assignments.csv (item, cluster, confidence), one row per readable input.
      cluster_sizes: images per cluster [K].
      unreadable: path of unreadable.csv (path, reason), the input files skipped.
      skipped: number of files skipped; skipped_reasons: {reason: count}.
      folders: the cluster folders' directory (--copy_images), else None.
    """

    assignments: str
    cluster_sizes: list
    unreadable: str
    skipped: int
    skipped_reasons: dict
    folders: str | None = None


def predict(model_dir: str, input_path: str, output_dir: str, copy_images: bool = False,
            batch_size: int = 256, warn=None, overwrite: bool = False) -> Prediction:
    """Assigns the export's clusters to a folder or .npz of images; writes into `output_dir`.

    `output_dir` is checked before anything is read (export.output_dir): disjoint from the input
    and the model both ways, and new, empty or holding only what `tfcluster predict` wrote there,
    unless `overwrite`. It receives assignments.csv (item, cluster, confidence; item = the path
    relative to a folder input, or the row of an .npz), unreadable.csv (path, reason: the files
    skipped) and, with `copy_images`, cluster_KK/ folders of copies (PNGs for .npz rows).
    `warn(text)` (default: print to stderr) hears when the inputs look unlike the
    training data (export.drift; exports from before it was kept are not checked).
    """
    from tfcluster.export import report
    from tfcluster.export.output_dir import OutputDir

    if not (os.path.isdir(input_path) or (input_path.endswith(".npz") and os.path.isfile(input_path))):
        raise InputError(f"--input must be an image folder or an .npz file, got {input_path!r}")
    model = ExportedModel(model_dir)
    out = OutputDir.claim(output_dir, "predict", inputs=[input_path, model_dir, model.path], overwrite=overwrite)
    source = load_input(model, input_path)
    result = model.predict(source.x, batch_size)
    clusters, confidence = result["cluster"], result["probabilities"].max(1)
    for text in drift.compare(model.meta.get("input_statistics"), source.x, clusters):
        (warn or (lambda t: print(f"warning: {t}", file=sys.stderr)))(text)
    folder = os.path.isdir(input_path)
    items = report.relative_items(source.info.items, input_path) if folder else [str(i) for i in range(len(source))]
    path = out.file("assignments.csv")
    report.write_assignments(path, items, clusters, confidence, name="item")
    skipped = report.relative_items(source.info.skipped_items, input_path) if folder else []
    unreadable = out.file("unreadable.csv")
    report.write_unreadable(unreadable, skipped, source.info.skipped_reasons)
    k = result["probabilities"].shape[1]
    folders = None
    if copy_images:
        order = report.cluster_order(clusters, confidence, k)
        if folder:
            files, names = source.info.items, None
        else:
            files, names = [functools.partial(_save_png, source.x[i]) for i in range(len(source))], \
                [f"{i:06d}.png" for i in range(len(source))]
        report.write_cluster_folders(out, files, order, copy=True, top="", names=names)
        folders = out.root
    counts = np.bincount(clusters, minlength=k).tolist()
    return Prediction(assignments=path, cluster_sizes=counts, unreadable=unreadable, skipped=len(skipped),
                      skipped_reasons=images.skipped_counts(source.info.skipped_reasons), folders=folders)


def _save_png(image: np.ndarray, path: str) -> None:
    from PIL import Image

    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path, format="PNG")
