"""GATCluster's networks (supplement Tables S6-S8) and its Gaussian attention.

Image feature module (Table S6): VGG-style blocks of 3x3 (or wider first)
Conv-BN-ReLU and 2x2/2 max pooling, ending in a 1x1 Conv-BN-ReLU with K
channels, the "Conv-k". Recipes:
  "stl10"   (STL10 / ImageNet-10, 96x96): 3 blocks of three 3x3 valid convs
            (64, 128, 256 channels), each followed by max pooling -> 6x6 map;
  "imagenet_dog": as "stl10" with a 5x5 first conv, padding 1;
  "imagenet_dog_128": as "stl10" with a 7x7 first conv, padding 1;
  "cifar"   (32x32): three 3x3 convs of 64 with padding 1, pool, three valid
            3x3 convs of 128, pool -> 5x5 map;
  "mnist"   (28x28x1, the "cifar" recipe) -> 4x4 map.
Larger inputs (128, 160, 192: the paper's Tables 3-4) stack extra valid 3x3
Conv-256 layers after the last pooling until the map has the requested
attention-map size, as the supplement describes; `attention_size` picks the
resolution (2x2 ... 10x10 at 128x128 in Table 4).

Label feature module (Table S7): 1x1 Conv-BN-ReLU (64) -> global average
pooling -> Linear ReLU Linear ReLU Linear -> softmax (the l1/probability
constraint). Table S7 writes every linear layer as Linear(k, k) after a
64-channel conv; we read the first one as Linear(64, k).

Attention module (section 3.3.4, Table S8): a fully connected layer on the
flattened image features (H x W x K) estimates Phi = [mu_x, mu_y, delta],
three distinct outputs squashed by a sigmoid (the official code's choice: the
coordinates are normalised to [0, 1] and delta must be positive); the map
A(x, y) = exp(-(1/alpha) (u - mu)^T Sigma^-1 (u - mu)), Sigma = diag(delta, delta)
(eq. 9) weights every channel of the label module's conv features; the
weighted features are summed over the map (the official code's global
pooling) and mapped by Linear ReLU Linear ReLU Linear -> softmax to the
attention label features.
"""

from __future__ import annotations

import keras
from keras import ops

from tfcluster.nets.layers import conv_bn_relu, scaled

# First block per recipe: [(kernel, padding)] for its three convs; "blocks" = number of conv blocks.
RECIPES = {
    "stl10": {"first": [(3, 0), (3, 0), (3, 0)], "pad_rest": 0, "blocks": 3},
    "imagenet_dog": {"first": [(5, 1), (3, 0), (3, 0)], "pad_rest": 0, "blocks": 3},
    "imagenet_dog_128": {"first": [(7, 1), (3, 0), (3, 0)], "pad_rest": 0, "blocks": 3},
    "cifar": {"first": [(3, 1), (3, 1), (3, 1)], "pad_rest": 0, "blocks": 2},
    "mnist": {"first": [(3, 1), (3, 1), (3, 1)], "pad_rest": 0, "blocks": 2},
}
BLOCK_CHANNELS = (64, 128, 256)
# The paper's preferred resolution (Table 4); used when the recipe's map can reach it.
PREFERRED_ATTENTION_SIZE = 6
EPS = 1e-5


def recipe_for(input_shape) -> str:
    """The Table S6 recipe for an (H, W, C) input, or ValueError."""
    h, w, _ = input_shape
    if h != w:
        raise ValueError(f"GATCluster's networks take square images; got {h}x{w}. Resize them "
                         "(e.g. folder:PATH?size=96x96).")
    if h == 28:
        return "mnist"
    if h == 32:
        return "cifar"
    if h >= 64:
        return "stl10"
    raise ValueError(f"GATCluster's networks take 28x28, 32x32 or >= 64x64 images; got {h}x{w}")


def natural_map_size(size: int, recipe: str) -> int:
    """Side of the map after the recipe's blocks (before extra convs)."""
    spec = RECIPES[recipe]
    for block in range(spec["blocks"]):
        convs = spec["first"] if block == 0 else [(3, spec["pad_rest"])] * 3
        for k, p in convs:
            size = size + 2 * p - k + 1
        size //= 2
    return size


def default_attention_size(size: int, recipe: str) -> int:
    """6 when extra valid 3x3 convs can reach it (the paper's choice), else the recipe's own size."""
    natural = natural_map_size(size, recipe)
    if natural >= PREFERRED_ATTENTION_SIZE and (natural - PREFERRED_ATTENTION_SIZE) % 2 == 0:
        return PREFERRED_ATTENTION_SIZE
    return natural


def gaussian_map(phi, height: int, width: int, alpha: float):
    """The attention map of eq. (9) on coordinates normalised to [0, 1].

    Args:
      phi: [B, 3] = (mu_x, mu_y, delta); mu_x along the width, mu_y along the
        height, delta > 0 the variance of Sigma = diag(delta, delta).
      height, width: map size (each at least 2).
      alpha: the paper's alpha (0.05).
    Returns:
      [B, height, width] with A = exp(-((x - mu_x)^2 + (y - mu_y)^2) / (alpha delta)).
    """
    ys = ops.linspace(0.0, 1.0, height)
    xs = ops.linspace(0.0, 1.0, width)
    mu_x = phi[:, 0][:, None, None]
    mu_y = phi[:, 1][:, None, None]
    delta = phi[:, 2][:, None, None] + EPS
    d2 = ops.square(xs[None, None, :] - mu_x) + ops.square(ys[None, :, None] - mu_y)
    return ops.exp(-d2 / (alpha * delta))


