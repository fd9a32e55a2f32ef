"""One training run, end to end: data -> method -> loop -> metrics -> export.

This is the library entry point the binaries call; it takes a typed
`RunOptions` and reads no flags. It writes into the work directory:
  config.json     the resolved configuration (method config, preset, seed, ...)
  metrics.json    acc, nmi, ari, num_samples, method, dataset, seed, wall_seconds,
                  train_seconds (in steps), time_seconds (where the wall time went: setup,
                  each activity of the epochs, after_training), label_uniformity_index
                  (labelled data), ...
  checkpoints/    for resuming (re-run with the same work directory)
  tensorboard/    scalars and the cluster gallery
  export/<n>/     the SavedModel
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfcluster import config as config_lib
from tfcluster import configs
from tfcluster import methods
from tfcluster.data import images, sources
from tfcluster.data.preprocess import Preprocessor
from tfcluster.errors import InputError, StorageError
from tfcluster.evaluation import metrics
from tfcluster.export import drift, saved_model
from tfcluster.training import precision
from tfcluster.training.loop import Trainer
from tfcluster.training.strategy import make_strategy, worker_workdir
from tfcluster.training.workdir import WorkdirLock


@dataclasses.dataclass
class RunOptions:
    """What to run.

    Attributes:
      method: registered method name (dac, kmeans, ...).
      dataset: dataset spec (see tfcluster.data.sources).
      workdir: output directory; re-using it resumes.
      preset: preset name ("cpu", "paper", ...).
      num_clusters: K; 0 takes the dataset's number of classes.
      seed: seeds weights, shuffling and augmentation.
      strategy: mirrored | one_device | multi_worker.
      overrides: "field=value" assignments applied to the preset.
      deterministic: enable TF op determinism (two runs give identical results).
      progress: show a progress bar.
      export: write a SavedModel at the end.
      circle_plot: save the label-feature circle map (DAC supplement eq. 1).
      precision: auto | float32 | bfloat16 (training.precision): the networks'
        compute precision; auto picks bfloat16 where the hardware has bf16
        units and the method was measured no worse in it.
    """

    method: str = "dac"
    dataset: str = "mnist5k"
    workdir: str = "/tmp/tfcluster"
    preset: str = "cpu"
    num_clusters: int = 0
    seed: int = 0
    strategy: str = "mirrored"
    overrides: tuple = ()
    deterministic: bool = False
    progress: bool = True
    export: bool = True
    circle_plot: bool = False
    precision: str = "auto"


def resolve_num_clusters(requested: int, source: sources.Source) -> int:
    k = int(requested) or source.info.num_classes
    if k == 0:
        raise InputError(f"dataset {source.info.name!r} has no labels: pass the number of clusters "
                         "(--num_clusters)")
    if k < 2:
        raise InputError(f"num_clusters must be at least 2, got {k}")
    if k > len(source):
        raise InputError(f"num_clusters={k} is larger than the data ({len(source)} samples)")
    return k


def save_npy(path: str, array: np.ndarray) -> None:
    """np.save, atomically (a full disk leaves the previous file, never a part)."""
    tmp = f"{path}.tmp-{os.getpid()}.npy"
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError(f"could not write {path} ({e.strerror or e}): free space (or fix the directory), then "
                           "re-run the same command; the checkpoints are intact") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def set_seeds(seed: int, deterministic: bool) -> None:
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def build(options: RunOptions, source: sources.Source | None = None):
    """Loads data and builds the method. Returns (method, source, preprocessor, resolved config dict)."""
    method_cls = methods.get(options.method)
    # First: a multi-worker strategy configures collective ops, which must precede other TensorFlow work.
    strategy = make_strategy(options.strategy)
    source = source or sources.load(options.dataset)
    k = resolve_num_clusters(options.num_clusters, source)
    cfg = configs.resolve(options.method, options.preset, source.info, options.overrides, validate=False)
    if method_cls.trainable and cfg.batch_size > len(source):  # k-means fits the whole set at once
        raise InputError(f"batch_size={cfg.batch_size} is larger than the data ({len(source)} samples): give "
                         f"more images, a smaller batch (--set=batch_size=N) or --method=kmeans")
    cfg.validate()  # after the check above: data smaller than a batch is the cause to name
    set_seeds(options.seed, options.deterministic)
    modality = source.info.modality
    grayscale = bool(cfg.grayscale) and modality == "image"
    preprocessor = Preprocessor.fit(source.x, grayscale=grayscale, modality=modality)
    input_shape = source.info.image_shape
    if modality == "image":
        input_shape = input_shape[:-1] + (preprocessor.output_channels(input_shape[-1]),)
    run_precision = precision.resolve(options.precision, method_cls.auto_bfloat16)
    method = method_cls(cfg, source.info, k, strategy, input_shape, seed=options.seed, preprocessor=preprocessor,
                        precision=run_precision)
    method.build_in_precision()
    resolved = {
        "method": options.method, "dataset": options.dataset, "preset": options.preset, "num_clusters": k,
        "seed": options.seed, "strategy": options.strategy, "replicas": strategy.num_replicas_in_sync,
        "overrides": list(options.overrides), "deterministic": options.deterministic,
        "precision": run_precision, "precision_requested": options.precision,
        "cpu": {"model": precision.cpu_model(), "bf16_hardware": precision.bf16_hardware()},
        "config": config_lib.to_dict(cfg), "preprocessor": preprocessor.config(),
        "num_samples": len(source), "skipped_files": source.info.skipped,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    return method, source, preprocessor, resolved


_RESUME_KEYS = ("method", "dataset", "preset", "num_clusters", "seed", "config", "precision")
# Config fields that change the speed, not the steps: a run may resume with other values.
_SPEED_FIELDS = ("steps_per_call",)


def resume_settings(resolved: dict) -> dict:
    """The settings a run resumes only with (the resolved config's `_RESUME_KEYS`, speed fields left out)."""
    out = json.loads(json.dumps({k: resolved.get(k) for k in _RESUME_KEYS}, default=str))
    for field in _SPEED_FIELDS:
        (out.get("config") or {}).pop(field, None)
    return out


def _check_resume(workdir: str, resolved: dict, log=print) -> None:
    """Refuses to resume a work directory trained with other settings (config.json's; the checkpoints
    carry them too, and the Trainer checks those whatever config.json holds)."""
    path = os.path.join(workdir, "config.json")
    if not (os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints"))):
        return
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log(f"{path} is unreadable ({type(e).__name__}); the settings are checked against the checkpoint's, "
            "and the file is written anew")
        return
    old = {"precision": "float32", **old}  # runs from before --precision were float32
    old_cmp, new_cmp = resume_settings(old), resume_settings(resolved)
    if old_cmp != new_cmp:
        diff = [k for k in _RESUME_KEYS if old_cmp.get(k) != new_cmp.get(k)]
        raise InputError(f"work directory {workdir!r} holds a run with other settings ({', '.join(diff)} "
                         "differ); use a new --workdir, or the same settings to resume it")


def train(options: RunOptions, log=print, source: sources.Source | None = None) -> dict:
    """Runs training, evaluation and export. Returns the metrics dict (also in metrics.json)."""
    t0 = time.perf_counter()
    method, source, preprocessor, resolved = build(options, source)
    _check_resume(options.workdir, resolved, log)
    # The chief writes to options.workdir; other workers of a multi-worker run to their own subdirectory.
    workdir = worker_workdir(options.workdir, method.strategy)
    with WorkdirLock(workdir) as lock:
        if lock.stale_holder:
            log(f"took over the lock of {workdir} left by a process that ended without releasing it "
                f"({lock.stale_holder})")
        return _train_locked(options, log, method, source, preprocessor, resolved, workdir, t0)


def _train_locked(options, log, method, source, preprocessor, resolved, workdir, t0) -> dict:
    restore_dir = None if workdir == options.workdir else os.path.join(options.workdir, "checkpoints")
    trainer = Trainer(method, source, workdir, progress=options.progress, log=log, restore_dir=restore_dir,
                      settings=resume_settings(resolved))
    trainer.restore()  # refuses checkpoints of other settings before config.json is written
    config_lib.write_json(os.path.join(workdir, "config.json"), resolved)
    if source.info.skipped:
        reasons = "; ".join(f"{n} {why}" for why, n in images.skipped_counts(source.info.skipped_reasons).items())
        log(f"skipped {source.info.skipped} unreadable image file(s) in {options.dataset} ({reasons})")
    log(f"{options.method} on {options.dataset}: {len(source)} samples, K={method.num_clusters}, "
        f"{resolved['replicas']} replica(s), preset {options.preset}, precision {method.precision}")
    t_run = time.perf_counter()
    result = trainer.run(restore=False)
    t_end = time.perf_counter()
    out = {
        "method": options.method, "dataset": options.dataset, "preset": options.preset, "seed": options.seed,
        "num_samples": len(source), "num_clusters": method.num_clusters,
        "acc": result.metrics.get("acc"), "nmi": result.metrics.get("nmi"), "ari": result.metrics.get("ari"),
        "extra": {k: v for k, v in result.metrics.items() if k not in ("acc", "nmi", "ari")},
        "epochs_run": result.epochs_run, "steps": result.steps, "train_seconds": round(result.train_seconds, 3),
        "train_images_per_second": round(result.train_images_per_second, 1),
        "train_steps_per_second": round(result.train_steps_per_second, 2),
        "resumed_from": result.resumed_from, "workdir": workdir, "precision": method.precision,
    }
    if source.has_labels and source.info.num_classes >= 2:
        # The data's class balance (precise-feature paper, eq. 9): 1 = uniform; for class_reduced variants.
        out["label_uniformity_index"] = round(metrics.uniformity_index(source.y, source.info.num_classes), 4)
    clusters = np.argmax(result.probabilities, axis=1)
    if options.export:
        raw_dtype = tf.uint8 if source.info.modality == "image" else tf.float32
        out["export"] = saved_model.export(
            method, preprocessor, source.info.image_shape, os.path.join(workdir, "export"),
            meta={k: resolved[k] for k in ("method", "dataset", "preset", "num_clusters", "seed")}
            | {"class_names": list(source.info.class_names),
               "input_statistics": drift.summarize(source.x, clusters, method.num_clusters)}, raw_dtype=raw_dtype)
    save_npy(os.path.join(workdir, "probabilities.npy"), result.probabilities)
    out["cluster_sizes"] = np.bincount(clusters, minlength=method.num_clusters).tolist()
    if options.circle_plot:
        from tfcluster import visualize

        out["circle_plot"] = visualize.plot_circle(
            result.probabilities, source.y if source.has_labels else None,
            os.path.join(workdir, "circle_map.png"),
            title=f"{options.method} on {options.dataset}: label features (DAC supp. eq. 1)",
            class_names=list(source.info.class_names) or None)
    out["wall_seconds"] = round(time.perf_counter() - t0, 3)
    # Where the wall time went: set-up (data, networks, restore), the epochs' activities, then
    # export, predictions and plots.
    spent = {"setup": t_run - t0} | result.activity_seconds | {"after_training": time.perf_counter() - t_end}
    out["time_seconds"] = {k: round(v, 2) for k, v in spent.items() if v >= 0.005}
    config_lib.write_json(os.path.join(workdir, "metrics.json"), out)
    return out


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
    from tfcluster.export import report
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
    output_abs = out.root
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
            f"{os.path.join(output_abs, 'choose_k', choose.RESULT_FILE)})")
    options = RunOptions(method=method, dataset=spec, workdir=out.workdir("run"), preset=preset,
                         num_clusters=int(num_clusters), seed=seed, overrides=tuple(overrides), progress=progress,
                         precision=precision)
    metrics_out = train(options, log=log, source=source)
    probs = np.load(os.path.join(metrics_out["workdir"], "probabilities.npy"))
    clusters, confidence = probs.argmax(1), probs.max(1)
    k = probs.shape[1]
    items = report.relative_items(source.info.items, folder_abs)
    paths = {name: out.file(name) for name in ("assignments.csv", "overview.png", "index.html", "unreadable.csv",
                                               "summary.json")}
    report.write_assignments(paths["assignments.csv"], items, clusters, confidence)
    order = report.cluster_order(clusters, confidence, k)
    made = report.write_cluster_folders(out, source.info.items, order, copy=copy_images)
    report.contact_sheet(paths["overview.png"], source.x, order)
    sizes = [len(i) for i in order]
    summary_line = (f"{len(items)} images of {folder} in {k} clusters by {method} (preset {preset}); "
                    f"sizes {sizes}; {source.info.skipped} unreadable")
    report.index_html(paths["index.html"], made, [[items[i] for i in idx] for idx in order],
                      f"tfcluster: {os.path.basename(folder_abs) or folder_abs}", summary_line)
    unreadable = report.relative_items(source.info.skipped_items, folder_abs)
    report.write_unreadable(paths["unreadable.csv"], unreadable, source.info.skipped_reasons)
    summary = {
        "images": len(items), "unreadable": len(unreadable), "num_clusters": k, "cluster_sizes": sizes,
        "unreadable_reasons": images.skipped_counts(source.info.skipped_reasons),
        "mean_confidence": round(float(confidence.mean()), 4), "method": method, "preset": preset,
        "assignments": paths["assignments.csv"], "clusters": os.path.join(output_abs, "clusters"),
        "overview": paths["overview.png"], "index": paths["index.html"],
        "unreadable_list": paths["unreadable.csv"], "export": metrics_out.get("export"),
        "wall_seconds": metrics_out["wall_seconds"], "summary": paths["summary.json"],
    }
    if labels_from_subfolders:
        summary["scores_against_subfolders"] = (
            {m: metrics_out[m] for m in ("acc", "nmi", "ari")} if metrics_out.get("acc") is not None else None)
    if chosen is not None:
        summary["choose_k"] = {"suggested_k": chosen["suggested_k"], "votes": chosen["votes"],
                               "k_range": chosen["k_range"], "plot": chosen["plot"]}
    config_lib.write_json(paths["summary.json"], summary)
    return summary
