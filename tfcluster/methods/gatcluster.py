"""GATCluster: self-supervised Gaussian-attention network for clustering (Niu et al., 2020).

The two-step learning algorithm (Algorithm 1) is the epoch plan: each epoch
is split into large batches of M samples (stages of order "chunk"), and for
each:
  step 1 (the stage's `begin`: `begin_round`, eager, no gradients, inference mode, un-augmented
    images): label features l [M, K] predicted in sub-batches of m1 and
    concatenated; the balanced targets of eq. (5), the sharpened attention
    targets of eq. (11), and cluster ids from k-means on the M label features
    whose equality is the relation matrix of eq. (6) (identity relations when
    k-means is degenerate: losses.gatcluster.relation_clusters). Only M x K
    targets and M ids are stored -- never the M x M matrix -- so memory does
    not grow with M beyond them;
  step 2 (`train_step`, graph): `repeats` passes of mini-batches of m2 over the
    round's transformed images (each transformed once per round), minimising
    eq. (12): L_R + a1 L_T + a2 L_A + a3 L_E, with L_E = L_E(l) + L_E(l^a),
    by Adam. L_R, L_E use the global mini-batch (gathered across replicas).
Cluster = argmax of the label features (image + label feature modules).
The official code chose its reported model by ground-truth accuracy; here the
last model is the result, and labels are used only for reporting.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfcluster import visualize
from tfcluster.configs.gatcluster import PRESETS, GATClusterConfig
from tfcluster.data import pipeline
from tfcluster.errors import InputError
from tfcluster.losses import gatcluster as gat_loss
from tfcluster.methods.base import Method
from tfcluster.methods.clean_targets import fixed_subset
from tfcluster.plan import EpochPlan, Stage, eager
from tfcluster.nets.batchnorm import BatchNormCalibrator
from tfcluster.nets.gatcluster import build_gatcluster_net, recipe_for

# The attention module's layers (Table 2's "No AM" leaves them untrained).
ATTENTION_LAYERS = ("attention_params", "gaussian_attention", "attention_probabilities_fc1",
                    "attention_probabilities_fc2", "attention_probabilities_fc3")


class GATCluster(Method):
    name = "gatcluster"
    config_class = GATClusterConfig
    presets = PRESETS
    # bfloat16 under auto: its median ACC was no lower than float32's (docs/RESULTS.md, "Speed")
    auto_bfloat16 = True
    num_views = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg, n = self.config, int(self.info.num_samples) or None
        if n is not None and cfg.large_batch > n:
            raise InputError(f"large_batch (M={cfg.large_batch}) is larger than the data ({n} samples)")
        if cfg.large_batch < self.num_clusters:
            raise InputError(f"large_batch (M={cfg.large_batch}) must be at least num_clusters ({self.num_clusters})")

    def check_input_shape(self, input_shape):
        if not self.config.recipe:
            self.require_image_variant(input_shape, recipe_for)

    def build(self):
        cfg, k, m = self.config, self.num_clusters, self.config.large_batch
        try:
            with self.strategy.scope():
                self.model = build_gatcluster_net(self.input_shape, k, recipe=cfg.recipe or None,
                                                  attention_size=cfg.attention_size, width=cfg.width,
                                                  label_channels=cfg.label_channels, alpha=cfg.alpha,
                                                  bn_momentum=cfg.bn_momentum)
                self.optimizer = keras.optimizers.Adam(cfg.learning_rate)
                self.optimizer.build(self._variables())
                # Step 1's targets for the current round: M x K, M x K and M ids (no M x M matrix).
                self.balanced = tf.Variable(tf.zeros([m, k]), trainable=False, name="balanced_targets")
                self.att_targets = tf.Variable(tf.zeros([m, k]), trainable=False, name="attention_targets")
                self.relation_ids = tf.Variable(tf.zeros([m], tf.int32), trainable=False, name="relation_ids")
        except ValueError as e:
            raise InputError(str(e)) from None
        self._target_fn = tf.function(lambda x: self.model(x, training=False)["probabilities"])
        self._calibrator = BatchNormCalibrator(self.model, cfg.calibration_mode)
        self._calibration_subset = fixed_subset(int(self.info.num_samples), int(cfg.calibration_samples))
        self._attention_fn = tf.function(lambda x: self.model(x, training=False)["attention_map"])

    def _variables(self):
        """Trainable variables; without the attention module when it is ablated (No AM)."""
        if self.config.attention:
            return list(self.model.trainable_variables)
        skip = {id(v) for name in ATTENTION_LAYERS for v in self.model.get_layer(name).trainable_variables}
        return [v for v in self.model.trainable_variables if id(v) not in skip]

    def checkpoint_objects(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def export_objects(self):
        return {"model": self.model}

    def epoch_plan(self, epoch, predict_all):
        """Algorithm 1: per large batch, step 1 (targets) then `repeats` passes of step 2; then recalibration."""
        cfg = self.config
        stages = []
        for r, indices in enumerate(pipeline.chunk_order(int(self.info.num_samples), cfg.large_batch, self.seed,
                                                         epoch)):
            stages.append(Stage(step=self.train_step, steps=cfg.repeats * (cfg.large_batch // cfg.batch_size),
                                batch_size=cfg.batch_size, indices=indices, repeats=cfg.repeats,
                                num_views=self.num_views, order="chunk", chunk=r, name=f"large batch {r + 1}",
                                begin=lambda r=r, indices=indices: self.begin_round(epoch, r, indices, predict_all)))
        stages.append(eager(lambda: self.end_epoch(epoch, predict_all), "calibrate"))
        return EpochPlan(tuple(stages))

    # -- step 1 ------------------------------------------------------------------------------
    def compute_targets(self, label_features: np.ndarray, seed: int) -> tuple[dict, dict]:
        """Eqs. (5), (11) and (6)'s cluster ids from label features [M, K]. Returns (targets, logs)."""
        cfg = self.config
        balanced = gat_loss.balanced_targets(label_features)
        attention = gat_loss.attention_targets(label_features)
        kmeans_input = label_features if cfg.kmeans_on == "label" else attention
        ids, info = gat_loss.relation_clusters(kmeans_input, self.num_clusters, seed, cfg.kmeans_init,
                                               cfg.min_cluster_ratio)
        p = label_features.mean(0)
        logs = {"gatcluster/relation_fallback": info["fallback"],
                "gatcluster/kmeans_smallest_cluster": info["smallest_cluster"],
                "gatcluster/target_entropy": float(-(p * np.log(np.maximum(p, 1e-12))).sum()),
                "gatcluster/target_max_probability": float(label_features.max(1).mean())}
        return {"balanced": balanced, "attention": attention, "ids": ids}, logs

    def begin_round(self, epoch, round_index, indices, predict_all):
        cfg = self.config
        if cfg.target_bn == "recalibrate":
            self._calibrator(lambda fn: predict_all(fn, subset=indices, batch_size=cfg.target_batch))
        l = predict_all(self._target_fn, subset=indices, batch_size=cfg.target_batch)
        seed = (self.seed * 1_000_003 + epoch * 7919 + round_index) % (2**31 - 1)
        targets, logs = self.compute_targets(l, seed)
        self.balanced.assign(targets["balanced"])
        self.att_targets.assign(targets["attention"])
        self.relation_ids.assign(targets["ids"])
        return logs

    def end_epoch(self, epoch, predict_all):
        """Recalibration on clean images for the evaluation and the export (each round calibrates for its targets)."""
        if self.config.target_bn == "recalibrate" and self.evaluates_after(epoch):
            self._calibrator(lambda fn: predict_all(fn, subset=self._calibration_subset,
                                                    batch_size=self.config.target_batch))
        return {}

    # -- step 2 ------------------------------------------------------------------------------
    def train_step(self, batch):
        cfg = self.config
        ctx, _, replicas = self.replica_info()
        x = batch["views"][:, 0]
        pos = batch["index"]
        with tf.GradientTape() as tape:
            out = self.model(x, training=True)
            l, la = out["probabilities"], out["attention_probabilities"]
            ids = tf.gather(self.relation_ids, pos)
            # One gather for everything (collectives launched separately may interleave differently per replica).
            k = self.num_clusters
            gathered = ctx.all_gather(tf.concat([l, la, tf.cast(ids, tf.float32)[:, None]], 1), axis=0)
            l_all, la_all, ids_all = gathered[:, :k], gathered[:, k:2 * k], tf.cast(gathered[:, 2 * k], tf.int32)
            big_b = tf.cast(tf.shape(gathered)[0], tf.float32)
            relations = tf.cast(tf.equal(ids[:, None], ids_all[None, :]), tf.float32)

            l_r = gat_loss.relation_bce_sum(l, l_all, relations) / (big_b * big_b)
            l_t = gat_loss.invariance_sum(l, tf.gather(self.balanced, pos)) / big_b
            # L_E is a function of the global batch's mean; each replica carries 1/R of it.
            l_e = gat_loss.entropy(tf.reduce_mean(l_all, 0))
            logs = {"gatcluster/relation": l_r, "gatcluster/invariance": l_t}
            loss = cfg.relation_weight * l_r + cfg.invariance_weight * l_t
            if cfg.attention:
                l_a = gat_loss.attention_bce_sum(la, tf.gather(self.att_targets, pos)) / big_b
                l_ea = gat_loss.entropy(tf.reduce_mean(la_all, 0))
                loss += cfg.attention_weight * l_a + cfg.entropy_weight * (l_e + l_ea) / replicas
                logs.update({"gatcluster/attention": l_a, "gatcluster/entropy_attention": l_ea / replicas})
            else:
                loss += cfg.entropy_weight * l_e / replicas
            logs["gatcluster/entropy"] = l_e / replicas
        self.apply_gradients(self.optimizer, tape, loss, self._variables())
        logs["loss"] = loss
        return logs

    # -- inference -----------------------------------------------------------------------------
    def predict(self, x):
        return self.model(x, training=False)["probabilities"]

    def serving_outputs(self, x):
        out = self.model(x, training=False)
        return {"probabilities": out["probabilities"], "attention_map": out["attention_map"],
                "attention_probabilities": out["attention_probabilities"],
                "attention_params": out["attention_params"]}

    def evaluation_extras(self, probabilities, labels, images, predict_all):
        """Fig. 4: each cluster's most confident images with their attention maps; appendix A's circle plot."""
        if images is None:
            return {}, {}
        clusters, confidence = probabilities.argmax(1), probabilities.max(1)
        per = self.config.gallery_per_cluster
        rows = []
        for c in range(min(self.num_clusters, 32)):
            members = np.flatnonzero(clusters == c)
            rows.append(members[np.argsort(-confidence[members])][:per])
        chosen = np.concatenate(rows) if rows else np.zeros([0], np.int64)
        logs = {}
        if len(chosen):
            maps = predict_all(self._attention_fn, subset=chosen)
            overlaid = visualize.overlay_attention(images[chosen], maps)
            logs["gatcluster/attention_gallery"] = np.split(overlaid, np.cumsum([len(r) for r in rows])[:-1])
        colours = labels if labels is not None else clusters
        logs["gatcluster/label_feature_circle"] = visualize.circle_image(probabilities, colours)
        return {}, logs
