"""Population statistics for BatchNorm ("precise BN").

Moving averages with momentum m hold a mix of the last ~1/(1-m) training
batches' statistics, of *augmented* views, taken while the weights moved.
Inference on clean images then sees other statistics than training did.
`BatchNormCalibrator` replaces every BatchNormalization layer's moving mean and
variance with the exact statistics of a dataset, layer by layer in network
order (each layer's inputs computed with the earlier layers already
recalibrated), so inference-mode outputs are batch-independent and match the
data they are computed on.

That costs about (number of BatchNorm layers) / 2 forward passes. The
"one_pass" mode costs one: a single training-mode pass in which every
BatchNorm layer normalises with its sub-batch's statistics, while the inputs
of every BatchNorm layer are summed over all sub-batches. It is exact when one
sub-batch holds the whole dataset (training mode on the whole data is then
the layer-by-layer result); with several sub-batches, each layer's inputs were
computed with sub-batch rather than population statistics upstream, the
approximation of "precise BN" (Wu & Johnson, 2021), small for sub-batches of
hundreds of images.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfcluster.configs.base import CALIBRATION_MODES


MODES = CALIBRATION_MODES


class BatchNormCalibrator:
    """Recalibrates the BatchNorm layers of a functional Keras model.

    Args:
      model: a functional `keras.Model` (its BatchNormalization layers are found
        among `model.layers`, in order).
      mode: "layerwise" (exact for any sub-batching) or "one_pass" (one
        training-mode forward pass; exact with a single sub-batch). One pass
        needs a model whose only training-mode difference is BatchNorm: models
        with Dropout are refused.
    Call with `map_batches(fn) -> np.ndarray`, which applies a tf.function `fn`
    to every batch of preprocessed images [B, ...] of the dataset and
    concatenates the results along axis 0 (e.g. `Trainer.predict_all`).
    """

    def __init__(self, model: keras.Model, mode: str = "layerwise"):
        if mode not in MODES:
            raise ValueError(f"BatchNorm calibration mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self._model = model
        self.layers = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
        # (stats fn, the layers whose statistics it returns), computed and assigned in this order.
        if mode == "layerwise":
            self._groups = [(self._make_stats_fn(keras.Model(model.inputs, [layer.input]), training=False), [layer])
                            for layer in self.layers]
        else:
            dropout = [l.name for l in model.layers if isinstance(l, keras.layers.Dropout)]
            if dropout:
                raise ValueError(f"one_pass BatchNorm calibration needs a model without Dropout; found {dropout}")
            probe = keras.Model(model.inputs, [layer.input for layer in self.layers]) if self.layers else None
            self._groups = [(self._make_stats_fn(probe, training=True), self.layers)] if self.layers else []

    @staticmethod
    def _make_stats_fn(probe, training: bool):
        """A tf.function: images [B, ...] -> [1, sum over layers of (2 C_l + 1)]: per layer its
        inputs' mean (C), sum of squared deviations from that mean (C) and count, in float32.

        Centred per batch, so float32 keeps the variance exact to round-off however
        large the mean; batches are combined in float64 on the host (`_combine`).
        """

        # reduce_retracing: batches of several sizes (a sub-batch size, a last partial batch) share a trace.
        @tf.function(reduce_retracing=True)
        def stats(x):
            parts = []
            outputs = probe(x, training=training)
            outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
            for h in outputs:
                h = tf.cast(h, tf.float32)
                axes = list(range(len(h.shape) - 1))
                count = tf.cast(tf.reduce_prod(tf.shape(h)[:-1]), tf.float32)
                mean = tf.reduce_mean(h, axes)
                parts += [mean, tf.reduce_sum(tf.math.squared_difference(h, mean), axes), [count]]
            return tf.concat(parts, 0)[None]

        return stats

    def __call__(self, map_batches: Callable[[Callable], np.ndarray]) -> None:
        # A one_pass training-mode pass also moves the moving statistics; all of them are overwritten here.
        for fn, layers in self._groups:
            self._assign(layers, map_batches(fn))

    def calibrate_and_predict(self, map_batches: Callable[[Callable], np.ndarray], output: Callable) -> np.ndarray:
        """One training-mode pass over the data as a single batch ("one_pass" mode): calibrates and predicts.

        Every BatchNorm layer's moving statistics become the batch's own (its momentum is 0
        while the pass is traced and run, so the layer's training-mode update writes the
        statistics it normalised with), and the outputs are those of inference with the
        statistics set here (training mode on the whole data is the layer-by-layer result):
        targets and calibration in one pass, at the cost of the forward pass alone.

        Args:
          map_batches: as for `__call__`; it must pass the data as one batch (e.g. a chunk).
          output: picks the wanted tensor from the model's outputs, e.g.
            `lambda out: out["probabilities"]`.
        Returns: the outputs [N, ...] in float32.
        Raises ValueError in "layerwise" mode, with frozen BatchNorm layers (training mode
        would not update them), or when the data came in several batches (each batch's
        statistics would overwrite the last's).
        """
        if self.mode != "one_pass":
            raise ValueError("calibrate_and_predict needs the one_pass mode")
        frozen = [layer.name for layer in self.layers if not layer.trainable]
        if frozen:
            raise ValueError(f"calibrate_and_predict needs trainable BatchNorm layers; frozen: {frozen}")
        if getattr(self, "_with_output", (None, None))[0] is not output:
            model = self._model

            @tf.function(reduce_retracing=True)
            def forward(x):
                return tf.cast(output(model(x, training=True)), tf.float32)

            self._with_output = (output, forward)
        forward, batches = self._with_output[1], []

        def one_batch(x):
            batches.append(int(x.shape[0]))
            return forward(x)

        momenta = [layer.momentum for layer in self.layers]
        try:
            for layer in self.layers:  # read when `forward` is traced: every trace happens in here
                layer.momentum = 0.0
            outputs = map_batches(one_batch)
        finally:
            for layer, momentum in zip(self.layers, momenta):
                layer.momentum = momentum
        if len(batches) != 1:
            raise ValueError(f"calibrate_and_predict needs the data in one batch; it came in {len(batches)} "
                             f"({batches}) and only the last one's statistics were kept")
        return outputs

    def _assign(self, layers, rows: np.ndarray) -> None:
        """Sets the layers' moving statistics from per-batch rows (`_make_stats_fn`)."""
        rows = rows.astype(np.float64)
        start = 0
        for layer in layers:
            c = int(layer.moving_mean.shape[0])
            mean, var = self._combine(rows[:, start:start + 2 * c + 1])
            layer.moving_mean.assign(mean.astype(np.float32))
            layer.moving_variance.assign(var.astype(np.float32))
            start += 2 * c + 1

    @staticmethod
    def _combine(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Population mean and variance [C] from per-batch rows [batches, 2C + 1] of
        (mean, squared deviations, count): Chan et al.'s pairwise formula, folded in order."""
        c = (rows.shape[1] - 1) // 2
        n, mean, m2 = 0.0, np.zeros(c), np.zeros(c)
        for row in rows:
            n_b, mean_b, m2_b = row[-1], row[:c], row[c:2 * c]
            total = n + n_b
            delta = mean_b - mean
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta ** 2 * (n * n_b / total)
            n = total
        return mean, np.maximum(m2 / n, 0.0)