@keras.saving.register_keras_serializable(package="tfcluster")
class GaussianAttention(keras.layers.Layer):
    """Attention feature generator: Gaussian map x features, pooled over the map.

    Call: (phi [B, 3], features [B, H, W, C]) -> (pooled [B, C], map [B, H, W]),
    pooled = sum_{x,y} A(x, y) features(x, y).
    """

    def __init__(self, alpha: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def call(self, inputs):
        phi, features = inputs
        h, w = features.shape[1], features.shape[2]
        att = gaussian_map(phi, h, w, self.alpha)
        pooled = ops.sum(features * att[..., None], axis=(1, 2))
        return pooled, att

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


def _conv(x, filters, kernel, padding, bn_momentum, name):
    """[zero padding] -> valid conv -> BN -> ReLU (layers {name}_pad, {name}_conv, {name}_bn, {name}_relu)."""
    return conv_bn_relu(x, filters, kernel, bn_momentum=bn_momentum, name=f"{name}_", padding="valid", pad=padding)


def _mlp_head(x, num_clusters, name):
    """Linear ReLU Linear ReLU Linear softmax (Tables S7/S8)."""
    x = keras.layers.Dense(num_clusters, activation="relu", name=f"{name}_fc1")(x)
    x = keras.layers.Dense(num_clusters, activation="relu", name=f"{name}_fc2")(x)
    x = keras.layers.Dense(num_clusters, name=f"{name}_fc3")(x)
    return keras.layers.Softmax(name=name, dtype="float32")(x)  # float32 under mixed precision


def build_gatcluster_net(input_shape, num_clusters: int, recipe: str | None = None, attention_size: int = 0,
                         width: float = 1.0, label_channels: int = 64, alpha: float = 0.05,
                         bn_momentum: float = 0.9) -> keras.Model:
    """Builds image feature, label feature and attention modules.

    Args:
      input_shape: (H, W, C) of the preprocessed images (square).
      num_clusters: K.
      recipe: a RECIPES key; default from the input size (`recipe_for`).
      attention_size: side of the attention map (0: `default_attention_size`);
        reached by stacking valid 3x3 convs after the last pooling.
      width: multiplier of the VGG blocks' channels (1.0 = Table S6).
      label_channels: channels of the label module's 1x1 conv (64, Table S7).
      alpha: the Gaussian kernel's alpha (0.05).
      bn_momentum: BatchNorm momentum (0.9 = PyTorch's default 0.1).
    Returns:
      keras.Model: images [B, H, W, C] -> {"probabilities": [B, K] label features,
      "attention_probabilities": [B, K] attention label features,
      "attention_map": [B, h, w], "attention_params": [B, 3] = (mu_x, mu_y, delta),
      "features": [B, h, w, K] the image feature module's output}.
    Raises:
      ValueError: an unknown recipe, or an attention size the recipe cannot reach.
    """
    recipe = recipe or recipe_for(input_shape)
    if recipe not in RECIPES:
        raise ValueError(f"unknown GATCluster recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
    spec = RECIPES[recipe]
    size = int(input_shape[0])
    natural = natural_map_size(size, recipe)
    attention_size = int(attention_size) or default_attention_size(size, recipe)
    if natural < 2:
        raise ValueError(f"{size}x{size} inputs leave a {natural}x{natural} map with recipe {recipe!r}")
    if attention_size < 2 or attention_size > natural or (natural - attention_size) % 2:
        reachable = list(range(natural, 1, -2))
        raise ValueError(f"attention_size={attention_size} is not reachable from the {natural}x{natural} map of "
                         f"recipe {recipe!r} at {size}x{size} (each extra valid 3x3 conv removes 2); "
                         f"choose one of {reachable}")

    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    for block in range(spec["blocks"]):
        convs = spec["first"] if block == 0 else [(3, spec["pad_rest"])] * 3
        for i, (k, p) in enumerate(convs):
            x = _conv(x, scaled(BLOCK_CHANNELS[block], width), k, p, bn_momentum, f"block{block + 1}_conv{i + 1}")
        x = keras.layers.MaxPooling2D(2, 2, name=f"block{block + 1}_pool")(x)
    for i in range((natural - attention_size) // 2):
        x = _conv(x, scaled(256, width), 3, 0, bn_momentum, f"extra_conv{i + 1}")
    features = _conv(x, num_clusters, 1, 0, bn_momentum, "conv_k")

    # Label feature module.
    label_conv = _conv(features, label_channels, 1, 0, bn_momentum, "label_conv")
    pooled = keras.layers.GlobalAveragePooling2D(name="label_pool")(label_conv)
    probabilities = _mlp_head(pooled, num_clusters, "probabilities")

    # Attention module.
    flat = keras.layers.Flatten(name="attention_flatten")(features)
    # The attention's position, width and map in float32 under mixed precision.
    phi = keras.layers.Dense(3, activation="sigmoid", name="attention_params", dtype="float32")(flat)
    att_pooled, att_map = GaussianAttention(alpha, name="gaussian_attention", dtype="float32")([phi, label_conv])
    att_probabilities = _mlp_head(att_pooled, num_clusters, "attention_probabilities")
    outputs = {"probabilities": probabilities, "attention_probabilities": att_probabilities,
               "attention_map": att_map, "attention_params": phi, "features": features}
    return keras.Model(inputs, outputs, name=f"gatcluster_{recipe}")
