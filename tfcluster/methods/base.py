"""The method interface: a single-replica view of one clustering method.

A method owns its Keras models, optimizers and state variables, and exposes
  build()                 create them inside `strategy.scope()`
  checkpoint_objects()    what a checkpoint must hold to resume exactly
  begin_epoch(epoch, ..)  eager work between graph steps (targets, k-means, schedules)
  rounds(), begin_round   optional: epochs made of large-batch rounds (GATCluster)
  train_step(batch)       one replica's step, run by `strategy.run` in a tf.function
  predict(x)              probabilities [B, K] for preprocessed inputs (inference mode)
  serving_outputs(x)      named outputs for the SavedModel (at least probabilities)
  serving_signatures()    optional extra SavedModel signatures (e.g. a GAN's `generate`)
  train_batch_size(), held_out(), passes_per_epoch(), steps_in_epoch()  optional:
                          samples per step, samples kept out of training, data passes
                          per loop epoch, a shorter last epoch (a GAN's N iterations)

`train_step` returns a dict of scalars whose SUM over replicas is the value
for the global batch (losses are divided by the global batch or global pair
count), so the loop reduces every entry with SUM.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from tfcluster.data.augment import AugmentConfig
from tfcluster.data.sources import DatasetInfo
from tfcluster.errors import InputError


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    """Epochs made of rounds over large batches (GATCluster's Algorithm 1).

    Each epoch is split into floor(N / size) disjoint large batches; for each,
    the loop calls `begin_round` (eager step 1: targets, which the method
    predicts in sub-batches of its choosing), then runs `repeats` passes of
    mini-batches of `config.batch_size` over the round's transformed images
    (step 2), whose "index" is the position in the round.
    """

    size: int
    repeats: int = 1


@dataclasses.dataclass
class BaseConfig:
    """Fields every method's config has.

    Attributes:
      epochs: passes over the data (0: the method decides, e.g. DAC's schedule).
      batch_size: global batch size (split across replicas).
      augment: the random transforms of the training views.
      eval_every: evaluate/summarise every this many epochs (and at the end).
      checkpoint_every: save a checkpoint every this many epochs (and at the end).
      max_checkpoints: how many checkpoints to keep.
      log_every: write step scalars to TensorBoard every this many steps.
      gallery_per_cluster: images per cluster in the TensorBoard gallery.
      eval_batch_size: batch size of inference passes.
    """

    epochs: int = 10
    batch_size: int = 32
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    eval_every: int = 1
    checkpoint_every: int = 1
    max_checkpoints: int = 3
    log_every: int = 20
    gallery_per_cluster: int = 8
    eval_batch_size: int = 500


class Method(abc.ABC):
    """Base class; subclasses set `name`, `config_class` and `presets`."""

    name: str = ""
    config_class: type = BaseConfig
    # preset name -> fn(DatasetInfo) -> config; every method has "paper" and "cpu".
    presets: dict[str, Callable[[DatasetInfo], BaseConfig]] = {}
    # Number of augmented views per training element the method needs.
    num_views: int = 0
    # False for methods fitted in one eager stage (k-means), without a step loop.
    trainable: bool = True

    def __init__(self, config, info: DatasetInfo, num_clusters: int, strategy: tf.distribute.Strategy,
                 input_shape: tuple):
        if num_clusters < 2:
            raise InputError(f"num_clusters must be at least 2, got {num_clusters}")
        self.config = config
        self.info = info
        self.num_clusters = int(num_clusters)
        self.strategy = strategy
        self.input_shape = tuple(input_shape)
        self.check_input_shape(self.input_shape)

    @classmethod
    def preset(cls, name: str, info: DatasetInfo):
        if name not in cls.presets:
            raise InputError(f"unknown preset {name!r} for method {cls.name!r}; presets: "
                             + ", ".join(sorted(cls.presets)))
        return cls.presets[name](info)

    def check_input_shape(self, input_shape: tuple) -> None:
        """Raises InputError when the method's networks cannot take this input."""

    def require_image_variant(self, input_shape: tuple, variant_for: Callable[[tuple], str]) -> str:
        """The network variant for images [H, W, C], or InputError (wrong rank, no variant for the size)."""
        if len(input_shape) != 3:
            raise InputError(f"{self.name.upper()} needs images [H, W, C]; got inputs of shape {input_shape}")
        try:
            return variant_for(input_shape)
        except ValueError as e:
            raise InputError(str(e)) from None

    # -- lifecycle -------------------------------------------------------------
    @abc.abstractmethod
    def build(self) -> None:
        """Creates models, optimizers (with their variables) and state in strategy scope."""

    @abc.abstractmethod
    def checkpoint_objects(self) -> dict:
        """Trackables to checkpoint: models, optimizers, state variables."""

    def export_objects(self) -> dict:
        """Trackables inference needs (default: the checkpoint's, without optimizers)."""
        import keras

        return {k: v for k, v in self.checkpoint_objects().items()
                if not isinstance(v, keras.optimizers.Optimizer)}

    def clone_for_export(self) -> "Method":
        """A copy built outside any distribution strategy, holding the same weights.

        The export then holds plain variables on one device rather than the
        replicated variables of the training strategy.
        """
        clone = type(self)(self.config, self.info, self.num_clusters, tf.distribute.get_strategy(),
                           self.input_shape)
        clone.seed, clone.preprocessor = self.seed, self.preprocessor
        clone.build()
        theirs, ours = clone.export_objects(), self.export_objects()
        for key, obj in ours.items():
            src = [obj] if isinstance(obj, tf.Variable) else list(obj.weights)
            dst = [theirs[key]] if isinstance(theirs[key], tf.Variable) else list(theirs[key].weights)
            if len(src) != len(dst):
                raise RuntimeError(f"export clone of {key!r} has {len(dst)} variables, expected {len(src)}")
            for a, b in zip(dst, src):
                a.assign(b.value if hasattr(b, "value") and not callable(b.value) else b)
        return clone

    def num_epochs(self) -> int:
        return int(self.config.epochs)

    # The loop traces one step function per phase; methods with stages switch it.
    phase: str = "train"
    # Seed of the run (set by `tfcluster.run.build`), for eager stages such as k-means.
    seed: int = 0
    # The run's Preprocessor (set by `tfcluster.run.build` before `build()`), for
    # methods that must map their own outputs into model space (a generator).
    preprocessor = None

    def train_batch_size(self) -> int:
        """Samples of the global batch each training step takes (default: config.batch_size)."""
        return int(self.config.batch_size)

    def held_out(self) -> np.ndarray:
        """Indices of source samples the training pipeline leaves out (default: none)."""
        return np.zeros([0], np.int64)

    def passes_per_epoch(self) -> int:
        """Shuffled passes over the training data in one epoch of the loop (default 1)."""
        return 1

    def steps_in_epoch(self, epoch: int, steps: int) -> int:
        """Training steps of `epoch`, given the `steps` its data holds (default: all of them)."""
        return steps

    def finished(self) -> bool:
        """True once the method's own stopping rule has fired (checkpointed state)."""
        return False

    def wants_eval(self, epoch: int) -> bool:
        """Whether cluster metrics mean anything after this epoch (the last is always evaluated)."""
        return True

    def label_report(self, probabilities: np.ndarray, labels: np.ndarray) -> dict:
        """Method-specific diagnostics against ground truth, for reporting only.

        Called at evaluation when the source has labels, with the
        probabilities [N, K] just predicted; returns scalars (never used for
        training or model selection).
        """
        return {}

    def eval_logs(self, probabilities: np.ndarray, labels: np.ndarray | None, images: np.ndarray,
                  predict_all: Callable[..., np.ndarray]) -> dict:
        """Extra TensorBoard logs at evaluation (images, histograms), for image sources.

        Args: the probabilities [N, K] just predicted, labels [N] or None (for
        colouring plots only), raw images [N, H, W, C], `predict_all`.
        """
        return {}

    def end_epoch(self, epoch: int, predict_all: Callable[..., np.ndarray]) -> dict:
        """Eager stage after an epoch's steps, before its checkpoint. Returns logs."""
        return {}

    def begin_epoch(self, epoch: int, predict_all: Callable[..., np.ndarray]) -> dict:
        """Eager stage before an epoch.

        `predict_all()` returns probabilities [N, K] in inference mode;
        `predict_all(fn)` maps a tf.function over the source's preprocessed
        images [B, ...] in order and concatenates its outputs
        (`predict_all(fn, subset=indices)`: those samples only). Returns logs:
        numbers (scalars), 1-D arrays (histograms), [N, H, W, C] arrays (images).
        """
        return {}

    def rounds(self) -> RoundPlan | None:
        """The round plan, or None for plain epochs over shuffled mini-batches."""
        return None

    def begin_round(self, epoch: int, round_index: int, indices: np.ndarray,
                    predict_all: Callable[..., np.ndarray]) -> dict:
        """Eager step 1 of a round over the source samples `indices` [M]. Returns logs.

        `predict_all(fn, subset=indices, batch_size=m1)` maps a tf.function over
        those samples' clean preprocessed images in sub-batches of m1.
        """
        return {}

    def train_step(self, batch: dict) -> dict:
        """One replica's training step (trainable methods override this)."""
        raise TypeError(f"method {self.name!r} has no training step; it is fitted with fit()")

    def fit(self, x: np.ndarray) -> dict:
        """Fits a non-trainable method on preprocessed inputs [N, ...]."""
        raise TypeError(f"method {self.name!r} is trained step by step, not with fit()")

    # -- inference ---------------------------------------------------------------
    @abc.abstractmethod
    def predict(self, x) -> tf.Tensor:
        """Probabilities [B, K] for preprocessed inputs [B, ...], in inference mode."""

    def serving_outputs(self, x) -> dict:
        return {"probabilities": self.predict(x)}

    def serving_signatures(self) -> dict:
        """Extra SavedModel signatures: name -> tf.function with an input_signature."""
        return {}

    # -- helpers for subclasses --------------------------------------------------
    @staticmethod
    def replica_info():
        """(replica context, replica id, number of replicas) inside `strategy.run`."""
        ctx = tf.distribute.get_replica_context()
        return ctx, ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync

    @staticmethod
    def apply_gradients(optimizer, tape, loss, variables):
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
