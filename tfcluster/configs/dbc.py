"""DBC's config and presets (methods.dbc trains DBC and FCAE-KMS): `DBCConfig`, `paper`, `cpu`.

TF-free (see tfcluster.configs).
"""

from __future__ import annotations

import dataclasses

from tfcluster.configs.base import BaseConfig
from tfcluster.errors import InputError


INITS = ("full", "half", "random")
# How the boosted target normalises s^alpha (losses.dbc.boosted_target).
NORMALIZATIONS = ("none", "soft", "boosted")


@dataclasses.dataclass(frozen=True)
class DBCConfig(BaseConfig):
    """DBC settings.

    Attributes:
      epochs: stage II's maximum number of epochs (T of Algorithm 1).
      ae_epochs: stage I epochs of a fully trained FCAE.
      init: FCAE initialisation of stage II (section 4.3.3): "full" trains
        `ae_epochs` epochs, "half" half of them, "random" none.
      ae_learning_rate: Adam learning rate of stage I.
      learning_rate, momentum: SGD of stage II.
      alpha: boosting factor of eq. (2).
      normalization: n_j of eq. (2): "none", "soft" or "boosted" (the paper's).
      dof: degrees of freedom v of the Student-t kernel (1 in the paper).
      tol: stage II stops when fewer than this fraction of hard assignments
        changed during an epoch (0 disables the rule).
      bn_momentum: BatchNorm momentum.
      width: FCAE filter-count multiplier (1.0 = the paper's Table 2).
      stage2_bn_training: run the encoder's BatchNorm in training mode in stage
        II; False (default) keeps the running statistics of stage I, so the
        features stay those the k-means centres were fitted on.
      kmeans_n_init: k-means restarts for the initial centres.
      preview_images: reconstructions shown in TensorBoard in stage I.
    """

    epochs: int = 50
    batch_size: int = 256
    ae_epochs: int = 50
    init: str = "full"
    ae_learning_rate: float = 1e-3
    learning_rate: float = 0.01
    momentum: float = 0.9
    alpha: float = 2.0
    normalization: str = "boosted"
    dof: float = 1.0
    tol: float = 0.001
    bn_momentum: float = 0.99
    width: float = 1.0
    stage2_bn_training: bool = False
    kmeans_n_init: int = 20
    preview_images: int = 8

    def validate(self):
        super().validate()
        self.check_choice("init", self.init, INITS)
        self.check_choice("normalization", self.normalization, NORMALIZATIONS)
        if self.alpha <= 1.0:
            raise InputError(f"alpha must be > 1 (eq. 2 boosts only then), got {self.alpha}")
        if self.ae_epochs < 0:
            raise InputError(f"ae_epochs must be >= 0, got {self.ae_epochs}")

    def stage1_epochs(self) -> int:
        return {"full": self.ae_epochs, "half": self.ae_epochs // 2, "random": 0}[self.init]


def paper_preset(info) -> DBCConfig:
    """The paper's method: Table 2 FCAE, alpha 2, n_j = sum_i s_ij^alpha, v = 1.

    The paper gives no optimiser settings or epoch counts; these follow DEC
    (SGD 0.01, momentum 0.9, stop below 0.1% changed assignments) and train
    the FCAE for 50 epochs with Adam.
    Command: tfcluster train --method=dbc --preset=paper --dataset=mnist
    """
    return DBCConfig()


def cpu_preset(info) -> DBCConfig:
    """CPU preset: 6-14 min on MNIST-5k on 2 cores (median ACC 0.654 of 3 seeds; Fashion-MNIST 0.560).

    Command: tfcluster train --method=dbc --preset=cpu --dataset=mnist5k
    Changes from `paper` and why (docs/RESULTS.md):
      - epochs from a budget of 250,000 images per stage (50 epochs of MNIST-5k, at least 5);
      - batch 128 instead of 256: MNIST-5k has only 39 batches of 128 per epoch;
      - BN momentum 0.9: stage I is short, and stage II runs the encoder in inference mode,
        so the running statistics must have caught up with the weights;
      - stage II learning rate 0.05 instead of 0.01: few steps per epoch on small data.
    """
    epochs = max(5, round(CPU_IMAGE_BUDGET / max(info.num_samples, 1)))
    return dataclasses.replace(DBCConfig(), batch_size=128, bn_momentum=0.9, learning_rate=0.05, ae_epochs=epochs,
                               epochs=epochs)


# Training images per stage of the cpu preset: 50 epochs of MNIST-5k.
CPU_IMAGE_BUDGET = 250_000

PRESETS = {"paper": paper_preset, "cpu": cpu_preset}


def fcae_kms_preset(base):
    def preset(info):
        return dataclasses.replace(base(info), epochs=0)

    preset.__doc__ = f"Stage I only (k-means on FCAE features): {base.__name__} with epochs=0."
    return preset


FCAE_KMS_PRESETS = {"paper": fcae_kms_preset(paper_preset), "cpu": fcae_kms_preset(cpu_preset)}
