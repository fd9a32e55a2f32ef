"""DAC: Deep Adaptive Image Clustering (Chang et al., ICCV 2017).

An ALL-ConvNet (supplement Table 1) ends in the restraint layer, so label
features l_i are non-negative unit vectors and s_ij = l_i . l_j in [0, 1].
Each epoch sets lambda (u = 0.95 - lambda, l = 0.455 + 0.1 lambda); each step
labels pairs of the *global* batch (s > u similar, s < l dissimilar, others
ignored) and minimises the binary cross-entropy over the selected pairs.
Training ends when u <= l. Cluster = argmax of the label feature;
`probabilities` = l / ||l||_1 (the normalisation of the supplement's eq. 1).
The `official` presets train as the official code's MNIST script does instead
(configs.dac.official_preset: its network, per-chunk targets, one threshold,
squared error over all pairs).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfcluster.configs.dac import PRESETS, DACConfig
from tfcluster.errors import InputError
from tfcluster.losses.dac import dac_loss_terms, official_loss_terms
from tfcluster.methods.base import Method
from tfcluster.methods.clean_targets import CleanTargets, chunk_stages
from tfcluster.plan import EpochPlan, eager, one_pass
from tfcluster.nets.allconv import build_allconvnet, build_official_mnist_net


class DAC(Method):
    name = "dac"
    config_class = DACConfig
    presets = PRESETS
    # bfloat16 under auto (with a float32 head): its median ACC within 0.02 of float32's, for steps 1.6-2x
    # faster on CPUs with bf16 units (docs/RESULTS.md, "Speed")
    auto_bfloat16 = True

    def check_input_shape(self, input_shape):
        if len(input_shape) != 3:
            raise InputError(f"DAC needs images [H, W, C]; got inputs of shape {input_shape} "
                             f"(dataset modality {self.info.modality!r})")

    @property
    def num_views(self) -> int:
        """Augmented views per training element: two for cross-view pairs (select_on="epoch" or "chunk"),
        one for the official loss (one view against itself)."""
        if self.config.loss == "official":
            return 1
        return 2 if self.config.select_on in ("epoch", "chunk") else 1

    def build(self):
        with self.strategy.scope():
            build_net = build_official_mnist_net if self.config.network == "official" else build_allconvnet
            self.model = build_net(self.input_shape, self.num_clusters, width=self.config.width,
                                   bn_momentum=self.config.bn_momentum)
            self.optimizer = keras.optimizers.RMSprop(self.config.learning_rate)
            self.optimizer.build(self.model.trainable_variables)
            self.lam = tf.Variable(self.config.schedule.lambda0, trainable=False, dtype=tf.float32, name="lam")
        self.clean_targets = CleanTargets(self.model, self.info.num_samples, self.config.calibration_samples,
                                          self.config.calibration_mode)

    def checkpoint_objects(self):
        return {"model": self.model, "optimizer": self.optimizer, "lam": self.lam}

    def num_epochs(self):
        if self.config.epochs > 0:
            return int(self.config.epochs)
        return self.config.schedule.last_epoch()

    def epoch_plan(self, epoch, predict_all):
        """[schedule (+ the epoch's targets) and steps over all samples, BatchNorm recalibration];
        select_on="chunk": [schedule, then per chunk its targets and passes over it, recalibration]."""
        cfg = self.config
        if cfg.select_on == "chunk":
            stages = [eager(lambda: self.begin_epoch(epoch, predict_all), "schedule")]
            stages += chunk_stages(self.train_step, self.info.num_samples, cfg.chunk_size, cfg.chunk_repeats,
                                   cfg.batch_size, self.num_views, self.seed, epoch,
                                   lambda c, indices: self.begin_chunk(indices, predict_all))
            stages.append(eager(lambda: self.end_epoch(epoch, predict_all), "calibrate"))
            return EpochPlan(tuple(stages))
        return one_pass(self.train_step, self.info.num_samples, self.config.batch_size, self.num_views,
                        begin=lambda: self.begin_epoch(epoch, predict_all),
                        end=lambda: self.end_epoch(epoch, predict_all), end_name="calibrate")

    def begin_epoch(self, epoch, predict_all):
        """Sets lambda; with select_on="epoch", the clean images' label features become the targets."""
        lam = self.config.schedule.lambda_at(epoch)
        self.lam.assign(lam)
        upper, lower = self.config.schedule.thresholds(lam)
        logs = {"dac/lambda": lam, "dac/upper": upper, "dac/lower": lower}
        if self.config.select_on == "epoch":
            probs = self.clean_targets.next(predict_all)
            feats = probs.astype(np.float32)
            feats /= np.linalg.norm(feats, axis=1, keepdims=True)
            self.keep_targets("epoch_targets", feats)
            sample = feats[np.random.RandomState(epoch).permutation(len(feats))[:2000]]  # sources may be sorted
            sim = sample @ sample.T
            logs["dac/epoch_positive_fraction"] = float((sim > upper).mean())
            logs["dac/epoch_selected_fraction"] = float(((sim > upper) | (sim < lower)).mean())
        return logs

    def begin_chunk(self, indices, predict_all):
        """select_on="chunk": the chunk's clean label features [M, K] become its rows of the targets."""
        feats, targets = self.clean_targets.chunk_targets(  # label features: unit vectors (to round-off)
            predict_all, indices, lambda l: l / np.linalg.norm(l, axis=1, keepdims=True))
        self.keep_targets("epoch_targets", targets)
        upper, lower = self.config.schedule.thresholds(float(self.lam.numpy()))
        sim = feats @ feats.T
        return {"dac/chunk_positive_fraction": float((sim > upper).mean()),
                "dac/chunk_selected_fraction": float(((sim > upper) | (sim < lower)).mean())}

    def end_epoch(self, epoch, predict_all):
        """Sets BatchNorm statistics to the clean training images' (see methods.clean_targets).

        The official code's BN used batch statistics at prediction instead,
        which made its outputs batch-dependent. Recalibrated statistics give
        clean-image targets and predictions that depend on no batch. Only
        select_on="epoch" predicts targets from them after every epoch; the other
        modes recalibrate only before an evaluation (each chunk calibrates on its own).
        """
        if self.config.select_on != "epoch" and not self.evaluates_after(epoch):
            return {}
        self.clean_targets.calibrate(predict_all)
        if self.config.select_on == "epoch" and epoch + 1 < self.num_epochs():
            self.clean_targets.keep(predict_all())
        return {}

    def train_step(self, batch):
        ctx, replica_id, _ = self.replica_info()
        upper, lower = self.config.schedule.thresholds(self.lam)
        if self.config.loss == "official":
            return self._official_step(batch, ctx, upper)
        if self.config.select_on in ("epoch", "chunk"):
            return self._cross_view_step(batch, ctx, replica_id, upper, lower)
        views, clean = batch["views"][:, 0], batch["image"]
        b = tf.shape(views)[0]
        with tf.GradientTape() as tape:
            if self.config.select_on == "clean":
                both = self.model(tf.concat([views, clean], 0), training=True)
                feats, clean_feats = both[:b], tf.stop_gradient(both[b:])
            else:
                feats = self.model(views, training=True)
                clean_feats = tf.stop_gradient(feats)
            # One gather for both feature sets: collectives launched independently
            # may run in different orders on different replicas.
            k = tf.shape(feats)[1]
            gathered = ctx.all_gather(tf.concat([feats, clean_feats], 1), axis=0)
            feats_all, clean_all = gathered[:, :k], gathered[:, k:]
            loss_sum, selected, positive = dac_loss_terms(feats, feats_all, upper, lower, replica_id * b,
                                                          clean_feats, clean_all)
            total_selected = ctx.all_reduce(tf.distribute.ReduceOp.SUM, selected)
            loss = loss_sum / tf.maximum(total_selected, 1.0)
        self.apply_gradients(self.optimizer, tape, loss, self.model.trainable_variables)
        big_b = tf.cast(tf.shape(feats_all)[0], tf.float32)
        pairs = big_b * (big_b - 1.0)
        return {"loss": loss, "dac/selected_fraction": selected / pairs,
                "dac/positive_fraction": positive / pairs}

    def _cross_view_step(self, batch, ctx, replica_id, upper, lower):
        views = batch["views"]
        b = tf.shape(views)[0]
        targets = tf.gather(self.epoch_targets, batch["index"])
        with tf.GradientTape() as tape:
            both = self.model(tf.concat([views[:, 0], views[:, 1]], 0), training=True)
            first, second = both[:b], both[b:]
            k = tf.shape(first)[1]
            gathered = ctx.all_gather(tf.concat([second, targets], 1), axis=0)
            second_all, targets_all = gathered[:, :k], gathered[:, k:]
            loss_sum, selected, positive = dac_loss_terms(first, second_all, upper, lower, replica_id * b,
                                                          targets, targets_all, exclude_self=False)
            total_selected = ctx.all_reduce(tf.distribute.ReduceOp.SUM, selected)
            loss = loss_sum / tf.maximum(total_selected, 1.0)
        self.apply_gradients(self.optimizer, tape, loss, self.model.trainable_variables)
        pairs = tf.square(tf.cast(tf.shape(second_all)[0], tf.float32))
        return {"loss": loss, "dac/selected_fraction": selected / pairs,
                "dac/positive_fraction": positive / pairs}

    def _official_step(self, batch, ctx, threshold):
        """The official code's step: one augmented view against itself, squared error over all pairs."""
        views = batch["views"][:, 0]
        targets = tf.gather(self.epoch_targets, batch["index"])
        with tf.GradientTape() as tape:
            feats = self.model(views, training=True)
            k = tf.shape(feats)[1]
            gathered = ctx.all_gather(tf.concat([feats, targets], 1), axis=0)
            feats_all, targets_all = gathered[:, :k], gathered[:, k:]
            error, positive = official_loss_terms(feats, feats_all, threshold, targets, targets_all)
            pairs = tf.square(tf.cast(tf.shape(feats_all)[0], tf.float32))
            loss = error / pairs  # this replica's share of the mean over the global batch's B x B pairs
        self.apply_gradients(self.optimizer, tape, loss, self.model.trainable_variables)
        return {"loss": loss, "dac/positive_fraction": positive / pairs}

    def predict(self, x):
        l = self.model(x, training=False)
        return l / tf.reduce_sum(l, axis=-1, keepdims=True)

    def serving_outputs(self, x):
        l = self.model(x, training=False)
        return {"probabilities": l / tf.reduce_sum(l, axis=-1, keepdims=True), "label_features": l}
