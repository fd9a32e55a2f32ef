"""Configs every method shares: `BaseConfig` and the augmentation settings.

TF-free, like the rest of `tfcluster.configs`: binaries check a method's
preset and `--set` overrides against these dataclasses before TensorFlow is
imported.
"""

from __future__ import annotations

import dataclasses

from tfcluster.errors import InputError

# BatchNorm recalibration modes (nets.batchnorm), a config choice of several methods.
CALIBRATION_MODES = ("layerwise", "one_pass")

# The cpu presets' wall budgets on 2 cores: 15 minutes for a dataset of a few thousand images (MNIST-5k),
# 30 minutes for one of LARGE_DATASET images or more (Fashion-MNIST); presets whose cost per training
# image is the same on any dataset give the larger ones twice the images.
LARGE_DATASET = 20_000


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
    def has_affine(self) -> bool:
        return bool(self.rotation or self.shift or self.shear or tuple(self.scale) != (1.0, 1.0))

    @property
    def has_jitter(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation or self.hue)

    @property
    def is_identity(self) -> bool:
        return not (self.flip_horizontal or self.flip_vertical or self.has_affine or self.has_jitter)


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """Fields every method's config has. Configs are frozen: an override makes a new one.

    Attributes:
      epochs: passes over the data (0: the method decides, e.g. DAC's schedule).
      batch_size: global batch size (split across replicas).
      augment: the random transforms of the training views.
      grayscale: convert colour images to one channel before the networks
        (a preprocessing setting: training views and inference alike).
      eval_every: evaluate/summarise every this many epochs (and at the end).
      checkpoint_every: save a checkpoint every this many epochs (and at the end).
      max_checkpoints: how many checkpoints to keep.
      log_every: write step scalars to TensorBoard every this many steps.
      steps_per_call: training steps run by one call of the traced step (a
        loop inside the tf.function over a block of that many batches); the
        outputs are read back, the loss checked and the progress shown once per
        call. Changes the speed, not the steps.
      gallery_per_cluster: images per cluster in the TensorBoard gallery.
      eval_batch_size: batch size of inference passes.
    """

    epochs: int = 10
    batch_size: int = 32
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    grayscale: bool = False
    eval_every: int = 1
    checkpoint_every: int = 1
    max_checkpoints: int = 3
    log_every: int = 20
    steps_per_call: int = 1
    gallery_per_cluster: int = 8
    eval_batch_size: int = 500

    def validate(self) -> None:
        """Raises InputError for a value no run can use (checked once, when a method is made)."""
        from tfcluster.config import non_finite_fields

        bad = non_finite_fields(self)
        if bad:
            raise InputError(f"{', '.join(bad)} must be finite numbers (not NaN or infinite)")
        if self.epochs < 0:
            raise InputError(f"epochs must be >= 0, got {self.epochs}")
        for field in ("batch_size", "eval_every", "checkpoint_every", "max_checkpoints", "log_every",
                      "eval_batch_size", "steps_per_call"):
            if int(getattr(self, field)) < 1:
                raise InputError(f"{field} must be positive, got {getattr(self, field)}")
        if self.gallery_per_cluster < 0:
            raise InputError(f"gallery_per_cluster must be >= 0, got {self.gallery_per_cluster}")

    @staticmethod
    def check_choice(field: str, value, choices) -> None:
        """InputError unless `value` is one of `choices`."""
        if value not in choices:
            raise InputError(f"{field} must be one of {tuple(choices)}, got {value!r}")
