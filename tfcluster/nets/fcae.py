"""Fully convolutional auto-encoder of DBC (Li et al., 2017), with SegNet-style unpooling.

Encoder: [conv (BN, ReLU) -> max-pool]* -> conv to a 1x1 feature map (BN, ReLU)
Decoder: the mirror image: deconv (BN, ReLU) -> [unpool -> deconv]*, the last
deconv linear and without BN. Layers followed by BN have no bias (BN's beta
plays its part; a bias there gets only round-off gradients). Each unpooling layer puts its input values back
at the arg-max positions recorded by the matching pooling layer (zeros
elsewhere), as in the paper's design, rather than upsampling.

Encoder configurations of the paper's Table 2, chosen by input size:
  "mnist" (28x28):   conv 5x5x6 -> pool 2 -> conv 5x5x16 -> pool 2 -> conv 4x4x120     (valid)
  "usps"  (16x16):   conv 3x3x20 -> pool 2 -> conv 3x3x20 -> pool 2 -> conv 4x4x160    (padding 1)
  "coil"  (128x128): conv 9x9x20, pool, conv 5x5x20, pool, conv 5x5x20, pool,
                     conv 5x5x40, pool, conv 4x4x320                                   (valid)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcluster.nets.layers import bn_relu, conv_bn_relu, scaled, variant_by_size

# (kernel, filters) of the convolutions before each pooling layer, then the feature layer.
TABLE2 = {
    "mnist": {"size": 28, "padding": "valid", "convs": [(5, 6), (5, 16)], "feature": (4, 120)},
    "usps": {"size": 16, "padding": "same", "convs": [(3, 20), (3, 20)], "feature": (4, 160)},
    "coil": {"size": 128, "padding": "valid", "convs": [(9, 20), (5, 20), (5, 20), (5, 40)], "feature": (4, 320)},
}


def variant_for(input_shape) -> str:
    """The Table 2 configuration for an (H, W, C) input, or a clear ValueError."""
    return variant_by_size(input_shape, {name: spec["size"] for name, spec in TABLE2.items()}, "the FCAE")


@keras.saving.register_keras_serializable(package="tfcluster")
class MaxPoolWithArgmax(keras.layers.Layer):
    """2x2 max pooling that also returns where each maximum came from.

    Input [B, H, W, C] (H, W even); outputs (pooled [B, H/2, W/2, C],
    argmax int64 [B, H/2, W/2, C]): flat indices into the input, batch included.
    """

    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)

    def call(self, inputs):
        p = self.pool_size
        pooled, argmax = tf.nn.max_pool_with_argmax(inputs, ksize=p, strides=p, padding="VALID",
                                                    include_batch_in_index=True)
        return pooled, tf.stop_gradient(argmax)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        p = self.pool_size
        shape = (b, None if h is None else h // p, None if w is None else w // p, c)
        return shape, shape

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="tfcluster")
class MaxUnpool(keras.layers.Layer):
    """Inverse of `MaxPoolWithArgmax`: scatters values back to their arg-max positions.

    Inputs (values [B, h, w, C], argmax int64 [B, h, w, C]); output
    [B, h*p, w*p, C], zero except at the recorded positions. The gradient
    w.r.t. the values is the output gradient gathered at those positions.
    """

    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)

    def call(self, inputs):
        values, argmax = inputs
        shape = tf.shape(values, out_type=tf.int64)
        p = self.pool_size
        out_shape = tf.stack([shape[0], shape[1] * p, shape[2] * p, shape[3]])
        flat = tf.scatter_nd(tf.reshape(argmax, [-1, 1]), tf.reshape(values, [-1]),
                             tf.reshape(tf.reduce_prod(out_shape), [1]))
        return tf.reshape(flat, out_shape)

    def compute_output_shape(self, input_shape):
        (b, h, w, c), _ = input_shape
        p = self.pool_size
        return (b, None if h is None else h * p, None if w is None else w * p, c)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


def build_fcae(input_shape, variant: str | None = None, bn_momentum: float = 0.99,
               width: float = 1.0) -> tuple[keras.Model, keras.Model]:
    """Builds the FCAE.

    Args:
      input_shape: (H, W, C) of the preprocessed images.
      variant: "mnist", "usps" or "coil"; default from the input size.
      bn_momentum: BatchNorm moving-average momentum.
      width: multiplier of every layer's filter count (1.0 = Table 2).
    Returns:
      (autoencoder, encoder): autoencoder maps images [B, H, W, C] to
      (reconstructions [B, H, W, C], features [B, D]); encoder maps images to
      features [B, D] (D = 120 / 160 / 320 at width 1) and shares its layers.
    """
    variant = variant or variant_for(input_shape)
    spec = TABLE2[variant]
    padding = spec["padding"]
    channels = input_shape[-1]

    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    argmaxes, conv_inputs = [], []
    for i, (k, f) in enumerate(spec["convs"]):
        conv_inputs.append((x.shape[-1], k))
        x = conv_bn_relu(x, scaled(f, width), k, bn_momentum=bn_momentum, name=f"enc{i + 1}_", padding=padding)
        x, argmax = MaxPoolWithArgmax(name=f"enc{i + 1}_pool")(x)
        argmaxes.append(argmax)
    k, f = spec["feature"]
    pre_feature_channels = x.shape[-1]
    x = conv_bn_relu(x, scaled(f, width), k, bn_momentum=bn_momentum, name="feature_", padding="valid")
    if x.shape[1] != 1 or x.shape[2] != 1:
        raise ValueError(f"FCAE feature map is {x.shape[1]}x{x.shape[2]}, expected 1x1")
    features = keras.layers.Flatten(name="features", dtype="float32")(x)  # float32 under mixed precision

    # Decoder: mirror image of the encoder.
    y = conv_bn_relu(x, pre_feature_channels, k, bn_momentum=bn_momentum, name="dec_feature_", padding="valid",
                     transpose=True)
    for i in reversed(range(len(spec["convs"]))):
        y = MaxUnpool(name=f"dec{i + 1}_unpool")([y, argmaxes[i]])
        out_channels, k = conv_inputs[i]
        last = i == 0
        y = keras.layers.Conv2DTranspose(channels if last else out_channels, k, padding=padding, use_bias=last,
                                         kernel_initializer="glorot_uniform" if last else "he_normal",
                                         name=f"dec{i + 1}_deconv", dtype="float32" if last else None)(y)
        if not last:
            y = bn_relu(y, bn_momentum, f"dec{i + 1}_")
    autoencoder = keras.Model(inputs, [y, features], name="fcae")
    encoder = keras.Model(inputs, features, name="fcae_encoder")
    return autoencoder, encoder
