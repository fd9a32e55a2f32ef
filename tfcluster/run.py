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
from tfcluster import precision
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
      precision: auto | float32 | bfloat16 (tfcluster.precision): the networks'
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
