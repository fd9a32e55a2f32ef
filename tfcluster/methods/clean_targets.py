"""Per-epoch targets from the clean training images (DAC and DCCM `cpu` presets).

Targets predicted once per epoch in inference mode need BatchNorm statistics
of the clean images: at initialisation the moving averages (mean 0, variance
1) map every image to nearly the same output, and later they hold augmented
views' statistics. `CleanTargets` recalibrates BatchNorm on a fixed random
subset (nets.batchnorm) and reuses the predictions made at the end of an
epoch as the next epoch's targets, since the model does not change in between.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np

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
    `predict_all` arguments are `Trainer.predict_all`.
    """

    def __init__(self, model: keras.Model, num_samples: int, calibration_samples: int, mode: str = "one_pass"):
        self._calibrator = BatchNormCalibrator(model, mode)
        self._subset = fixed_subset(int(num_samples), int(calibration_samples))
        self._kept = None
        self.calibrated = False

    def calibrate(self, predict_all: Callable) -> None:
        """Sets BatchNorm statistics to the clean images' (of the fixed subset)."""
        self._calibrator(lambda fn: predict_all(fn, subset=self._subset))
        self.calibrated = True

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
