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


def scaled(filters: int, width: float) -> int:
    """A layer's width times the network's width multiplier, at least 1."""
    return max(1, int(round(filters * width)))


def variant_by_size(input_shape, sizes: dict, network: str) -> str:
    """The configuration of `sizes` (name -> square input side) for an (H, W, C) input, or ValueError."""
    h, w = input_shape[0], input_shape[1]
    for name, size in sizes.items():
        if h == w == size:
            return name
    listed = ", ".join(f"{size}x{size} ({name})" for name, size in sizes.items())
    first = next(iter(sizes.values()))
    raise ValueError(f"{network} has configurations for inputs of {listed}; got {h}x{w}. "
                     f"Resize the images (e.g. folder:PATH?size={first}x{first}).")


def bn_relu(x, bn_momentum: float = 0.99, name: str = ""):
    """Synchronized BatchNorm -> ReLU, named {name}bn, {name}relu.

    BatchNorm is synchronized so that statistics are those of the global batch
    whatever the replica count (the one-device/two-replica equality holds).
    """
    x = keras.layers.BatchNormalization(momentum=bn_momentum, synchronized=True, name=f"{name}bn")(x)
    return keras.layers.ReLU(name=f"{name}relu")(x)


def conv_bn_relu(x, filters: int, kernel: int, strides: int = 1, bn_momentum: float = 0.99, name: str = "",
                 padding: str = "same", pad: int = 0, transpose: bool = False):
    """[zero padding] -> Conv2D or Conv2DTranspose (He-normal, no bias) -> BatchNorm -> ReLU (`bn_relu`).

    Input [B, H, W, C] -> [B, H', W', filters]. Layers are named {name}pad,
    {name}conv (or {name}deconv), {name}bn, {name}relu. No bias: BatchNorm's
    beta plays its part (a bias there gets only round-off gradients).
    """
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}pad")(x)
    layer = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    x = layer(filters, kernel, strides=strides, padding=padding, use_bias=False, kernel_initializer="he_normal",
              name=f"{name}{'deconv' if transpose else 'conv'}")(x)
    return bn_relu(x, bn_momentum, name)
