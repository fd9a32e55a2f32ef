"""Augmentation ops: pure TF functions of (image, seed), usable in `Dataset.map`.

Images are float32 [H, W, C] in [0, 1]; `seed` is an int32/int64 tensor of
shape [2] (a stateless seed). Each op draws its randomness only from `seed`, so
a pipeline is reproducible and the ops behave the same eagerly and in graphs.
`augment` applies flip -> affine -> colour jitter. Grayscale conversion is a
preprocessing setting (data.preprocess), applied after augmentation, so it
comes *after* colour jitter, as GATCluster (section 4.2) prescribes.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which random transforms to apply, and how strong.

    Attributes:
      flip_horizontal / flip_vertical: random flips with probability 0.5.
      rotation: maximum rotation in degrees (uniform in [-r, r]).
      shift: maximum translation as a fraction of height/width.
      scale: (min, max) zoom factor; (1, 1) disables.
      shear: maximum shear angle in degrees.
      fill_mode: "constant" (zeros, right for digits) or "reflect"/"nearest".
      brightness: max additive delta; contrast, saturation: max factor change
        (uniform in [1 - c, 1 + c]); hue: max hue delta in [0, 0.5].
    """

    flip_horizontal: bool = False
    flip_vertical: bool = False
    rotation: float = 0.0
    shift: float = 0.0
    scale: tuple = (1.0, 1.0)
    shear: float = 0.0
    fill_mode: str = "constant"
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    @property
    def is_identity(self) -> bool:
        return not (self.flip_horizontal or self.flip_vertical or self.rotation or self.shift or self.shear
                    or tuple(self.scale) != (1.0, 1.0) or self.brightness or self.contrast
                    or self.saturation or self.hue)


def _split(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n))


def random_flip(image, seed, horizontal: bool = True, vertical: bool = False):
    """Flips [H,W,C] left-right and/or up-down, each with probability 1/2."""
    s1, s2 = _split(seed, 2)
    if horizontal:
        image = tf.image.stateless_random_flip_left_right(image, s1)
    if vertical:
        image = tf.image.stateless_random_flip_up_down(image, s2)
    return image


def affine_matrix(height, width, angle, tx, ty, zoom, shear):
    """3x3 forward affine matrix about the image centre (pixel coordinates).

    Args:
      angle, shear: radians; tx, ty: pixels; zoom: scale factor (scalars).
    Returns:
      float32 [3, 3] mapping an input pixel (x, y, 1) to its place in the output.
    """
    cx, cy = (tf.cast(width, tf.float32) - 1.0) / 2.0, (tf.cast(height, tf.float32) - 1.0) / 2.0
    c, s = tf.cos(angle), tf.sin(angle)
    one, zero = tf.ones_like(c), tf.zeros_like(c)
    to_centre = tf.stack([[one, zero, -cx], [zero, one, -cy], [zero, zero, one]])
    back = tf.stack([[one, zero, cx + tx], [zero, one, cy + ty], [zero, zero, one]])
    rotate = tf.stack([[c, -s, zero], [s, c, zero], [zero, zero, one]])
    shear_m = tf.stack([[one, -tf.sin(shear), zero], [zero, tf.cos(shear), zero], [zero, zero, one]])
    zoom_m = tf.stack([[zoom, zero, zero], [zero, zoom, zero], [zero, zero, one]])
    return back @ rotate @ shear_m @ zoom_m @ to_centre


def apply_affine(image, matrix, fill_mode: str = "constant", interpolation: str = "BILINEAR"):
    """Warps [H,W,C] by a forward 3x3 affine `matrix` (output = matrix @ input)."""
    inverse = tf.linalg.inv(matrix)
    inverse = inverse / inverse[2, 2]
    transform = tf.reshape(inverse, [9])[:8][None, :]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation=interpolation, fill_mode=fill_mode.upper())
    return out[0]


def random_affine(image, seed, rotation=0.0, shift=0.0, scale=(1.0, 1.0), shear=0.0, fill_mode="constant"):
    """Random rotation (deg), shift (fraction), zoom range and shear (deg) of [H,W,C]."""
    s = _split(seed, 5)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    unif = lambda sd, lo, hi: tf.random.stateless_uniform([], sd, lo, hi)  # noqa: E731
    rad = math.pi / 180.0
    angle = unif(s[0], -rotation * rad, rotation * rad) if rotation else tf.constant(0.0)
    tx = unif(s[1], -shift, shift) * tf.cast(w, tf.float32) if shift else tf.constant(0.0)
    ty = unif(s[2], -shift, shift) * tf.cast(h, tf.float32) if shift else tf.constant(0.0)
    zoom = unif(s[3], float(scale[0]), float(scale[1])) if tuple(scale) != (1.0, 1.0) else tf.constant(1.0)
    sh = unif(s[4], -shear * rad, shear * rad) if shear else tf.constant(0.0)
    return apply_affine(image, affine_matrix(h, w, angle, tx, ty, zoom, sh), fill_mode)


def color_jitter(image, seed, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
    """Random brightness, contrast, saturation, hue (the last two need RGB); clips to [0,1]."""
    s = _split(seed, 4)
    rgb = image.shape[-1] == 3
    if brightness:
        image = tf.image.stateless_random_brightness(image, brightness, s[0])
    if contrast:
        image = tf.image.stateless_random_contrast(image, max(0.0, 1 - contrast), 1 + contrast, s[1])
    if saturation and rgb:
        image = tf.image.stateless_random_saturation(image, max(0.0, 1 - saturation), 1 + saturation, s[2])
    if hue and rgb:
        image = tf.image.stateless_random_hue(image, hue, s[3])
    return tf.clip_by_value(image, 0.0, 1.0)


def grayscale(image):
    """[H,W,3] -> [H,W,1] luminance (ITU-R 601); [H,W,1] passes through."""
    if image.shape[-1] == 1:
        return image
    return tf.image.rgb_to_grayscale(image)


def augment(image, seed, config: AugmentConfig):
    """Applies the configured ops to a float [H,W,C] image in [0,1], in the paper's order."""
    s = _split(seed, 3)
    if config.flip_horizontal or config.flip_vertical:
        image = random_flip(image, s[0], config.flip_horizontal, config.flip_vertical)
    if config.rotation or config.shift or config.shear or tuple(config.scale) != (1.0, 1.0):
        image = random_affine(image, s[1], config.rotation, config.shift, config.scale, config.shear,
                              config.fill_mode)
    if config.brightness or config.contrast or config.saturation or config.hue:
        image = color_jitter(image, s[2], config.brightness, config.contrast, config.saturation, config.hue)
    return image
