"""The one place where raw pixels become model inputs (training and serving).

`Preprocessor` maps uint8 [..., H, W, C] to float32 [..., H, W, C'] by scaling
to [0, 1], optional grayscale conversion (C' = 1) and per-dataset standardisation
with statistics fitted on the training images *after* grayscale conversion. It
is a `tf.Module`, so the exported SavedModel carries the same constants.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfcluster.data import augment as augment_lib


class Preprocessor(tf.Module):
    """uint8 pixels -> standardised float inputs. Vectors: float -> standardised.

    Args:
      mean, std: per-channel statistics of the model-space inputs in [0, 1].
      grayscale: convert RGB inputs to one channel before standardising.
      modality: "image" or "vector".
    """

    def __init__(self, mean, std, grayscale: bool = False, modality: str = "image", name=None):
        super().__init__(name=name)
        self.mean = tf.constant(np.asarray(mean, np.float32))
        self.std = tf.constant(np.asarray(std, np.float32))
        self.grayscale = bool(grayscale)
        self.modality = modality

    @classmethod
    def fit(cls, x: np.ndarray, grayscale: bool = False, modality: str = "image", max_values: int = 4_000_000):
        """Fits the statistics on training data x ([N,H,W,C] uint8 or [N,D] float)."""
        if modality == "vector":
            x = np.asarray(x, np.float64)
            return cls(x.mean(0), np.maximum(x.std(0), 1e-3), modality=modality)
        step = max(1, int(np.prod(x.shape)) // max_values)
        sample = x[::step].astype(np.float32) / 255.0
        if grayscale and sample.shape[-1] == 3:
            sample = tf.image.rgb_to_grayscale(sample).numpy()
        flat = sample.reshape(-1, sample.shape[-1]).astype(np.float64)
        return cls(flat.mean(0), np.maximum(flat.std(0), 1e-3), grayscale=grayscale)

    def output_channels(self, input_channels: int) -> int:
        return 1 if self.grayscale else input_channels

    @staticmethod
    def to_float(images):
        """uint8 [..., H, W, C] -> float32 in [0, 1]."""
        return tf.cast(images, tf.float32) / 255.0

    def finish(self, x):
        """float [..., H, W, C] in [0, 1] (after augmentation) -> model input."""
        if self.modality == "image" and self.grayscale:
            x = augment_lib.grayscale(x)
        return (x - self.mean) / self.std

    def __call__(self, raw):
        """Raw uint8 pixels (or float vectors) -> model input."""
        if self.modality == "vector":
            return self.finish(tf.cast(raw, tf.float32))
        return self.finish(self.to_float(raw))

    def config(self) -> dict:
        return {"mean": self.mean.numpy().tolist(), "std": self.std.numpy().tolist(),
                "grayscale": self.grayscale, "modality": self.modality}
