"""ALL-ConvNets of the DAC supplement, Table 1.

Three variants, selected by input size:
  "mnist"  (28x28 mono, and any small input): 3x3 convs 64,64,64/2,128,128,128/2
  "cifar"  (32x32 RGB): the same recipe on 3 channels
  "stl"    (96x96 RGB, inputs of side >= 64): 5x5 convs with stride-4 reductions
each followed by a 1x1 conv to K channels (BN, ReLU), global average pooling,
BatchNorm and the restraint layer. `width` scales the 64/128 channel counts
(1.0 is the paper's).

`build_official_mnist_net` is the network of the official code's MNIST script
(vector-1127/DAC, MNIST/mnist.py), which differs from Table 1 (see its docstring).
"""

from __future__ import annotations

import keras

from tfcluster.nets.layers import BatchNorm, RestraintLayer, bn_relu, conv_bn_relu, scaled


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


def build_official_mnist_net(input_shape, num_clusters: int, width: float = 1.0, bn_momentum: float = 0.99,
                             name: str = "dac_official") -> keras.Model:
    """The official DAC MNIST script's network, images [B,H,W,C] -> label features [B,K].

    Three 3x3 "valid" convolutions of 64 (BN, ReLU each), 2x2 max-pooling, BN;
    three 3x3 valid convolutions of 128, max-pooling, BN; a 1x1 convolution to K
    (BN, ReLU), average pooling, BN; then two K->K dense layers initialised to
    the identity (BN, ReLU each) and a softmax. The outputs are the softmax's
    L2-normalised (the script normalises before its cosine similarities), so
    they are non-negative unit vectors like the restraint layer's, and their
    argmax is the softmax's. Differences from the script: the convolutions have
    no bias (BatchNorm's beta replaces it); global average pooling instead of a
    2x2 pool (the same on 28x28 inputs, whose map is 2x2 there); `width` scales
    64/128. Under mixed precision the head (the 1x1 convolution onwards) is a
    float32 island, as in `build_allconvnet`. Needs inputs of side >= 22.
    """
    h, w = input_shape[0], input_shape[1]
    if min(h, w) < 22:
        raise ValueError(f"the official DAC MNIST network needs inputs of side >= 22 (three valid 3x3 "
                         f"convolutions and two poolings, twice); got {h}x{w}")
    c1, c2 = scaled(64, width), scaled(128, width)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    for block, filters in ((1, c1), (2, c2)):
        for i in range(3):
            x = conv_bn_relu(x, filters, 3, 1, bn_momentum, name=f"block{block}_{i + 1}_", padding="valid")
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = BatchNorm(momentum=bn_momentum, synchronized=True, name=f"block{block}_pool_bn")(x)
    x = conv_bn_relu(x, num_clusters, 1, 1, bn_momentum, name="head_", dtype="float32")
    x = keras.layers.GlobalAveragePooling2D(name="gap", dtype="float32")(x)
    x = BatchNorm(momentum=bn_momentum, synchronized=True, name="gap_bn", dtype="float32")(x)
    for i in (1, 2):
        x = keras.layers.Dense(num_clusters, kernel_initializer="identity", name=f"dense{i}", dtype="float32")(x)
        x = bn_relu(x, bn_momentum, name=f"dense{i}_", dtype="float32")
    x = keras.layers.Softmax(name="softmax", dtype="float32")(x)
    outputs = keras.layers.UnitNormalization(name="l2_normalize", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
