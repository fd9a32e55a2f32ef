"""The method interface: a single-replica view of one clustering method.

A method is built from its frozen config, the data's info, K, the strategy,
the input shape, the run's seed and its Preprocessor, and exposes
  build()                  create models, optimizers and state inside `strategy.scope()`
  checkpoint_objects()     what a checkpoint must hold to resume exactly
  num_epochs(), finished() how long it trains, and its own stopping rule
  epoch_plan(epoch, ..)    the stages of an epoch (tfcluster.plan): eager begins
                           (targets, k-means, calibration, schedules) and steps
  predict(x)               probabilities [B, K] for preprocessed inputs (inference mode)
  serving_outputs(x)       named outputs for the SavedModel (at least probabilities)
  serving_signatures()     extra SavedModel signatures (e.g. a GAN's `generate`)
  evaluation_extras(..)    method-specific metrics and TensorBoard images at evaluation
Methods without a step loop (k-means) set `trainable = False` and implement `fit(x)`.

A stage's step returns a dict of scalars whose SUM over replicas is the value
for the global batch (losses are divided by the global batch or global pair
count), so the loop reduces every entry with SUM.
"""

from __future__ import annotations

import abc
from typing import Callable

import numpy as np
import tensorflow as tf

from tfcluster.configs.base import BaseConfig  # noqa: F401  (every method config's base)
from tfcluster.data.sources import DatasetInfo
from tfcluster.errors import InputError
from tfcluster.plan import EpochPlan


class Method(abc.ABC):
    """Base class; subclasses set `name`, `config_class` and `presets`.

    Args:
      config: the method's frozen config (validated here).
      info: the training data's DatasetInfo.
      num_clusters: K.
      strategy: the tf.distribute strategy models are built under.
      input_shape: the preprocessed inputs' shape [H, W, C] or [D].
      seed: the run's seed (eager stages such as k-means, stateless step seeds).
      preprocessor: the run's Preprocessor (raw pixels -> model inputs), which
        the Trainer's pipelines apply and methods that generate images use.
      precision: "float32" or "bfloat16" (tfcluster.precision): the Keras dtype
        policy the networks are built under (`build_in_precision`).
    """

    name: str = ""
    config_class: type = BaseConfig
    # preset name -> fn(DatasetInfo) -> config; every method has "paper" and "cpu".
    presets: dict[str, Callable[[DatasetInfo], BaseConfig]] = {}
    # False for methods fitted in one eager stage (k-means), without a step loop.
    trainable: bool = True
    # Whether --precision=auto may choose bfloat16 (False until measured no worse than float32).
    auto_bfloat16: bool = False

    def __init__(self, config, info: DatasetInfo, num_clusters: int, strategy: tf.distribute.Strategy,
                 input_shape: tuple, *, seed: int = 0, preprocessor=None, precision: str = "float32"):
        if num_clusters < 2:
            raise InputError(f"num_clusters must be at least 2, got {num_clusters}")
        if not isinstance(config, self.config_class):
            raise InputError(f"{self.name} needs a {self.config_class.__name__}, got {type(config).__name__}")
        config.validate()
        self.config = config
        self.info = info
        self.num_clusters = int(num_clusters)
        self.strategy = strategy
        self.input_shape = tuple(input_shape)
        self.seed = int(seed)
        self.preprocessor = preprocessor
        if precision not in ("float32", "bfloat16"):
            raise InputError(f"a method's precision is float32 or bfloat16, got {precision!r}")
        self.precision = precision
        self.check_input_shape(self.input_shape)

    def check_input_shape(self, input_shape: tuple) -> None:
        """Raises InputError when the method's networks cannot take inputs of this shape."""

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

    def build_in_precision(self) -> None:
        """`build()` under the Keras dtype policy of the method's precision."""
        from tfcluster import precision

        with precision.policy(self.precision):
            self.build()

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
                           self.input_shape, seed=self.seed, preprocessor=self.preprocessor,
                           precision=self.precision)
        clone.build_in_precision()
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

    def finished(self) -> bool:
        """True once the method's own stopping rule has fired (checkpointed state)."""
        return False

    def evaluates_after(self, epoch: int) -> bool:
        """Whether the trainer evaluates after `epoch` (0-based): every `eval_every`-th epoch and the last.

        End-of-epoch stages that only prepare inference (BatchNorm recalibration for the
        evaluation and the export) run in these epochs alone. A plan with evaluate=False is
        not evaluated all the same, unless it is the last.
        """
        return epoch + 1 >= self.num_epochs() or (epoch + 1) % int(self.config.eval_every) == 0

    def epoch_plan(self, epoch: int, predict_all: Callable[..., np.ndarray]) -> EpochPlan:
        """The stages of `epoch` (tfcluster.plan), for trainable methods.

        `predict_all()` returns probabilities [N, K] in inference mode;
        `predict_all(fn)` maps a tf.function over the source's preprocessed
        images [B, ...] in order and concatenates its outputs
        (`predict_all(fn, subset=indices, batch_size=m)`: those samples only, in
        batches of m). Stages' `begin` functions call it when they run.
        """
        raise TypeError(f"method {self.name!r} has no epoch plan; it is fitted with fit()")

    def fit(self, x: np.ndarray) -> dict:
        """Fits a non-trainable method on preprocessed inputs [N, ...]. Returns logs."""
        raise TypeError(f"method {self.name!r} is trained step by step, not with fit()")

    def evaluation_extras(self, probabilities: np.ndarray, labels: np.ndarray | None, images: np.ndarray | None,
                          predict_all: Callable[..., np.ndarray]) -> tuple[dict, dict]:
        """Method-specific results at evaluation: (metrics, TensorBoard logs).

        Args: the probabilities [N, K] just predicted, labels [N] or None (for
        reporting only: never for training or model selection), raw images
        [N, H, W, C] (None for vectors), `predict_all` (see `epoch_plan`).
        Returns: scalars for the metrics (metrics.json) and logs for
        TensorBoard: numbers, 1-D arrays, [N, H, W, C] images, or galleries
        (lists of image rows, rendered by training.summaries.gallery).
        """
        return {}, {}

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

    def keep_targets(self, attr: str, values: np.ndarray) -> tf.Variable:
        """Puts eager-computed targets [N, ...] where graph steps read them: the
        non-trainable variable `self.<attr>`, made in strategy scope on first use
        and assigned (same shape) afterwards."""
        variable = getattr(self, attr, None)
        if variable is None:
            with self.strategy.scope():
                variable = tf.Variable(values, trainable=False, name=attr)
            setattr(self, attr, variable)
        else:
            variable.assign(values)
        return variable
