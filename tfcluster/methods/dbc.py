"""DBC: Discriminatively Boosted Clustering with a fully convolutional auto-encoder.

Li, Qiao, Zhang and Xi, "Discriminatively Boosted Image Clustering with Fully
Convolutional Auto-Encoders" (Pattern Recognition, 2018), Algorithms 1-2:

Stage I (epochs 0 .. S-1, phase "autoencoder"): train the FCAE end to end on
  the Euclidean reconstruction loss sum_i ||x_i - g(f(x_i))||^2 (Adam);
  after its last epoch, k-means (scikit-learn) on the encoder's features gives
  the initial centres mu. Evaluating here is FCAE-KMS (method `fcae_kms`).
Stage II (phase "cluster", at most `epochs` epochs): each epoch recomputes the
  soft scores s (eq. 1) of the whole training set and the boosted target r
  (eq. 2), then minimises KL(R || S) (eq. 3) over mini-batches, updating the
  encoder and the centres (SGD with momentum); training stops when the
  fraction of hard assignments that changed during an epoch is below `tol`.
Outputs: `probabilities` = s, `cluster` = argmax s, `embedding` = features z.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from sklearn.cluster import KMeans

from tfcluster.errors import InputError
from tfcluster.losses import dbc as dbc_loss
from tfcluster.methods.base import BaseConfig, Method
from tfcluster.methods.plan import one_pass
from tfcluster.nets.fcae import build_fcae, variant_for

INITS = ("full", "half", "random")


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
        self.check_choice("normalization", self.normalization, dbc_loss.NORMALIZATIONS)
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


class DBC(Method):
    name = "dbc"
    config_class = DBCConfig
    presets = {"paper": paper_preset, "cpu": cpu_preset}
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._scores_cache = None  # (epoch, s) of the last end-of-epoch pass

    def check_input_shape(self, input_shape):
        self.require_image_variant(input_shape, variant_for)

    def build(self):
        cfg = self.config
        with self.strategy.scope():
            self.autoencoder, self.encoder = build_fcae(self.input_shape, bn_momentum=cfg.bn_momentum,
                                                        width=cfg.width)
            dim = self.encoder.output.shape[-1]
            self.centres = tf.Variable(tf.zeros([self.num_clusters, dim]), name="centres")
            self.centres_ready = tf.Variable(False, trainable=False, name="centres_ready")
            self.converged = tf.Variable(False, trainable=False, name="converged")
            self.ae_optimizer = keras.optimizers.Adam(cfg.ae_learning_rate)
            self.ae_optimizer.build(self.autoencoder.trainable_variables)
            self.optimizer = keras.optimizers.SGD(cfg.learning_rate, momentum=cfg.momentum)
            self.optimizer.build(self._cluster_variables())
        self._features_fn = tf.function(lambda x: self.encoder(x, training=False))
        self._recon_fn = tf.function(lambda x: self.autoencoder(x, training=False)[0])
        self._identity_fn = tf.function(lambda x: x)

    def _cluster_variables(self):
        return list(self.encoder.trainable_variables) + [self.centres]

    def checkpoint_objects(self):
        return {"autoencoder": self.autoencoder, "centres": self.centres, "centres_ready": self.centres_ready,
                "converged": self.converged, "ae_optimizer": self.ae_optimizer, "optimizer": self.optimizer}

    def export_objects(self):
        return {"encoder": self.encoder, "centres": self.centres}

    def num_epochs(self):
        return self.config.stage1_epochs() + int(self.config.epochs)

    def finished(self) -> bool:
        return bool(self.converged.numpy())

    # -- eager stages ------------------------------------------------------------
    def init_centres(self, predict_all, seed: int) -> dict:
        """k-means on the encoder's features of the whole training set -> mu."""
        z = predict_all(self._features_fn)
        km = KMeans(self.num_clusters, n_init=self.config.kmeans_n_init, random_state=seed).fit(z)
        self.centres.assign(km.cluster_centers_.astype(np.float32))
        self.centres_ready.assign(True)
        return {"dbc/kmeans_inertia": float(km.inertia_)}

    def _scores(self, predict_all, epoch):
        if self._scores_cache is not None and self._scores_cache[0] == epoch:
            return self._scores_cache[1]
        return predict_all()

    def epoch_plan(self, epoch, predict_all):
        """Stage I: [auto-encoder steps, previews (+ k-means after the last)]; stage II: [targets and KL steps,
        convergence check]. Cluster metrics exist from the end of stage I on."""
        n, batch, stage1 = self.info.num_samples, self.config.batch_size, self.config.stage1_epochs()
        if epoch < stage1:
            return one_pass(self._autoencoder_step, n, batch, name="autoencoder",
                            end=lambda: self.end_autoencoder_epoch(epoch, predict_all), end_name="previews",
                            evaluate=epoch + 1 == stage1)
        return one_pass(self._cluster_step, n, batch, name="cluster",
                        begin=lambda: self.begin_cluster_epoch(epoch, predict_all),
                        end=lambda: self.end_cluster_epoch(epoch, predict_all), end_name="convergence")

    def begin_cluster_epoch(self, epoch, predict_all):
        """Soft scores s of the whole training set (eq. 1) -> the epoch's boosted targets r (eq. 2)."""
        logs = {}
        if not bool(self.centres_ready.numpy()):  # init="random": k-means on untrained features
            logs.update(self.init_centres(predict_all, self.seed))
        s = self._scores(predict_all, epoch - 1)
        self._epoch_start_assignments = s.argmax(1)
        r = dbc_loss.boosted_target(s, self.config.alpha, self.config.normalization).astype(np.float32)
        self.keep_targets("targets", r)
        for j in range(min(self.num_clusters, 10)):
            logs[f"dbc_scores/cluster_{j}"] = s[:, j]  # the paper's Fig. 6 histograms
        return logs

    def end_autoencoder_epoch(self, epoch, predict_all) -> dict:
        """Reconstruction previews; k-means on the features after stage I's last epoch."""
        logs = {}
        n = self.config.preview_images
        if n:
            x = predict_all(self._identity_fn, subset=np.arange(n))
            recon = predict_all(self._recon_fn, subset=np.arange(n))
            logs["dbc/reconstructions"] = np.concatenate([x, recon], axis=2)  # [n, H, 2W, C] side by side
        if epoch + 1 == self.config.stage1_epochs():
            logs.update(self.init_centres(predict_all, self.seed))
        return logs

    def end_cluster_epoch(self, epoch, predict_all) -> dict:
        """The fraction of hard assignments that changed in the epoch; converged below `tol`."""
        logs = {}
        s = predict_all()
        self._scores_cache = (epoch, s)
        changed = dbc_loss.changed_fraction(self._epoch_start_assignments, s.argmax(1))
        logs["dbc/changed_fraction"] = changed
        if changed < self.config.tol:
            self.converged.assign(True)
        return logs

    # -- graph steps ------------------------------------------------------------------
    def _global_batch(self, local):
        ctx = tf.distribute.get_replica_context()
        return tf.cast(tf.shape(local)[0] * ctx.num_replicas_in_sync, tf.float32)

    def _autoencoder_step(self, batch):
        x = batch["image"]
        with tf.GradientTape() as tape:
            recon, _ = self.autoencoder(x, training=True)
            per_sample = tf.reduce_sum(tf.square(recon - x), axis=[1, 2, 3])
            loss = tf.reduce_sum(per_sample) / self._global_batch(x)
        self.apply_gradients(self.ae_optimizer, tape, loss, self.autoencoder.trainable_variables)
        return {"loss": loss, "dbc/reconstruction": loss}

    def _cluster_step(self, batch):
        x = batch["image"]
        r = tf.gather(self.targets, batch["index"])
        variables = self._cluster_variables()
        with tf.GradientTape() as tape:
            z = self.encoder(x, training=self.config.stage2_bn_training)
            s = dbc_loss.soft_assign(z, self.centres, self.config.dof)
            loss = tf.reduce_sum(dbc_loss.kl_rows(r, s)) / self._global_batch(x)
        self.apply_gradients(self.optimizer, tape, loss, variables)
        return {"loss": loss, "dbc/kl": loss}

    # -- inference ---------------------------------------------------------------------
    def predict(self, x):
        return dbc_loss.soft_assign(self.encoder(x, training=False), self.centres, self.config.dof)

    def serving_outputs(self, x):
        z = self.encoder(x, training=False)
        return {"probabilities": dbc_loss.soft_assign(z, self.centres, self.config.dof), "embedding": z}


def fcae_kms_preset(base):
    def preset(info):
        return dataclasses.replace(base(info), epochs=0)

    preset.__doc__ = f"Stage I only (k-means on FCAE features): {base.__name__} with epochs=0."
    return preset


class FCAEKMeans(DBC):
    """FCAE-KMS: stage I of DBC alone, k-means on the FCAE's features (the paper's baseline)."""

    name = "fcae_kms"
    presets = {"paper": fcae_kms_preset(paper_preset), "cpu": fcae_kms_preset(cpu_preset)}
