"""Targets from the clean training images, per epoch or per chunk (DAC and DCCM `cpu` presets).

Targets predicted in inference mode need BatchNorm statistics of the clean
images: at initialisation the moving averages (mean 0, variance 1) map every
image to nearly the same output, and later they hold augmented views'
statistics. `CleanTargets` recalibrates BatchNorm (nets.batchnorm) on a fixed
random subset, or on the chunk whose targets it predicts, and reuses the
predictions made at the end of an epoch as the next epoch's targets, since the
model does not change in between. `chunk_stages` lays out an epoch of chunks:
each chunk's targets from its own clean images, then passes of augmented
mini-batches over it (as the official DAC and DCCM codes train).
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfcluster.data import pipeline
from tfcluster.plan import Stage
from tfcluster.nets.batchnorm import BatchNormCalibrator


def fixed_subset(total: int, k: int, seed: int = 12345) -> np.ndarray | None:
    """k sorted indices drawn once from range(total) (None: all of them).

    Random, not the first k: sources may be sorted by class.
    """
    if total <= 0 or k <= 0 or k >= total:
        return None
    return np.sort(np.random.RandomState(seed).permutation(total)[:k])


class CleanTargets:
    """BatchNorm recalibration and prediction reuse for per-epoch targets.

    Args:
      model: the functional Keras model whose BatchNorm layers are recalibrated.
      num_samples: training set size.
      calibration_samples: images used for the statistics (0 or >= N: all).
      mode: the calibration (nets.batchnorm): "one_pass" (one training-mode pass
        in inference-sized sub-batches) or "layerwise" (exact, about one pass per
        two BatchNorm layers).
      output: picks the chunk targets' tensor from the model's outputs (default:
        the output itself).
    `predict_all` arguments are `Trainer.predict_all`.
    """

    def __init__(self, model: keras.Model, num_samples: int, calibration_samples: int, mode: str = "one_pass",
                 output: Callable = lambda out: out):
        self._calibrator = BatchNormCalibrator(model, mode)
        self._model = model
        self._output = output
        self._predict_output = None
        self._subset = fixed_subset(int(num_samples), int(calibration_samples))
        self._num_samples = int(num_samples)
        self._chunk_rows = None  # chunk_targets' [N, K]
        self._kept = None
        self.calibrated = False

    def calibrate(self, predict_all: Callable, subset: np.ndarray | None = None) -> None:
        """Sets BatchNorm statistics to the clean images' (of `subset`, default the fixed subset)."""
        self._calibrator(lambda fn: predict_all(fn, subset=self._subset if subset is None else subset))
        self.calibrated = True

    def chunk(self, predict_all: Callable, indices: np.ndarray) -> np.ndarray:
        """The model's `output` [M, ...] on the chunk `indices` [M] in inference mode, with BatchNorm
        calibrated on the chunk itself.

        In "one_pass" mode both come from one training-mode pass over the chunk as a
        single batch (nets.batchnorm: exact); "layerwise" calibrates, then predicts.
        """
        if self._calibrator.mode == "one_pass":
            return self._calibrator.calibrate_and_predict(
                lambda fn: predict_all(fn, subset=indices, batch_size=len(indices)), self._output)
        self.calibrate(predict_all, subset=indices)
        if self._predict_output is None:
            self._predict_output = tf.function(lambda x: tf.cast(self._output(self._model(x, training=False)),
                                                                 tf.float32), reduce_retracing=True)
        return predict_all(self._predict_output, subset=indices)

    def chunk_targets(self, predict_all: Callable, indices: np.ndarray,
                      transform: Callable[[np.ndarray], np.ndarray] = lambda v: v) -> tuple[np.ndarray, np.ndarray]:
        """`transform` of the chunk's outputs (`chunk`), written into its rows of the targets of all samples.

        Returns (the chunk's targets [M, K], all targets [N, K]); rows of chunks whose
        turn has not come this run are zeros (no step reads them: a chunk stage's
        batches hold its own samples only).
        """
        values = transform(self.chunk(predict_all, indices))
        if self._chunk_rows is None:
            self._chunk_rows = np.zeros((self._num_samples,) + values.shape[1:], np.float32)
        self._chunk_rows[indices] = values
        return values, self._chunk_rows

    def keep(self, predictions: np.ndarray) -> None:
        """Keeps end-of-epoch predictions [N, K] as the next epoch's targets."""
        self._kept = predictions

    def next(self, predict_all: Callable) -> np.ndarray:
        """Predictions [N, K] for this epoch's targets.

        The kept ones if any, else fresh ones, after calibrating once in this
        process (a fresh start, or a resume from a checkpoint).
        """
        if self._kept is not None:
            probs, self._kept = self._kept, None
            return probs
        if not self.calibrated:
            self.calibrate(predict_all)
        return predict_all()


def chunk_stages(step: Callable, num_samples: int, chunk_size: int, repeats: int, batch_size: int,
                 num_views: int, seed: int, epoch: int, begin_chunk: Callable[[int, np.ndarray], dict]) -> list:
    """One epoch of chunked targets: a Stage per chunk of `chunk_size` samples.

    Chunks are data.pipeline.chunk_order's (disjoint, a pure function of (seed,
    epoch); the N mod M samples left over change from epoch to epoch). Each
    stage's `begin` is `begin_chunk(c, indices)` (the chunk's targets); then
    floor(repeats * M / batch_size) steps over the chunk, `repeats` shuffled
    passes with new augmentations each pass ("shuffle" order: "index" is the
    position in the source, where the targets are stored).
    """
    chunk_size = min(int(chunk_size), int(num_samples))
    stages = []
    for c, indices in enumerate(pipeline.chunk_order(int(num_samples), chunk_size, seed, epoch)):
        stages.append(Stage(step=step, steps=int(repeats) * len(indices) // int(batch_size),
                            batch_size=int(batch_size), indices=indices, repeats=int(repeats), num_views=num_views,
                            order="shuffle", chunk=c, name=f"chunk {c + 1}",
                            begin=lambda c=c, indices=indices: begin_chunk(c, indices)))
    return stages
