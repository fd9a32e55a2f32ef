"""Networks of the precise-feature clustering GAN (Gan et al., section IV-A, Fig. 2).

Three separate networks, as the paper insists (a shared critic/classifier trunk
degraded its results):
  generator  G(y, z): one-hot cluster id y [B, K] and noise z [B, Z] -> a sample
  critic     D(x)   : a sample -> one unbounded score [B, 1] (WGAN-GP: no BatchNorm)
  classifier C(x)   : a sample -> q(y|x), softmax over K [B, K]

Convolutional variants (the WGAN-GP MNIST networks the paper inherits; every
(de)convolution 5x5 with stride 2, "same" padding; width `dim`, 64 in WGAN-GP):
  G: Dense(4*4*4dim) ReLU -> [4, 4, 4dim] -> deconv 2dim ReLU -> deconv dim ReLU
     -> deconv C, sigmoid (pixels in [0, 1])
  D, C: conv dim -> conv 2dim -> conv 4dim (LeakyReLU 0.2) -> flatten -> Dense
Per input size (Fig. 2's caption):
  "28" (28x28, MNIST family): G crops its 8x8 map to 7x7 after the first deconv
       (drops one row and one column), 7 -> 14 -> 28; D/C: 28 -> 14 -> 7 -> 4
  "32" (32x32, ORL / Cifar-10): 4 -> 8 -> 16 -> 32
  "16" (16x16, USPS): stride 1 in G's last deconv and D/C's first conv
  "64" (64x64, ImageNet-10): one more deconv (dim/2 filters) in G and conv
       (8dim) in D/C: 4 -> 8 -> 16 -> 32 -> 64
Fully connected variant (the synthetic experiment, section IV-B):
  G: (K + Z) - 512 - 512 - 512 - D, D: D - 512 - 512 - 512 - 1,
  C: D - 512 - 512 - 512 - K (softmax); ReLU hidden layers, linear outputs.
WGAN-GP's MNIST generator has BatchNorm only in its plain-WGAN mode, so
`generator_batchnorm` is off by default (on for its 32x32 and 64x64 networks).
"""

from __future__ import annotations

import keras
import tensorflow as tf

CONV_VARIANTS = (28, 16, 32, 64)


def variant_for(input_shape) -> str:
    """"fc" for vectors [D], else the convolutional variant for (H, W, C), or ValueError."""
    if len(input_shape) == 1:
        return "fc"
    if len(input_shape) != 3:
        raise ValueError(f"the precise-feature GAN takes vectors [D] or images [H, W, C]; got {input_shape}")
    h, w, c = input_shape
    if h != w or h not in CONV_VARIANTS:
        raise ValueError("the precise-feature GAN has networks for square images of "
                         + ", ".join(f"{s}x{s}" for s in CONV_VARIANTS)
                         + f"; got {h}x{w}. Resize the images (e.g. folder:PATH?size=28x28).")
    return str(h)


