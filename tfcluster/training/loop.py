"""The training loop: each epoch runs the method's plan (tfcluster.plan), stage by stage.

  for epoch in [resumed epoch, num_epochs):
      for stage in method.epoch_plan(epoch, ...).stages:
          stage.begin()                  eager: schedules, targets, k-means, calibration
          for global batch of the stage: tf.function: strategy.run(stage.step)
                                         (config.steps_per_call > 1: a block of that many batches
                                         per call, the steps in a loop inside the tf.function;
                                         the stages' batches come from one input pipeline
                                         per kind of stage for the run,
                                         data.pipeline.StageBatches)
      checkpoint / evaluate / summarise  eager, on the host

Checkpoints (`tf.train.CheckpointManager`, which writes files first and then
atomically updates its index) hold the method's models, optimizers and state,
the epoch, the global step, the position in the epoch and the run's settings;
a re-run with the same work directory resumes from the latest readable one (an
unreadable one, e.g. truncated, is reported and the one before it used; an
unreadable index is rebuilt from the ckpt-* files), and refuses one written with
other settings. A failed write (full disk) ends the run with StorageError, the
earlier checkpoints intact. A non-finite loss stops training before anything is
saved, so the last good checkpoint stays the latest.

Resuming is exact: the re-run trains the steps the uninterrupted run would have
trained, on the same batches, targets and weights. SIGINT / SIGTERM stop training
at the next step (or block) boundary and save a checkpoint, then raise
TrainingInterrupted: in a stage without a `begin`, of the position reached (the
re-run skips the batches already trained); in a stage with one (targets, k-means,
calibration: computed from the weights at the stage's start), of the state at the
stage's start, kept in memory when the stage began (the re-run repeats the
stage's `begin` and its steps). After SIGKILL a re-run resumes from the last
epoch-end checkpoint (`checkpoint_every`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import json
import math
import os
import re
import signal
import threading
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
import threadpoolctl

from tfcluster import config as config_lib
from tfcluster.data import pipeline
from tfcluster.data.sources import Source
from tfcluster.errors import InputError, NonFiniteLossError, StorageError, TrainingInterrupted, short_reason
from tfcluster.evaluation import metrics
from tfcluster.methods.base import Method
from tfcluster.training import summaries
from tfcluster.training.progress import RunProgress


def distribute_batches(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset, axis: int = 0):
    """Yields the global batches of `dataset` as the inputs of `strategy.run`.

    Replica r of R takes rows [r B/R, (r+1) B/R) of every tensor of a global
    batch of B rows (B must be divisible by R), as
    `strategy.experimental_distribute_dataset` splits it. With one replica the
    batch is passed as it is. With several workers, each reads the same global
    batches (the pipelines are seeded) and passes its own replicas' rows.
    `axis=1` splits blocks of batches [n, B, ...] the same way, on their rows.

    Not `experimental_distribute_dataset` itself: its per-device iterator
    (tf.data's MultiDeviceIterator) runs an autotuning thread, and dropping the
    iterator at the end of an epoch waits, with the cores idle, until that
    thread wakes up (seconds per epoch in TF 2.21, longer after longer
    epochs). Here the slices are cut on the host
    and copied to each replica's device when a step needs them.
    """
    for batch in dataset:
        yield distribute_batch(strategy, batch, axis)


def distribute_batch(strategy: tf.distribute.Strategy, batch, axis: int = 0):
    """One global batch (or block of batches, `axis=1`) split over the replicas as `distribute_batches` does."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return batch
    devices = strategy.extended.worker_devices  # this worker's; replica ids count over all workers
    size = int(tf.nest.flatten(batch)[0].shape[axis])
    if size % replicas:
        raise InputError(f"a global batch of {size} rows cannot be split evenly over {replicas} replicas")
    per = size // replicas

    def value_fn(context):
        r = context.replica_id_in_sync_group
        rows = (slice(None),) * axis + (slice(r * per, (r + 1) * per),)
        with tf.device(devices[r % len(devices)]):
            return tf.nest.map_structure(lambda t: tf.identity(t[rows]), batch)

    return strategy.experimental_distribute_values_from_function(value_fn)


def _differences(old, new, prefix: str = "") -> list[str]:
    """The dotted keys at which two JSON values differ (e.g. ["config.learning_rate"])."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if old != new else []


# Where a checkpoint keeps the run's settings (the `settings` variable of Trainer.checkpoint).
_SETTINGS_KEY = "settings/.ATTRIBUTES/VARIABLE_VALUE"
_CKPT_INDEX = re.compile(r"^(ckpt-(\d+))\.index$")


def checkpoint_files(directory: str) -> list[str]:
    """The checkpoint prefixes (".../ckpt-N") whose index files are in `directory`, oldest (smallest N) first."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index")):
        match = _CKPT_INDEX.match(os.path.basename(path))
        if match:
            found.append((int(match.group(2)), os.path.join(directory, match.group(1))))
    return [p for _, p in sorted(found)]


