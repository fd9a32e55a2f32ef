"""DCCM's shallow AlexNet-style networks (supplement Table 4) and its MI discriminator.

Convolutions are 'valid' (unpadded), as in the official code, so the last
pooling leaves a 1x1 map of 256 channels:
  "cifar" (32x32): 3x3 conv 64, 3x3 conv 64 [S], max 2/2, 3x3 conv 128, max 2/2,
                   3x3 conv 256, avg 4/4           -> fc 64 [D] -> fc K -> softmax
  "tiny"  (64x64): 5x5 conv 64, 5x5 conv 64, max 4/4, 3x3 conv 128 [S], 3x3 conv 128,
                   max 4/4, 1x1 conv 256, avg 2/2  -> fc 256 [D] -> fc K -> softmax
  "stl"   (96x96): as "tiny" with a final avg 4/4  -> fc 64 [D] -> fc K -> softmax
  "mnist" (28x28, the same recipe as "cifar"): 3x3 convs 64, 64 [S], max 2/2,
                   conv 128, max 2/2, conv 256 (3x3 map), avg 3/3 -> fc 64 [D] -> ...
Every conv and the first fc are followed by BatchNorm and ReLU. [S] marks the
paper's shallow layer (output of the second conv for 32x32, of the third for
larger inputs) and [D] its deep layer (the first fc), the two inputs of the
mutual-information discriminator. The official code used instead the first
pooling's output and the K-dim layer before the last BatchNorm: `shallow` and
`deep` select either.
"""

from __future__ import annotations

import keras

from tfcluster.configs.dccm import DEEP_LAYERS, SHALLOW_LAYERS
from tfcluster.nets.layers import BatchNorm, bn_relu, conv_bn_relu, scaled, variant_by_size

# Per variant: input size, conv plan [(kernel, filters, pool after: None | (size, stride, "max"|"avg"))],
# index of the conv whose output is the paper's shallow layer, fc width.
TABLE4 = {
    "mnist": {"size": 28, "convs": [(3, 64, None), (3, 64, (2, 2, "max")), (3, 128, (2, 2, "max")),
                                    (3, 256, (3, 3, "avg"))], "shallow_conv": 1, "fc": 64},
    "cifar": {"size": 32, "convs": [(3, 64, None), (3, 64, (2, 2, "max")), (3, 128, (2, 2, "max")),
                                    (3, 256, (4, 4, "avg"))], "shallow_conv": 1, "fc": 64},
    "tiny": {"size": 64, "convs": [(5, 64, None), (5, 64, (4, 4, "max")), (3, 128, None), (3, 128, (4, 4, "max")),
                                   (1, 256, (2, 2, "avg"))], "shallow_conv": 2, "fc": 256},
    "stl": {"size": 96, "convs": [(5, 64, None), (5, 64, (4, 4, "max")), (3, 128, None), (3, 128, (4, 4, "max")),
                                  (1, 256, (4, 4, "avg"))], "shallow_conv": 2, "fc": 64},
}


def variant_for(input_shape) -> str:
    """The Table 4 column for an (H, W, C) input, or a clear ValueError."""
    return variant_by_size(input_shape, {name: spec["size"] for name, spec in TABLE4.items()}, "DCCM's network")


