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
With a non-identity `augment` (the `cpu` preset; not the paper's), both
stages' steps take one augmented view of each image, as DEC-DA (Guo et al.,
ACML 2018) does (stage II only with `augment_autoencoder=False`): stage I
reconstructs the view, stage II fits the view's soft scores to the targets r
of the clean image; k-means, the scores behind r, the stop rule and inference
see clean images only.
Outputs: `probabilities` = s, `cluster` = argmax s, `embedding` = features z.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from sklearn.cluster import KMeans

from tfcluster.configs.dbc import FCAE_KMS_PRESETS, PRESETS, DBCConfig
from tfcluster.losses import dbc as dbc_loss
from tfcluster.methods.base import Method
from tfcluster.plan import one_pass
from tfcluster.nets.fcae import build_fcae, variant_for


# Stage I's reconstruction previews and stage II's score histograms are written every this many epochs of
# their stage (and at its last): 40-60 ms each, a tenth of a short MNIST-5k epoch (docs/RESULTS.md).
SUMMARY_EVERY = 10


class DBC(Method):
    name = "dbc"
    config_class = DBCConfig
    presets = PRESETS
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
            views = self._num_views(autoencoder=True)
            return one_pass(self._autoencoder_step, n, batch, num_views=views, name="autoencoder",
                            end=lambda: self.end_autoencoder_epoch(epoch, predict_all), end_name="previews",
                            evaluate=epoch + 1 == stage1)
        return one_pass(self._cluster_step, n, batch, num_views=self._num_views(), name="cluster",
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
        if (epoch - self.config.stage1_epochs()) % SUMMARY_EVERY == 0 or epoch + 1 == self.num_epochs():
            for j in range(min(self.num_clusters, 10)):
                logs[f"dbc_scores/cluster_{j}"] = s[:, j]  # the paper's Fig. 6 histograms
        return logs

    def end_autoencoder_epoch(self, epoch, predict_all) -> dict:
        """Reconstruction previews; k-means on the features after stage I's last epoch."""
        logs = {}
        n = self.config.preview_images
        last = epoch + 1 == self.config.stage1_epochs()
        if n and (epoch % SUMMARY_EVERY == 0 or last):
            x = predict_all(self._identity_fn, subset=np.arange(n))
            recon = predict_all(self._recon_fn, subset=np.arange(n))
            logs["dbc/reconstructions"] = np.concatenate([x, recon], axis=2)  # [n, H, 2W, C] side by side
        if last:
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
    def _num_views(self, autoencoder: bool = False) -> int:
        """1 when the stage augments (its steps train on one augmented view), else 0 (the clean images)."""
        if self.config.augment.is_identity or (autoencoder and not self.config.augment_autoencoder):
            return 0
        return 1

    def _training_images(self, batch, autoencoder: bool = False):
        """The step's inputs [B, H, W, C]: the augmented view when the stage augments, else the clean images."""
        return batch["views"][:, 0] if self._num_views(autoencoder) else batch["image"]

    def _global_batch(self, local):
        ctx = tf.distribute.get_replica_context()
        return tf.cast(tf.shape(local)[0] * ctx.num_replicas_in_sync, tf.float32)

    def _autoencoder_step(self, batch):
        x = self._training_images(batch, autoencoder=True)  # reconstructs its own input (the view when augmenting)
        with tf.GradientTape() as tape:
            recon, _ = self.autoencoder(x, training=True)
            per_sample = tf.reduce_sum(tf.square(recon - x), axis=[1, 2, 3])
            loss = tf.reduce_sum(per_sample) / self._global_batch(x)
        self.apply_gradients(self.ae_optimizer, tape, loss, self.autoencoder.trainable_variables)
        return {"loss": loss, "dbc/reconstruction": loss}

    def _cluster_step(self, batch):
        x = self._training_images(batch)  # targets r come from the clean images' scores
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


class FCAEKMeans(DBC):
    """FCAE-KMS: stage I of DBC alone, k-means on the FCAE's features (the paper's baseline)."""

    name = "fcae_kms"
    presets = FCAE_KMS_PRESETS
