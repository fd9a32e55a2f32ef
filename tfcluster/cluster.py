"""`tfcluster cluster`: a folder of images to clusters a person can look at, in one step.

`cluster_folder` claims the output directory (export.output_dir), reads the
folder, optionally chooses K (tfcluster.choose), trains one run (tfcluster.run)
in OUT/run, then writes export.report's outputs: assignments, cluster folders, a
contact sheet, a web page, the files skipped and a summary.
"""

from __future__ import annotations

import os

import numpy as np

from tfcluster import config as config_lib
from tfcluster.data import images, sources
from tfcluster.errors import InputError
from tfcluster.run import RunOptions, train

# The method `cluster` trains unless told otherwise: the best of the cpu presets on Fashion-MNIST,
# the benchmark closest to photos and drawings of objects (docs/RESULTS.md).
CLUSTER_METHOD = "gatcluster"


def cluster_folder(folder: str, output: str, num_clusters: int | str, method: str = CLUSTER_METHOD,
                   preset: str = "cpu", size: str = "", channels: int = 0, seed: int = 0, overrides: tuple = (),
                   copy_images: bool = False, precision: str = "auto", progress: bool = True,
                   k_range: str = "2:15", k_features: str = "fcae", labels_from_subfolders: bool = False,
                   overwrite: bool = False, log=print) -> dict:
    """Clusters a folder of images in one step: trains, then writes export.report's outputs under `output`.

    Args:
      folder: the images (nested sub-folders, any size and mode PIL reads).
      output: where everything goes (the run itself in output/run: re-running resumes it). Checked
        before anything is read or trained (export.output_dir): outside the folder and not containing
        it, and new, empty or holding only what tfcluster wrote there, unless `overwrite`.
      num_clusters: K (>= 2), or "auto": the K tfcluster.choose suggests among `k_range`
        ("LO:HI" or "K1,K2,..."), on `k_features` (tfcluster.choose: "fcae" trains an
        auto-encoder in output/choose_k; "pixels"; or an export's directory).
      size: "H" or "HxW" every image is resized to ("" = the first image's size).
      channels: 1 or 3 (0 = from the first image's mode).
      labels_from_subfolders: take the sub-folders' names as classes (when every image sits in
        one) and score the clusters against them (ACC, NMI, ARI while training and in the
        summary's `scores_against_subfolders`). Off by default: a person's folders (years,
        cameras, trips) are rarely the classes, and the clustering never reads labels.
      overwrite: write into an output directory holding files tfcluster did not write (files
        of tfcluster's names are replaced; nothing else is deleted or changed).
    Returns the summary (also output/summary.json): cluster sizes, counts, paths of the outputs.
    """
    from tfcluster.export.output_dir import OutputDir

    if not os.path.isdir(folder):
        raise InputError(f"image folder not found: {folder!r}")
    folder_abs = os.path.abspath(folder)
    auto = str(num_clusters).strip().lower() == "auto"
    if auto:
        from tfcluster.evaluation import choose_k as choose_k_lib

        ks = choose_k_lib.parse_range(k_range)
    elif not str(num_clusters).strip().isdigit() or int(num_clusters) < 2:
        raise InputError(f"--num_clusters must be an integer of at least 2 or 'auto', got {num_clusters!r}")
    out = OutputDir.claim(output, "cluster", inputs=[folder], overwrite=overwrite)
    query = "&".join(f"{k}={v}" for k, v in (("size", size), ("channels", channels),
                                             ("labels", "" if labels_from_subfolders else "none")) if v)
    spec = f"folder:{folder_abs}" + (f"?{query}" if query else "")
    source = sources.load(spec)  # train() says how many files were skipped; unreadable.csv lists them
    chosen = None
    if auto:
        from tfcluster import choose

        chosen = choose.choose_k(source, ks, out.workdir("choose_k"), features=k_features, seed=seed,
                                 progress=progress, precision=precision, log=log)
        num_clusters = chosen["suggested_k"]
        log(f"--num_clusters=auto: K = {num_clusters} (votes {chosen['votes']}; "
            f"{os.path.join(out.root, 'choose_k', choose.RESULT_FILE)})")
    options = RunOptions(method=method, dataset=spec, workdir=out.workdir("run"), preset=preset,
                         num_clusters=int(num_clusters), seed=seed, overrides=tuple(overrides), progress=progress,
                         precision=precision)
    metrics_out = train(options, log=log, source=source)
    probs = np.load(os.path.join(metrics_out["workdir"], "probabilities.npy"))
    summary = write_report(out, source, folder_abs, probs, f"{method} (preset {preset})", copy_images)
    summary.update({"method": method, "preset": preset, "export": metrics_out.get("export"),
                    "wall_seconds": metrics_out["wall_seconds"]})
    if labels_from_subfolders:
        summary["scores_against_subfolders"] = (
            {m: metrics_out[m] for m in ("acc", "nmi", "ari")} if metrics_out.get("acc") is not None else None)
    if chosen is not None:
        summary["choose_k"] = {"suggested_k": chosen["suggested_k"], "votes": chosen["votes"],
                               "k_range": chosen["k_range"], "plot": chosen["plot"]}
    config_lib.write_json(summary["summary"], summary)
    return summary


def write_report(out, source: sources.Source, folder: str, probs: np.ndarray, made_by: str,
                 copy_images: bool = False) -> dict:
    """export.report's outputs in the OutputDir `out` for the images of `source` (read from `folder`) and
    their probabilities [N, K]. Returns the summary's counts and paths (summary.json is the caller's)."""
    from tfcluster.export import report

    clusters, confidence = probs.argmax(1), probs.max(1)
    k = probs.shape[1]
    items = report.relative_items(source.info.items, folder)
    paths = {name: out.file(name) for name in ("assignments.csv", "overview.png", "index.html", "unreadable.csv",
                                               "summary.json")}
    report.write_assignments(paths["assignments.csv"], items, clusters, confidence)
    order = report.cluster_order(clusters, confidence, k)
    made = report.write_cluster_folders(out, source.info.items, order, copy=copy_images)
    report.contact_sheet(paths["overview.png"], source.x, order)
    sizes = [len(i) for i in order]
    summary_line = (f"{len(items)} images of {folder} in {k} clusters by {made_by}; sizes {sizes}; "
                    f"{source.info.skipped} unreadable")
    report.index_html(paths["index.html"], made, [[items[i] for i in idx] for idx in order],
                      f"tfcluster: {os.path.basename(folder) or folder}", summary_line)
    unreadable = report.relative_items(source.info.skipped_items, folder)
    report.write_unreadable(paths["unreadable.csv"], unreadable, source.info.skipped_reasons)
    return {
        "images": len(items), "unreadable": len(unreadable), "num_clusters": k, "cluster_sizes": sizes,
        "unreadable_reasons": images.skipped_counts(source.info.skipped_reasons),
        "mean_confidence": round(float(confidence.mean()), 4),
        "assignments": paths["assignments.csv"], "clusters": os.path.join(out.root, "clusters"),
        "overview": paths["overview.png"], "index": paths["index.html"],
        "unreadable_list": paths["unreadable.csv"], "summary": paths["summary.json"],
    }
