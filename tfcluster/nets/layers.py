"""Layers shared by the methods' networks."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcluster")
class RestraintLayer(keras.layers.Layer):
    """DAC's restraint layer (supplement eq. 17a-b): non-negative unit label features.

    out_h = exp(in_h - max_h in_h); out = out / ||out||_2.
    Input [B, K] float; output [B, K] with every entry in (0, 1] and unit L2 norm.
    """

    def call(self, inputs):
        e = ops.exp(inputs - ops.max(inputs, axis=-1, keepdims=True))
        return e / ops.sqrt(ops.sum(ops.square(e), axis=-1, keepdims=True))

    def compute_output_shape(self, input_shape):
        return input_shape


def conv_bn_relu(x, filters: int, kernel: int, strides: int = 1, bn_momentum: float = 0.99, name: str = ""):
    """Conv (He-normal, no bias) -> synchronized BatchNorm -> ReLU.

    BatchNorm is synchronized so that statistics are those of the global batch
    whatever the replica count (the one-device/two-replica equality holds).
    """
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}conv")(x)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, synchronized=True, name=f"{name}bn")(x)
    return keras.layers.ReLU(name=f"{name}relu")(x)