def build_dccm_net(input_shape, num_clusters: int, width: float = 1.0, bn_momentum: float = 0.99,
                   logits_bn: bool = True, shallow: str = "paper", deep: str = "paper",
                   variant: str | None = None) -> keras.Model:
    """Builds the clustering network.

    Args:
      input_shape: (H, W, C) of the preprocessed images.
      num_clusters: K.
      width: multiplier of every conv and fc width (1.0 = Table 4).
      bn_momentum: BatchNorm moving-average momentum.
      logits_bn: BatchNorm on the K logits before the softmax (the official
        code has it; Table 4 does not list it).
      shallow: "paper" (Table 4's [S]) or "pool1" (the first pooling's output).
      deep: "paper" (the first fc, [D]) or "logits" (the K logits before BN).
      variant: a TABLE4 key; default from the input size.
    Returns:
      keras.Model: images [B, H, W, C] -> {"probabilities": [B, K] softmax,
      "shallow": [B, h, w, Cs] feature map, "deep": [B, Dd],
      "conv": [B, 256·width] the last conv block's pooled features,
      "fc": [B, fc width] the first fc layer (after BN and ReLU)}.
    Raises:
      ValueError: unknown variant / shallow / deep, or an input size without a
        configuration.
    """
    variant = variant or variant_for(input_shape)
    spec = TABLE4[variant]
    if shallow not in SHALLOW_LAYERS:
        raise ValueError(f"shallow must be one of {SHALLOW_LAYERS}, got {shallow!r}")
    if deep not in DEEP_LAYERS:
        raise ValueError(f"deep must be one of {DEEP_LAYERS}, got {deep!r}")

    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    shallow_map = None
    for i, (k, f, pool) in enumerate(spec["convs"]):
        x = conv_bn_relu(x, scaled(f, width), k, bn_momentum=bn_momentum, name=f"conv{i + 1}_", padding="valid")
        if shallow == "paper" and i == spec["shallow_conv"]:
            shallow_map = x
        if pool is not None:
            size, stride, kind = pool
            layer = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
            x = layer(size, stride, name=f"pool{i + 1}")(x)
            if shallow == "pool1" and shallow_map is None:
                shallow_map = x
    if x.shape[1] != 1 or x.shape[2] != 1:
        raise ValueError(f"DCCM network ends in a {x.shape[1]}x{x.shape[2]} map, expected 1x1")
    conv = keras.layers.Flatten(name="conv_features")(x)
    fc = keras.layers.Dense(scaled(spec["fc"], width), use_bias=False, name="fc1")(conv)
    fc = bn_relu(fc, bn_momentum, "fc1_")
    logits = keras.layers.Dense(num_clusters, use_bias=not logits_bn, name="logits")(fc)
    h = logits
    if logits_bn:
        h = BatchNorm(momentum=bn_momentum, synchronized=True, name="logits_bn")(h)
    probs = keras.layers.Softmax(name="probabilities", dtype="float32")(h)  # float32 under mixed precision
    outputs = {"probabilities": probs, "shallow": shallow_map, "deep": fc if deep == "paper" else logits,
               "conv": conv, "fc": fc}
    return keras.Model(inputs, outputs, name=f"dccm_{variant}")


@keras.saving.register_keras_serializable(package="tfcluster")
class MIDiscriminator(keras.layers.Layer):
    """The local MI discriminator T(s, d): three 1x1 convolutions (as in Deep InfoMax).

    Its input at every location of the shallow map is [s ; d] (the deep vector
    tiled over the map); the first 1x1 conv on that concatenation equals
    s·W_s + d·W_d + b, so the shallow and deep halves are computed once per
    sample (`encode_shallow`, `encode_deep`) and combined per pair (`score`).

    Args:
      units: width of the two hidden 1x1 convolutions (512 in the paper's code).
    Call: (shallow [B, h, w, Cs], deep [B, Dd]) -> scores [B, h, w].
    """

    def __init__(self, units: int = 512, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.c0_shallow = keras.layers.Dense(self.units, use_bias=True, name="c0_shallow")
        self.c0_deep = keras.layers.Dense(self.units, use_bias=False, name="c0_deep")
        self.c1 = keras.layers.Dense(self.units, activation="relu", name="c1")
        self.c2 = keras.layers.Dense(1, name="c2", dtype="float32")  # scores in float32 under mixed precision

    def build(self, input_shape):
        shallow_shape, deep_shape = input_shape
        self.c0_shallow.build(shallow_shape)
        self.c0_deep.build(deep_shape)
        self.c1.build(tuple(shallow_shape[:-1]) + (self.units,))
        self.c2.build(tuple(shallow_shape[:-1]) + (self.units,))

    def encode_shallow(self, shallow):
        """[B, h, w, Cs] -> [B, h, w, units]."""
        return self.c0_shallow(shallow)

    def encode_deep(self, deep):
        """[B, Dd] -> [B, units]."""
        return self.c0_deep(deep)

    def score(self, shallow_code, deep_code):
        """([P, h, w, units], [P, units]) -> scores [P, h, w] of the P (s, d) pairs."""
        h = keras.ops.relu(shallow_code + deep_code[:, None, None, :])
        return self.c2(self.c1(h))[..., 0]

    def call(self, inputs):
        shallow, deep = inputs
        return self.score(self.encode_shallow(shallow), self.encode_deep(deep))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
