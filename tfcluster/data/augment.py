"""Augmentation: batched TF ops that draw per-image parameters, then transform.

Images are float32 [N, H, W, C] in [0, 1]. `draw(config, seed, n)` draws every
random parameter of n images at once from one stateless seed (an int32/int64
tensor of shape [2]); `apply(images, params, config)` transforms a batch with
them: flip -> affine -> colour jitter, each image with its own parameters, one
op per transform for the whole batch. Splitting the draw from the transform lets
a pipeline draw a chunk's parameters once and transform its mini-batches many
times over (data.pipeline), and keeps the per-image work out of the input map.
`augment(images, seed, config)` is the two together.

Grayscale conversion is a preprocessing setting (data.preprocess), applied
after augmentation, so it comes *after* colour jitter, as GATCluster
(section 4.2) prescribes.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfcluster.configs.base import AugmentConfig  # noqa: F401  (the transforms' settings)


def draw(config: AugmentConfig, seed, n) -> dict:
    """Every random parameter of n images, from one stateless seed [2].

    Returns a dict of float32 [n] tensors (only the configured ones):
      "flip_h", "flip_v": 1.0 where the image is flipped (probability 1/2);
      "angle", "shear": radians; "tx", "ty": fractions of width / height;
      "zoom": scale factor;
      "brightness": additive delta; "contrast", "saturation": factors; "hue": delta.
    A pure function of (config, seed, n).
    """
    seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 11))
    n = tf.convert_to_tensor(n, tf.int32)
    unif = lambda i, lo, hi: tf.random.stateless_uniform([n], seeds[i], lo, hi)  # noqa: E731
    rad = math.pi / 180.0
    c = config
    wanted = {
        "flip_h": (c.flip_horizontal, lambda: tf.cast(unif(0, 0.0, 1.0) < 0.5, tf.float32)),
        "flip_v": (c.flip_vertical, lambda: tf.cast(unif(1, 0.0, 1.0) < 0.5, tf.float32)),
        "angle": (c.rotation, lambda: unif(2, -c.rotation * rad, c.rotation * rad)),
        "tx": (c.shift, lambda: unif(3, -c.shift, c.shift)),
        "ty": (c.shift, lambda: unif(4, -c.shift, c.shift)),
        "zoom": (tuple(c.scale) != (1.0, 1.0), lambda: unif(5, float(c.scale[0]), float(c.scale[1]))),
        "shear": (c.shear, lambda: unif(6, -c.shear * rad, c.shear * rad)),
        "brightness": (c.brightness, lambda: unif(7, -c.brightness, c.brightness)),
        "contrast": (c.contrast, lambda: unif(8, max(0.0, 1 - c.contrast), 1 + c.contrast)),
        "saturation": (c.saturation, lambda: unif(9, max(0.0, 1 - c.saturation), 1 + c.saturation)),
        "hue": (c.hue, lambda: unif(10, -c.hue, c.hue)),
    }
    return {name: make() for name, (on, make) in wanted.items() if on}


def affine_matrix(height, width, angle, tx, ty, zoom, shear):
    """Forward affine matrices about the image centre (pixel coordinates).

    Args:
      height, width: the image size; angle, shear: radians [n]; tx, ty: pixels
        [n]; zoom: scale factors [n].
    Returns:
      float32 [n, 3, 3] mapping an input pixel (x, y, 1) to its place in the output:
      back(centre + t) @ rotate @ shear @ zoom @ to_centre.
    """
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    c, s = tf.cos(angle), tf.sin(angle)
    k_sin, k_cos = tf.sin(shear), tf.cos(shear)
    # rotate @ shear @ zoom: [[c, -s], [s, c]] @ [[1, -sin(sh)], [0, cos(sh)]] * zoom
    a11 = zoom * c
    a12 = zoom * (-c * k_sin - s * k_cos)
    a21 = zoom * s
    a22 = zoom * (-s * k_sin + c * k_cos)
    b1 = cx + tx - (a11 * cx + a12 * cy)
    b2 = cy + ty - (a21 * cx + a22 * cy)
    zero, one = tf.zeros_like(c), tf.ones_like(c)
    rows = [tf.stack([a11, a12, b1], -1), tf.stack([a21, a22, b2], -1), tf.stack([zero, zero, one], -1)]
    return tf.stack(rows, -2)


def apply_affine(images, matrices, fill_mode: str = "constant", interpolation: str = "BILINEAR"):
    """Warps [N,H,W,C] by forward affine `matrices` [N,3,3] (output = matrix @ input), one op."""
    inverse = tf.linalg.inv(matrices)
    inverse = inverse / inverse[:, 2:3, 2:3]
    transforms = tf.reshape(inverse, [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation=interpolation, fill_mode=fill_mode.upper())


def _where(flags, flipped, images):
    return tf.where(flags[:, None, None, None] > 0.5, flipped, images)


def apply(images, params: dict, config: AugmentConfig):
    """Transforms [N,H,W,C] in [0,1] with the parameters `draw` made, in the paper's order.

    Flips, then the affine warp (one ImageProjectiveTransformV3 for the batch),
    then brightness, contrast (about each image's per-channel mean),
    saturation and hue (in HSV; RGB images only), clipped to [0, 1] after any jitter.
    """
    if "flip_h" in params:
        images = _where(params["flip_h"], tf.reverse(images, [2]), images)
    if "flip_v" in params:
        images = _where(params["flip_v"], tf.reverse(images, [1]), images)
    if config.has_affine:
        shape = tf.shape(images)
        n, h, w = shape[0], shape[1], shape[2]
        zeros = tf.zeros([n], tf.float32)
        matrices = affine_matrix(h, w, params.get("angle", zeros),
                                 params.get("tx", zeros) * tf.cast(w, tf.float32),
                                 params.get("ty", zeros) * tf.cast(h, tf.float32),
                                 params.get("zoom", tf.ones([n], tf.float32)), params.get("shear", zeros))
        images = apply_affine(images, matrices, config.fill_mode)
    if config.has_jitter:
        per_image = lambda p: p[:, None, None, None]  # noqa: E731
        if "brightness" in params:
            images = images + per_image(params["brightness"])
        if "contrast" in params:
            mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
            images = (images - mean) * per_image(params["contrast"]) + mean
        if images.shape[-1] == 3 and ("saturation" in params or "hue" in params):
            hsv = tf.image.rgb_to_hsv(tf.clip_by_value(images, 0.0, 1.0))
            hue, sat, value = tf.unstack(hsv, axis=-1)
            if "hue" in params:
                hue = tf.math.floormod(hue + params["hue"][:, None, None], 1.0)
            if "saturation" in params:
                sat = tf.clip_by_value(sat * params["saturation"][:, None, None], 0.0, 1.0)
            images = tf.image.hsv_to_rgb(tf.stack([hue, sat, value], -1))
        images = tf.clip_by_value(images, 0.0, 1.0)
    return images


def augment(images, seed, config: AugmentConfig):
    """Augments [N,H,W,C] in [0,1], each image with its own draws from the stateless `seed` [2]."""
    return apply(images, draw(config, seed, tf.shape(images)[0]), config)


def grayscale(image):
    """[..., H, W, 3] -> [..., H, W, 1] luminance (ITU-R 601); one channel passes through."""
    if image.shape[-1] == 1:
        return image
    return tf.image.rgb_to_grayscale(image)