def _checkpoint_state(directory: str):
    """tf.train.get_checkpoint_state, None also for an index that is not text (it raises then)."""
    if not os.path.isdir(directory):
        return None
    try:
        return tf.train.get_checkpoint_state(directory)
    except (ValueError, tf.errors.OpError):  # UnicodeDecodeError is a ValueError
        return None


def checkpoint_paths(directory: str) -> list[str]:
    """The checkpoints of `directory`, oldest first: its index's, or its ckpt-* files' when the index is
    missing or unreadable (`repair_index` rebuilds it)."""
    state = _checkpoint_state(directory)
    if state is None:
        return checkpoint_files(directory)
    paths = list(state.all_model_checkpoint_paths)
    if state.model_checkpoint_path and state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
    return paths


def repair_index(directory: str, log: Callable[[str], None] = print) -> None:
    """Rebuilds `directory`'s checkpoint index from its ckpt-* files when it is missing or unreadable.

    Without it `tf.train.CheckpointManager` sees no checkpoint, and the run would start afresh and
    write new checkpoints over the old ones' names. The unreadable index is kept as checkpoint.unreadable.
    """
    index = os.path.join(directory, "checkpoint")
    files = checkpoint_files(directory) if os.path.isdir(directory) else []
    if not files:
        return
    if os.path.exists(index) and _checkpoint_state(directory) is not None:
        return
    if os.path.exists(index):
        os.replace(index, index + ".unreadable")
        what = f"the checkpoint index {index} is unreadable (kept as checkpoint.unreadable)"
    else:
        what = f"the checkpoint index {index} is missing"
    names = [os.path.basename(f) for f in files]
    stamps = [os.path.getmtime(f + ".index") for f in files]
    text = "".join([f'model_checkpoint_path: "{names[-1]}"\n']
                   + [f'all_model_checkpoint_paths: "{n}"\n' for n in names]
                   + [f"all_model_checkpoint_timestamps: {t!r}\n" for t in stamps]
                   + [f"last_preserved_timestamp: {min(stamps) - 1.0!r}\n"])  # CheckpointState's text format
    try:
        config_lib.atomic_write_text(index, text)
    except OSError as e:
        raise StorageError(f"{what}, and a new one could not be written ({short_reason(e)}); free space or fix the "
                           "directory, then re-run") from e
    log(f"{what}; rebuilt it from the {len(files)} checkpoint file(s) found: "
        + ", ".join(os.path.basename(f) for f in files))


@dataclasses.dataclass
class TrainResult:
    """What a run produced: final metrics and timing."""

    metrics: dict
    epochs_run: int
    steps: int
    train_seconds: float
    train_images_per_second: float
    resumed_from: str | None
    probabilities: np.ndarray | None = None
    train_steps_per_second: float = 0.0
    # wall seconds per activity of the epochs (training.progress.RunProgress.seconds)
    activity_seconds: dict = dataclasses.field(default_factory=dict)


def epoch_report(result: dict) -> str:
    """An evaluation in a line: 'ACC 0.5720 NMI 0.5312 ARI 0.4021 | 10 non-empty clusters, size entropy 2.291'."""
    parts = []
    if result.get("acc") is not None:
        parts.append(" ".join(f"{k.upper()} {result[k]:.4f}" for k in ("acc", "nmi", "ari") if k in result))
    if "nonempty_clusters" in result:
        parts.append(f"{result['nonempty_clusters']} non-empty clusters"
                     + (f", size entropy {result['cluster_entropy']:.3f}" if "cluster_entropy" in result else ""))
    return " | ".join(parts) or "evaluated"


