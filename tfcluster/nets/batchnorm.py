"""Population statistics for BatchNorm ("precise BN").

Moving averages with momentum m hold a mix of the last ~1/(1-m) training
batches' statistics, of *augmented* views, taken while the weights moved.
Inference on clean images then sees other statistics than training did.
`BatchNormCalibrator` replaces every BatchNormalization layer's moving mean and
variance with the exact statistics of a dataset, layer by layer in network
order (each layer's inputs computed with the earlier layers already
recalibrated), so inference-mode outputs are batch-independent and match the
data they are computed on.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf


class BatchNormCalibrator:
    """Recalibrates the BatchNorm layers of a functional Keras model.

    Args:
      model: a functional `keras.Model` (its BatchNormalization layers are found
        among `model.layers`, in order).
    Call with `map_batches(fn) -> np.ndarray`, which applies a tf.function `fn`
    to every batch of preprocessed images [B, ...] of the dataset and
    concatenates the results along axis 0 (e.g. `Trainer.predict_all`).
    """

    def __init__(self, model: keras.Model):
        self.layers = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
        self._stats_fns = [self._make_stats_fn(keras.Model(model.inputs, layer.input)) for layer in self.layers]

    @staticmethod
    def _make_stats_fn(probe):
        # reduce_retracing: batches of several sizes (a sub-batch size, a last partial batch) share a trace.
        @tf.function(reduce_retracing=True)
        def stats(x):
            h = tf.cast(probe(x, training=False), tf.float64)
            axes = list(range(len(h.shape) - 1))
            count = tf.cast(tf.reduce_prod(tf.shape(h)[:-1]), tf.float64)
            return tf.concat([tf.reduce_sum(h, axes), tf.reduce_sum(tf.square(h), axes), [count]], 0)[None]

        return stats

    def __call__(self, map_batches: Callable[[Callable], np.ndarray]) -> None:
        for layer, fn in zip(self.layers, self._stats_fns):
            totals = map_batches(fn).sum(0)
            c = (totals.shape[0] - 1) // 2
            n = totals[-1]
            mean = totals[:c] / n
            var = np.maximum(totals[c:2 * c] / n - mean ** 2, 0.0)
            layer.moving_mean.assign(mean.astype(np.float32))
            layer.moving_variance.assign(var.astype(np.float32))
