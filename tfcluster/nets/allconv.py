"""ALL-ConvNets of the DAC supplement, Table 1.

Three variants, selected by input size:
  "mnist"  (28x28 mono, and any small input): 3x3 convs 64,64,64/2,128,128,128/2
  "cifar"  (32x32 RGB): the same recipe on 3 channels
  "stl"    (96x96 RGB, inputs of side >= 64): 5x5 convs with stride-4 reductions
each followed by a 1x1 conv to K channels (BN, ReLU), global average pooling,
BatchNorm and the restraint layer. `width` scales the 64/128 channel counts
(1.0 is the paper's).
"""

from __future__ import annotations

import keras

from tfcluster.nets.layers import BatchNorm, RestraintLayer, conv_bn_relu, scaled


def variant_for(input_shape) -> str:
    """Picks the Table 1 column for an (H, W, C) input."""
    h, w, c = input_shape
    if min(h, w) >= 64:
        return "stl"
    return "cifar" if c == 3 else "mnist"


def build_allconvnet(input_shape, num_clusters: int, width: float = 1.0, bn_momentum: float = 0.99,
                     variant: str | None = None, name: str = "allconvnet") -> keras.Model:
    """Builds the ALL-ConvNet mapping images [B,H,W,C] to label features [B,K].

    Args:
      input_shape: (H, W, C) of the preprocessed input.
      num_clusters: K, the number of label-feature dimensions.
      width: channel multiplier (1.0 = Table 1).
      bn_momentum: BatchNorm moving-average momentum (Keras convention).
      variant: "mnist", "cifar" or "stl"; default chosen by `variant_for`.
    Returns:
      keras.Model whose output is [B, K], non-negative with unit L2 norm.
    """
    variant = variant or variant_for(input_shape)
    if variant not in ("mnist", "cifar", "stl"):
        raise ValueError(f"unknown ALL-ConvNet variant {variant!r}")
    kernel, reduce = (5, 4) if variant == "stl" else (3, 2)
    c1, c2 = scaled(64, width), scaled(128, width)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    plan = [(c1, kernel, 1), (c1, kernel, 1), (c1, kernel, reduce), (c2, kernel, 1), (c2, kernel, 1),
            (c2, kernel, reduce), (num_clusters, 1, 1)]
    # Under mixed precision the head (the 1x1 convolution to K channels onwards) is a float32 island:
    # the label features the thresholds compare are K numbers pooled over the image.
    for i, (filters, k, s) in enumerate(plan):
        head = i + 1 == len(plan)
        x = conv_bn_relu(x, filters, k, s, bn_momentum, name=f"block{i + 1}_", dtype="float32" if head else None)
    x = keras.layers.GlobalAveragePooling2D(name="gap", dtype="float32")(x)
    x = BatchNorm(momentum=bn_momentum, synchronized=True, name="gap_bn", dtype="float32")(x)
    outputs = RestraintLayer(name="restraint", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