def _deconv_plan(size: int, dim: int) -> list[tuple[int, int]]:
    """(filters, stride) of the generator's hidden deconvolutions (the output layer is added after)."""
    plan = [(2 * dim, 2), (dim, 2)]
    if size == 64:
        plan.append((max(dim // 2, 1), 2))
    return plan


def build_generator(output_shape, num_clusters: int, noise_dim: int, dim: int = 64, hidden: int = 512,
                    batchnorm: bool = False, output_bias=None, name: str = "generator") -> keras.Model:
    """G(y, z). Inputs: y float32 [B, K] (one-hot), z float32 [B, Z] (Z may be 0).

    Output: images [B, H, W, C] in [0, 1] (sigmoid), or vectors [B, D] (linear).
    output_bias: initial bias of the output layer (scalar or [C]); None: zeros.
    """
    y = keras.Input((num_clusters,), name="cluster_one_hot")
    z = keras.Input((noise_dim,), name="noise")
    h = keras.layers.Concatenate(name="g_input")([y, z]) if noise_dim else y
    variant = variant_for(tuple(output_shape))
    if variant == "fc":
        for i in range(3):
            h = keras.layers.Dense(hidden, activation="relu", name=f"g_fc{i + 1}")(h)
        out = keras.layers.Dense(int(output_shape[0]), name="g_out", dtype="float32")(h)
        return keras.Model([y, z], out, name=name)
    size, channels = int(output_shape[0]), int(output_shape[-1])

    def norm_relu(t, label):
        if batchnorm:
            t = keras.layers.BatchNormalization(name=f"g_bn_{label}")(t)
        return keras.layers.ReLU(name=f"g_relu_{label}")(t)

    h = keras.layers.Dense(4 * 4 * 4 * dim, name="g_fc")(h)
    h = norm_relu(keras.layers.Reshape((4, 4, 4 * dim), name="g_reshape")(h), "fc")
    for i, (filters, stride) in enumerate(_deconv_plan(size, dim)):
        h = keras.layers.Conv2DTranspose(filters, 5, strides=stride, padding="same", name=f"g_deconv{i + 1}")(h)
        h = norm_relu(h, f"deconv{i + 1}")
        if i == 0 and size == 28:
            h = keras.layers.Cropping2D(((0, 1), (0, 1)), name="g_crop")(h)  # 8x8 -> 7x7
    last_stride = 1 if size == 16 else 2
    bias_init = "zeros" if output_bias is None else keras.initializers.Constant(output_bias)
    out = keras.layers.Conv2DTranspose(channels, 5, strides=last_stride, padding="same", activation="sigmoid",
                                       bias_initializer=bias_init, name="g_out", dtype="float32")(h)
    if tuple(out.shape[1:]) != tuple(output_shape):
        raise RuntimeError(f"generator produced {tuple(out.shape[1:])}, expected {tuple(output_shape)}")
    return keras.Model([y, z], out, name=name)


def _trunk(x, variant: str, dim: int, hidden: int, prefix: str):
    if variant == "fc":
        h = x
        for i in range(3):
            h = keras.layers.Dense(hidden, activation="relu", name=f"{prefix}_fc{i + 1}")(h)
        return h
    size = int(variant)
    plan = [(dim, 1 if size == 16 else 2), (2 * dim, 2), (4 * dim, 2)]
    if size == 64:
        plan.append((8 * dim, 2))
    h = x
    for i, (filters, stride) in enumerate(plan):
        h = keras.layers.Conv2D(filters, 5, strides=stride, padding="same", name=f"{prefix}_conv{i + 1}")(h)
        h = keras.layers.LeakyReLU(0.2, name=f"{prefix}_lrelu{i + 1}")(h)
    return keras.layers.Flatten(name=f"{prefix}_flatten")(h)


def build_critic(input_shape, dim: int = 64, hidden: int = 512, name: str = "critic") -> keras.Model:
    """D(x): inputs [B, ...] (model space) -> scores [B, 1]; no normalisation layers."""
    x = keras.Input(tuple(input_shape), name="sample")
    h = _trunk(x, variant_for(tuple(input_shape)), dim, hidden, "d")
    return keras.Model(x, keras.layers.Dense(1, name="d_out", dtype="float32")(h), name=name)


def build_classifier(input_shape, num_clusters: int, dim: int = 64, hidden: int = 512,
                     name: str = "classifier") -> keras.Model:
    """C(x): inputs [B, ...] (model space) -> {"logits" [B, K], "probabilities" q(y|x) [B, K]}.

    The softmax output is the paper's; losses use the logits (log-softmax is
    exact there, where log(softmax) underflows once q saturates).
    """
    x = keras.Input(tuple(input_shape), name="sample")
    h = _trunk(x, variant_for(tuple(input_shape)), dim, hidden, "c")
    logits = keras.layers.Dense(num_clusters, name="c_logits", dtype="float32")(h)
    probs = keras.layers.Softmax(name="c_softmax", dtype="float32")(logits)
    return keras.Model(x, {"logits": logits, "probabilities": probs}, name=name)


def count_params(model: keras.Model) -> int:
    return int(sum(tf.size(w).numpy() for w in model.trainable_weights))
