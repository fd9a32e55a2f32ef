"""Layers shared by the methods' networks."""

from __future__ import annotations

import keras
import tensorflow as tf
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


@keras.saving.register_keras_serializable(package="tfcluster")
class BatchNorm(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization computed by TensorFlow's fused kernel where it can be.

    Inputs [B, H, W, C] or [B, C] (as [B, 1, 1, C]) go through FusedBatchNormV3
    (statistics, normalisation, scale and offset in one pass, in float32
    whatever the input dtype): in inference mode always, in training mode with
    one replica (no cross-replica statistics to gather), where the moving
    averages are updated as Keras does (momentum, biased variance). Keras' own
    unfused ops took 1.4x (float32) and 2.2x (bfloat16) as long in a DAC-like
    training step on 2 CPU cores (docs/RESULTS.md). Training with several
    replicas (synchronized statistics), masks and renorm take Keras' path.
    """

    def _fused_ok(self, inputs, training, mask) -> bool:
        rank = len(inputs.shape)
        if mask is not None or self.renorm or rank not in (2, 4) or self.axis not in (rank - 1, -1):
            return False
        if not (training and self.trainable):
            return True
        ctx = tf.distribute.get_replica_context()
        return ctx is not None and ctx.num_replicas_in_sync == 1

    def call(self, inputs, training=None, mask=None):
        if not self._fused_ok(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        x = inputs if len(inputs.shape) == 4 else inputs[:, None, None, :]
        channels = int(inputs.shape[-1])
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if not (training and self.trainable):
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, is_training=False)
            return tf.cast(y if len(inputs.shape) == 4 else y[:, 0, 0, :], self.compute_dtype)
        y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon,
                                                             is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        variance = unbiased * (n - 1.0) / n  # the kernel returns the unbiased variance; Keras keeps the biased
        momentum = self.momentum
        self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(tf.cast(self.moving_variance, tf.float32) * momentum
                                    + variance * (1.0 - momentum))
        y = y if len(inputs.shape) == 4 else y[:, 0, 0, :]
        return tf.cast(y, self.compute_dtype)


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


def bn_relu(x, bn_momentum: float = 0.99, name: str = "", dtype=None):
    """Synchronized BatchNorm -> ReLU, named {name}bn, {name}relu.

    BatchNorm is synchronized so that statistics are those of the global batch
    whatever the replica count (the one-device/two-replica equality holds).
    `dtype`: the layers' dtype policy (None: the global one; "float32" makes
    a float32 island under mixed precision).
    """
    x = BatchNorm(momentum=bn_momentum, synchronized=True, name=f"{name}bn", dtype=dtype)(x)
    return keras.layers.ReLU(name=f"{name}relu", dtype=dtype)(x)


def conv_bn_relu(x, filters: int, kernel: int, strides: int = 1, bn_momentum: float = 0.99, name: str = "",
                 padding: str = "same", pad: int = 0, transpose: bool = False, dtype=None):
    """[zero padding] -> Conv2D or Conv2DTranspose (He-normal, no bias) -> BatchNorm -> ReLU (`bn_relu`).

    Input [B, H, W, C] -> [B, H', W', filters]. Layers are named {name}pad,
    {name}conv (or {name}deconv), {name}bn, {name}relu. No bias: BatchNorm's
    beta plays its part (a bias there gets only round-off gradients).
    `dtype`: the layers' dtype policy (None: the global one).
    """
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}pad", dtype=dtype)(x)
    layer = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    x = layer(filters, kernel, strides=strides, padding=padding, use_bias=False, kernel_initializer="he_normal",
              name=f"{name}{'deconv' if transpose else 'conv'}", dtype=dtype)(x)
    return bn_relu(x, bn_momentum, name, dtype=dtype)