class Trainer:
    """Runs a method on a source.

    Args:
      method: a built `Method` (its seed seeds the pipelines' shuffling and
        augmentation; its preprocessor maps raw pixels to model inputs).
      source: the training data (labels are used only for reporting).
      workdir: where checkpoints and TensorBoard events go.
      progress: show a progress bar.
      log: function taking a string, for one-line epoch reports.
      restore_dir: the checkpoint directory to resume from; None: workdir/checkpoints.
        (A multi-worker run's non-chief workers write their own copies but resume
        from the chief's: `training.strategy.worker_workdir`.)
      settings: the run's settings (a JSON-able dict, e.g. method, dataset, config);
        stored in every checkpoint, and a checkpoint stored with other settings is
        refused on resume (naming the keys that differ).
    """

    def __init__(self, method: Method, source: Source, workdir: str, progress: bool = True,
                 log: Callable[[str], None] = print, restore_dir: str | None = None, settings: dict | None = None):
        if method.preprocessor is None:
            raise InputError(f"method {method.name!r} was made without a Preprocessor; pass preprocessor= "
                             "to its constructor")
        if len(source) != int(method.info.num_samples):
            raise InputError(f"the source has {len(source)} samples but {method.name!r} was made for "
                             f"{method.info.num_samples}")
        self.method = method
        self.source = source
        self.preprocessor = method.preprocessor
        self.workdir = workdir
        self.seed = method.seed
        self.progress = progress
        self.log = log
        self.strategy = method.strategy
        cfg = method.config
        # The loop's counters are host-side state, read and written eagerly around every step: plain
        # variables outside the strategy's scope (a mirrored one costs about ten times as much per eager
        # assign or read). They restore from checkpoints either way.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        # Where in epoch `epoch` an interrupted run stopped: stage index (-1: at the epoch's start)
        # and the steps of that stage already trained.
        self.stage_index = tf.Variable(-1, dtype=tf.int64, trainable=False, name="stage_index")
        self.stage_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="stage_step")
        # Training samples the steps have taken so far (a GAN step counts its generator batch); the
        # x axis of learning curves (eval/train_images). Checkpoints from before it resume it at 0.
        self.images_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="images_seen")
        # The run's settings as JSON ("" when not given): what a checkpoint was written with.
        self._settings = json.dumps(settings, sort_keys=True, default=str) if settings is not None else ""
        self.settings = tf.Variable(self._settings, dtype=tf.string, trainable=False, name="settings")
        self._tracked = dict(epoch=self.epoch, step=self.step, stage_index=self.stage_index,
                             stage_step=self.stage_step, images_seen=self.images_seen, **method.checkpoint_objects())
        self.checkpoint = tf.train.Checkpoint(settings=self.settings, **self._tracked)
        directory = os.path.join(workdir, "checkpoints")
        repair_index(directory, log)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=cfg.max_checkpoints)
        self.restore_dir = restore_dir
        try:
            self.writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
        except (tf.errors.OpError, OSError) as e:
            raise StorageError(f"could not create TensorBoard's event file in {os.path.join(workdir, 'tensorboard')}"
                               f" ({short_reason(e)}): free space (or fix the directory) and re-run") from e
        self._predict_fn = tf.function(method.predict, reduce_retracing=True)
        self._probabilities = None  # predict_all()'s, while no step, stage or weight change came after
        self._dist_steps = {}
        self._stop_signal = None  # set by the SIGINT / SIGTERM handler
        self._variables = None  # every variable a checkpoint holds (_snapshot)
        self._snapshot_fn = None
        self.resumed_from = None  # restore()'s checkpoint

    # -- checkpoints ---------------------------------------------------------------
    def restore(self) -> str | None:
        """Restores the latest readable checkpoint; returns its path (None: none to resume).

        An unreadable checkpoint (truncated or corrupt files) is reported and the
        one before it tried; one written with another method/config is refused.
        """
        self._probabilities = None
        directory = self.restore_dir or self.manager.directory
        paths = checkpoint_paths(directory)
        unreadable = []
        for path in reversed(paths):
            try:
                # checkpoints written before the settings were kept restore without them
                keeps_settings = tf.train.load_checkpoint(path).has_tensor(_SETTINGS_KEY)
                checkpoint = self.checkpoint if keeps_settings else tf.train.Checkpoint(**self._tracked)
                checkpoint.restore(path).assert_existing_objects_matched()
            except (AssertionError, ValueError) as e:
                raise InputError(f"the checkpoint {path} does not match this method/config ({e}); "
                                 "use a new --workdir or the settings it was written with") from e
            except (tf.errors.OpError, IndexError, OSError) as e:  # a truncated data file raises IndexError
                unreadable.append(path)
                self.log(f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                         "trying the one before it")
                continue
            self._check_settings(path)
            self.resumed_from = path
            return path
        if unreadable:
            raise InputError(f"no readable checkpoint in {directory}: {', '.join(unreadable)} could not be "
                             "read; move them away to start afresh")
        return None

    def _check_settings(self, path: str) -> None:
        """InputError when the checkpoint just restored was written with other settings than this run's."""
        saved = self.settings.numpy().decode()
        self.settings.assign(self._settings)
        if not saved or not self._settings or saved == self._settings:
            return  # a checkpoint from before settings were kept, or a run that gave none
        differ = _differences(json.loads(saved), json.loads(self._settings))
        raise InputError(f"the checkpoint {path} was written with other settings ({', '.join(differ)} differ); "
                         "use a new --workdir, or the same settings to resume it")

    def save(self) -> str:
        """Writes a checkpoint (atomically: files first, then the index). Raises StorageError on failure."""
        try:
            return self.manager.save(checkpoint_number=int(self.step.numpy()))
        except (OSError, tf.errors.OpError) as e:
            raise StorageError(
                f"could not write a checkpoint in {self.manager.directory} ({short_reason(e)}); "
                f"the previous one ({self.manager.latest_checkpoint or 'none'}) is intact: free space (or fix "
                "the directory) and re-run the same command to resume from it") from e

    @contextlib.contextmanager
    def _stop_signals(self):
        """SIGINT / SIGTERM ask training to stop at the next step boundary (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {}

        def handler(signum, frame):
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
            self._stop_signal = signum
            self.log(f"\n{signal.Signals(signum).name}: stopping at the next step boundary to save a checkpoint"
                     + (" (Ctrl-C again to stop without saving)" if signum == signal.SIGINT else ""))

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _interrupt(self, epoch: int, stage_index: int, stage_step: int, stage=None, snapshot=None):
        """Saves the position reached (with `snapshot`: the state at the start of `stage`) and raises
        TrainingInterrupted."""
        if snapshot is not None:
            self._restore_snapshot(snapshot)
            stage_step = 0
        self.stage_index.assign(stage_index)
        self.stage_step.assign(stage_step)
        path = self.save()
        signum, self._stop_signal = self._stop_signal, None
        where = (f"; the re-run repeats {stage.name!r} from its start (step {int(self.step.numpy())}): its targets "
                 "come from the weights at that start" if snapshot is not None else f" at step {int(self.step.numpy())}")
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(signum).name} in epoch {epoch + 1}{where}; saved {path}: re-run the same "
            "command to continue from there", signum)

    def _checkpoint_variables(self) -> list:
        """Every variable the checkpoint holds (models, optimizers, state, the loop's counters)."""
        if self._variables is None:
            objects = tf.train.TrackableView(self.checkpoint).descendants()
            self._variables = [o for o in objects if isinstance(o, (tf.Variable, keras.Variable))]
        return self._variables

    def _snapshot(self) -> list:
        """Every checkpointed variable's value, as tensors (the state `_restore_snapshot` puts back).

        One traced call reads them all (GATCluster's cpu preset: 2 ms for 138 variables, against 21 ms
        read one by one). A tensor read from a resource variable keeps its value when the variable is
        later updated in place (TensorFlow copies the buffer on write while a reader holds it).
        """
        if self._snapshot_fn is None:
            variables = self._checkpoint_variables()
            self._snapshot_fn = tf.function(lambda: [tf.identity(v) for v in variables])
        return self._snapshot_fn()

    def _restore_snapshot(self, values: list) -> None:
        for variable, value in zip(self._checkpoint_variables(), values):
            variable.assign(value)
        self._probabilities = None

    # -- inference -------------------------------------------------------------------
    def predict_all(self, fn: Callable | None = None, subset: np.ndarray | None = None,
                    batch_size: int | None = None) -> np.ndarray:
        """Probabilities [N, K] for the whole source, in order, in inference mode.

        Args:
          fn: a tf.function of preprocessed images [B, ...] whose outputs are
            returned instead (concatenated over eval batches, in source order;
            a dict of outputs gives a dict of arrays).
          subset: indices of the samples to use instead of all (in this order).
          batch_size: images per inference batch (default: config.eval_batch_size).

        The plain call's probabilities (read-only) are kept until the next
        training step, stage or call with a function of its own (which comes
        before an eager change of weights: BatchNorm calibration, k-means
        centres), so an end-of-epoch pass and the evaluation after it are one.
        """
        plain = fn is None and subset is None and batch_size is None
        if plain and self._probabilities is not None:
            return self._probabilities
        self._probabilities = None
        fn = fn or self._predict_fn
        source = self.source
        if subset is not None:
            subset = np.asarray(subset)
            source = dataclasses.replace(source, x=source.x[subset], y=source.y[subset])
        images = pipeline.eval_images(source, self.preprocessor, batch_size or self.method.config.eval_batch_size)
        outs = [fn(x) for x in images]
        if isinstance(outs[0], dict):  # a function of several outputs: each concatenated
            return {k: np.concatenate([o[k].numpy() for o in outs]) for k in outs[0]}
        out = np.concatenate([o.numpy() for o in outs])
        if plain:
            out.setflags(write=False)
            self._probabilities = out
        return out

    def evaluate(self, write: bool = True) -> tuple[dict, np.ndarray]:
        """Metrics of the current model on the whole source, and probabilities [N, K]."""
        probs = self.predict_all()
        clusters = probs.argmax(1)
        confidence = probs.max(1)
        labels = self.source.y if self.source.has_labels else None
        images = self.source.x if self.source.info.modality == "image" else None
        result = metrics.cluster_size_stats(clusters, self.method.num_clusters)
        result["mean_confidence"] = float(confidence.mean())
        if labels is not None:
            result.update(metrics.evaluate(labels, clusters))
        extra_metrics, extra_logs = self.method.evaluation_extras(probs, labels, images, self.predict_all)
        result.update(extra_metrics)
        if write:
            step = int(self.step.numpy())
            summaries.write_scalars(self.writer, {f"eval/{k}": v for k, v in result.items()}
                                    | {"eval/train_images": int(self.images_seen.numpy())}, step)
            if images is not None:
                gallery = summaries.cluster_gallery(images, clusters, confidence, self.method.num_clusters,
                                                    self.method.config.gallery_per_cluster)
                summaries.write_gallery(self.writer, "eval/cluster_gallery", gallery, step)
                summaries.write_logs(self.writer, {f"eval/{k}": v for k, v in extra_logs.items()}, step)
        return result, probs

    # -- training ----------------------------------------------------------------------
    def _distributed_step(self, replica_step: Callable, block: bool = False):
        """The traced global step of a stage's replica step (one tf.function per step function).

        Called with a global batch it returns the step's outputs, each summed over
        the replicas. With `block`, it takes a block of n global batches (each
        tensor [n, B, ...], split over the replicas on axis 1), runs the n steps
        in a loop inside the function and returns each output stacked, [n].
        """
        key = (replica_step, block)
        if key not in self._dist_steps:
            strategy = self.strategy

            def one(batch):
                per_replica = strategy.run(replica_step, args=(batch,))
                return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

            def pick(local_block, i):
                return replica_step(tf.nest.map_structure(lambda t: t[i], local_block))

            def at(blocks, i):
                per_replica = strategy.run(pick, args=(blocks, i))
                return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

            def steps(blocks):
                local = strategy.experimental_local_results(blocks)[0]
                n = tf.shape(tf.nest.flatten(local)[0])[0]
                first = at(blocks, 0)  # peeled: it fixes the outputs' keys and dtypes for the loop
                arrays = {k: tf.TensorArray(v.dtype, size=n).write(0, v) for k, v in first.items()}
                for i in tf.range(1, n):
                    out = at(blocks, i)
                    arrays = {k: arrays[k].write(i, out[k]) for k in arrays}
                return {k: a.stack() for k, a in arrays.items()}

            # blocks: a shorter last block of a stage is a second shape; reduce_retracing keeps it to one more trace
            self._dist_steps[key] = tf.function(steps, reduce_retracing=True) if block else tf.function(one)
        return self._dist_steps[key]

    def _train_step(self, step_fn, batch, epoch: int) -> dict:
        """One call of a traced step (one global step, or a block of them): run, count, stop on a
        non-finite loss, log scalars. Returns the outputs of its last step."""
        self._probabilities = None
        stacked = {k: np.atleast_1d(v.numpy()) for k, v in step_fn(batch).items()}
        n = len(stacked["loss"])
        first = int(self.step.numpy()) + 1
        self.step.assign_add(n)
        for j in range(n):
            out = {k: float(v[j]) for k, v in stacked.items()}
            step = first + j
            if not math.isfinite(out["loss"]):
                raise NonFiniteLossError(
                    f"loss became {out['loss']} at epoch {epoch} step {step}; stopped without saving. "
                    f"The last good checkpoint is {self.manager.latest_checkpoint or 'none (no epoch finished)'}"
                    "; lower the learning rate or check the inputs, then re-run to resume from it.")
            if step % self.method.config.log_every == 0:
                summaries.write_scalars(self.writer, {f"train/{k}": v for k, v in out.items()}, step)
        return out

    def run(self, restore: bool = True) -> TrainResult:
        """Trains the epochs left and evaluates; `restore` False: `restore()` was called already."""
        resumed = self.restore() if restore else self.resumed_from
        if resumed:
            self.log(f"resumed from {resumed} (epoch {int(self.epoch.numpy())}, step {int(self.step.numpy())})")
        if not self.method.trainable:
            return self._run_fit(resumed)
        # NumPy's BLAS on one thread while training: the stages' host work (targets, similarities) is small,
        # and OpenBLAS's threads spin after each call, taking the cores from the next steps (RESULTS.md).
        with self._stop_signals(), threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            return self._run_epochs(resumed)

    def _run_epochs(self, resumed) -> TrainResult:
        progress = RunProgress(self.method.num_epochs(), int(self.epoch.numpy()), enabled=self.progress)
        try:
            result = self._epochs(resumed, progress, functools.partial(progress.message, log=self.log))
        finally:
            progress.close()
        result.activity_seconds = dict(progress.seconds)
        return result

    def _epochs(self, resumed, progress: RunProgress, say: Callable[[str], None]) -> TrainResult:
        """The epochs left, shown on `progress`; `say` prints a line above it."""
        cfg = self.method.config
        with pipeline.StageBatches(self.source, self.preprocessor, cfg.augment, self.seed,
                                   per_call=int(cfg.steps_per_call)) as feed:
            return self._epochs_from(feed, resumed, progress, say)

    def _epochs_from(self, feed: pipeline.StageBatches, resumed, progress: RunProgress,
                     say: Callable[[str], None]) -> TrainResult:
        """`_epochs`, the stages' batches read from `feed`."""
        cfg = self.method.config
        num_epochs = self.method.num_epochs()
        start = int(self.epoch.numpy())
        # an interrupted epoch continues at (stage, step); -1: it starts afresh
        resume_stage, resume_step = int(self.stage_index.numpy()), int(self.stage_step.numpy())
        train_seconds, images, steps_run = 0.0, 0, 0
        result, probs = {}, None
        for epoch in range(start, num_epochs):
            if self.method.finished():
                say(f"{self.method.name} met its stopping rule; nothing left to train")
                break
            plan = self.method.epoch_plan(epoch, self.predict_all)
            progress.begin_epoch(epoch, plan.steps)
            elapsed, done, epoch_images, epoch_steps = 0.0, 0, 0, 0
            per_call = int(cfg.steps_per_call)
            feed.epoch(epoch, plan.stages)
            for index, stage in enumerate(plan.stages):
                skip = 0
                if epoch == start and resume_stage >= 0:
                    if index < resume_stage:  # trained before the interruption
                        done += stage.steps
                        continue
                    if index == resume_stage:
                        skip = min(resume_step, stage.steps)
                self._probabilities = None
                # a stage whose begin computes from the weights restarts from its start when interrupted
                snapshot = self._snapshot() if stage.begin is not None and stage.steps and not skip else None
                if stage.begin is not None:
                    progress.phase(f"{stage.name} (prepare)" if stage.steps else stage.name)
                    summaries.write_logs(self.writer, stage.begin(), int(self.step.numpy()))
                if not stage.steps:
                    continue
                step_fn = self._distributed_step(stage.step, block=per_call > 1)
                t0 = time.perf_counter()
                batches = feed.batches(index, skip)
                done += skip
                in_stage = skip
                progress.phase(stage.name, steps=True)
                for batch in batches:
                    n = int(tf.nest.flatten(batch)[0].shape[0]) if per_call > 1 else 1
                    out = self._train_step(step_fn, distribute_batch(self.strategy, batch, axis=int(per_call > 1)),
                                           epoch)
                    done += n
                    in_stage += n
                    epoch_images += n * stage.batch_size
                    self.images_seen.assign_add(n * stage.batch_size)
                    epoch_steps += n
                    progress.step(done, out.get("loss"),
                                  (in_stage - skip) * stage.batch_size / max(time.perf_counter() - t0, 1e-9))
                    if self._stop_signal is not None:
                        self._interrupt(epoch, index, in_stage, stage, snapshot)
                elapsed += time.perf_counter() - t0
            train_seconds += elapsed
            images += epoch_images
            steps_run += epoch_steps
            self.epoch.assign(epoch + 1)
            self.stage_index.assign(-1)
            self.stage_step.assign(0)
            epoch_logs = {"train/images_per_second": epoch_images / max(elapsed, 1e-9),
                          "train/steps_per_second": epoch_steps / max(elapsed, 1e-9)}
            summaries.write_logs(self.writer, epoch_logs, int(self.step.numpy()))
            last = epoch + 1 == num_epochs or self.method.finished()
            if last or (epoch + 1) % cfg.checkpoint_every == 0 or self._stop_signal is not None:
                progress.phase("checkpoint")
                self.save()
            if self._stop_signal is not None:  # came during the epoch's eager work: its end is saved
                signum, self._stop_signal = self._stop_signal, None
                raise TrainingInterrupted(
                    f"stopped by {signal.Signals(signum).name} after epoch {epoch + 1}; saved "
                    f"{self.manager.latest_checkpoint}: re-run the same command to continue", signum)
            if last or (plan.evaluate and self.method.evaluates_after(epoch)):
                progress.phase("evaluate")
                result, probs = self.evaluate()
                say(f"epoch {epoch + 1}/{num_epochs}: {epoch_report(result)}")
            progress.end_epoch(epoch)
            if self.method.finished():
                say(f"{self.method.name} met its stopping rule after epoch {epoch + 1}")
                break
        if probs is None:  # nothing left to train (resumed a finished run)
            result, probs = self.evaluate(write=False)
        return TrainResult(metrics=result, epochs_run=int(self.epoch.numpy()) - start, steps=int(self.step.numpy()),
                           train_seconds=train_seconds, train_images_per_second=images / max(train_seconds, 1e-9),
                           resumed_from=resumed, probabilities=probs,
                           train_steps_per_second=steps_run / max(train_seconds, 1e-9))

    def _run_fit(self, resumed) -> TrainResult:
        t0 = time.perf_counter()
        if not resumed:
            x = np.concatenate([b["image"].numpy() for b in pipeline.eval_dataset(
                self.source, self.preprocessor, self.method.config.eval_batch_size)])
            logs = self.method.fit(x)
            self.epoch.assign(1)
            summaries.write_scalars(self.writer, logs, 0)
            self.save()
        seconds = time.perf_counter() - t0
        result, probs = self.evaluate()
        return TrainResult(metrics=result, epochs_run=0 if resumed else 1, steps=0, train_seconds=seconds,
                           train_images_per_second=len(self.source) / max(seconds, 1e-9), resumed_from=resumed,
                           probabilities=probs)
