"""DCCM: Deep Comprehensive Correlation Mining (Wu et al., ICCV 2019).

A shallow AlexNet-style network (nets.dccm, supplement Table 4) predicts
z = softmax features. Each step, over the *global* batch:
  - targets: the pseudo-graph W_ij = [cos(z_i, z_j) >= thres1] and the
    pseudo-labels y_i = argmax z_i with confidence mask V_i = [max z_i >= thres2]
    (eqs. 2, 7-8), from the un-augmented images' predictions without gradient;
  - L_PG + alpha L_PL on the original images (eqs. 3, 9) and, with local
    robustness (section 3.3), L'_PG + alpha L'_PL on a transformed view of each
    image, supervised by the *original* view's W, y and V (eq. 12);
  - beta L_MI, the triplet mutual information (eq. 14): a 1x1-conv discriminator
    scores (shallow map, deep vector) pairs of the original images; joint pairs
    are each sample with itself and with its nearest graph neighbour, marginal
    pairs a sample with `mi_negatives` random non-neighbours
    (losses.dccm.sample_pairs, the supplement's Table 6 strategy V1).
Total loss (eq. 15): graph_weight (L_PG + L'_PG) + label_weight (L_PL + L'_PL)
+ mi_weight L_MI, minimised with RMSprop over the network and the discriminator.
Cluster = argmax z (eq. 7).

Where the targets come from (`targets`):
  "batch": the same step's training-mode forward pass of the original images
    (Algorithm 1 of the paper);
  "epoch": predictions of the whole training set in inference mode after each
    epoch, with BatchNorm statistics recalibrated on clean images;
  "chunk": the official code's scheme: per chunk of `chunk_size` images, the
    chunk's predictions in inference mode (BatchNorm calibrated on the chunk),
    then `chunk_repeats` passes of augmented mini-batches against them (the
    official code: chunks of 1,000, 10 passes of batch 32).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfcluster.configs.dccm import PRESETS, DCCMConfig
from tfcluster.evaluation import metrics
from tfcluster.losses import dccm as dccm_loss
from tfcluster.losses.common import bce_sum, cosine_similarity
from tfcluster.methods.base import Method
from tfcluster.methods.clean_targets import CleanTargets, chunk_stages, fixed_subset
from tfcluster.plan import EpochPlan, eager, one_pass
from tfcluster.nets.dccm import MIDiscriminator, build_dccm_net, variant_for


class DCCM(Method):
    name = "dccm"
    config_class = DCCMConfig
    presets = PRESETS
    # Stays float32 under auto: its bfloat16 median ACC is more than 0.02 below float32's, also with a
    # float32 head (docs/RESULTS.md, "Speed").
    auto_bfloat16 = False

    def check_input_shape(self, input_shape):
        self.require_image_variant(input_shape, variant_for)

    @property
    def num_views(self) -> int:
        """One transformed view per image with local robustness (eq. 12), else none."""
        return 1 if self.config.local_robustness else 0

    def build(self):
        cfg = self.config
        with self.strategy.scope():
            self.model = build_dccm_net(self.input_shape, self.num_clusters, width=cfg.width,
                                        bn_momentum=cfg.bn_momentum, logits_bn=cfg.logits_bn, shallow=cfg.shallow,
                                        deep=cfg.deep)
            shallow_shape = self.model.output["shallow"].shape
            deep_dim = self.model.output["deep"].shape[-1]
            self.discriminator = MIDiscriminator(cfg.disc_units, name="mi_discriminator")
            self.discriminator.build((shallow_shape, (None, deep_dim)))
            self.optimizer = keras.optimizers.RMSprop(cfg.learning_rate, rho=cfg.rho)
            self.optimizer.build(self._variables())
        self.clean_targets = CleanTargets(self.model, self.info.num_samples, cfg.calibration_samples,
                                          cfg.calibration_mode, output=lambda out: out["probabilities"])
        self._report_subset = fixed_subset(int(self.info.num_samples), int(cfg.report_samples))

    def _variables(self):
        """What the optimizer trains: the network, and the discriminator when L_MI is on."""
        disc = list(self.discriminator.trainable_variables) if self.config.mi_weight else []
        return list(self.model.trainable_variables) + disc

    def checkpoint_objects(self):
        return {"model": self.model, "discriminator": self.discriminator, "optimizer": self.optimizer}

    def export_objects(self):
        return {"model": self.model}

    # -- eager stages ---------------------------------------------------------------------
    def epoch_plan(self, epoch, predict_all):
        """[(the epoch's targets and) steps over all samples, end-of-epoch predictions];
        targets="chunk": [per chunk its targets and passes over it, end-of-epoch predictions]."""
        cfg = self.config
        if cfg.targets == "chunk":
            stages = chunk_stages(self.train_step, self.info.num_samples, cfg.chunk_size, cfg.chunk_repeats,
                                  cfg.batch_size, self.num_views, self.seed, epoch,
                                  lambda c, indices: self.begin_chunk(indices, predict_all))
            stages.append(eager(lambda: self.end_epoch(epoch, predict_all), "targets"))
            return EpochPlan(tuple(stages))
        return one_pass(self.train_step, self.info.num_samples, self.config.batch_size, self.num_views,
                        begin=lambda: self.begin_epoch(epoch, predict_all),
                        end=lambda: self.end_epoch(epoch, predict_all), end_name="targets")

    def begin_epoch(self, epoch, predict_all):
        """With targets="epoch": the clean images' predictions become the epoch's targets."""
        if self.config.targets != "epoch":
            return {}
        probs = self.clean_targets.next(predict_all).astype(np.float32)
        self.keep_targets("epoch_targets", probs)
        return self._target_logs(probs, "dccm/epoch_targets_")

    def begin_chunk(self, indices, predict_all):
        """targets="chunk": the chunk's clean predictions [M, K] become its rows of the targets."""
        probs, targets = self.clean_targets.chunk_targets(predict_all, indices)
        self.keep_targets("epoch_targets", targets)
        return {"dccm/chunk_confident_fraction": float((probs.max(1) >= self.config.thres2).mean())}

    def _target_logs(self, probs, prefix):
        """Confident fraction, graph edge fraction (on a fixed sample) and the largest-probability histogram."""
        top = probs.max(1)
        sample = probs if self._report_subset is None else probs[self._report_subset]
        graph = self._graph(sample)
        n = len(sample)
        return {f"{prefix}confident_fraction": float((top >= self.config.thres2).mean()),
                f"{prefix}edge_fraction": float((graph.sum() - n) / max(n * (n - 1), 1)),
                f"{prefix}max_probability": top}  # the paper's Fig. 6a

    def _graph(self, probs):
        z = probs / np.maximum(np.linalg.norm(probs, axis=1, keepdims=True), 1e-12)
        return (z @ z.T) >= self.config.thres1

    def end_epoch(self, epoch, predict_all):
        """BatchNorm calibrated for inference ("epoch"/"chunk" targets) and the whole set's target
        statistics; "chunk" calibrates only before an evaluation and skips the statistics (a pass
        over all images; each chunk logs its own)."""
        if self.config.targets == "chunk":  # each chunk calibrates on its own; this is for the evaluation
            if self.evaluates_after(epoch):
                self.clean_targets.calibrate(predict_all)
            return {}
        if self.config.targets == "epoch":
            self.clean_targets.calibrate(predict_all)
        probs = predict_all()
        if self.config.targets == "epoch" and epoch + 1 < self.num_epochs():
            self.clean_targets.keep(probs)
        return self._target_logs(probs, "dccm/")

    def evaluation_extras(self, probabilities, labels, images, predict_all):
        """BCubed precision/recall of the pseudo-graph on a fixed sample (the paper's Fig. 5; labelled data only)."""
        if labels is None:
            return {}, {}
        if self._report_subset is not None:
            probabilities, labels = probabilities[self._report_subset], labels[self._report_subset]
        precision, recall = metrics.graph_bcubed(labels, self._graph(probabilities))
        return {"pseudo_graph_bcubed_precision": precision, "pseudo_graph_bcubed_recall": recall}, {}

    # -- graph step ---------------------------------------------------------------------------
    def train_step(self, batch):
        cfg = self.config
        ctx, replica_id, _ = self.replica_info()
        x = batch["image"]
        b = tf.shape(x)[0]
        offset = replica_id * b
        with tf.GradientTape() as tape:
            out = self.model(x, training=True)
            z = out["probabilities"]
            if cfg.targets in ("epoch", "chunk"):
                target = tf.gather(self.epoch_targets, batch["index"])
            else:
                target = tf.stop_gradient(z)
            parts = [z, target, tf.cast(out["deep"], tf.float32)]  # float32 under mixed precision
            if cfg.local_robustness:
                z_t = self.model(batch["views"][:, 0], training=True)["probabilities"]
                parts.append(z_t)
            # One gather for everything: independently launched collectives may run in
            # different orders on different replicas.
            sizes = [p.shape[-1] for p in parts]
            gathered = tf.split(ctx.all_gather(tf.concat(parts, 1), axis=0), sizes, axis=1)
            z_all, target_all, deep_all = gathered[:3]
            big_b = tf.shape(z_all)[0]
            big_bf = tf.cast(big_b, tf.float32)
            pairs = big_bf * (big_bf - 1.0)

            target_sim = cosine_similarity(target, target_all)  # [b, B]
            graph = dccm_loss.pseudo_graph(target_sim, cfg.thres1)
            labels, confident = dccm_loss.pseudo_labels(target, cfg.thres2)
            not_self = dccm_loss.off_diagonal_mask(b, big_b, offset)

            pg = bce_sum(cosine_similarity(z, z_all), graph, not_self) / pairs
            pl = dccm_loss.label_ce_sum(z, labels, confident) / big_bf
            logs = {"dccm/graph": pg, "dccm/label": pl}
            if cfg.local_robustness:
                z_t_all = gathered[3]
                logs["dccm/graph_transformed"] = bce_sum(
                    cosine_similarity(z_t, z_t_all), graph, not_self) / pairs
                logs["dccm/label_transformed"] = dccm_loss.label_ce_sum(z_t, labels, confident) / big_bf
            loss = cfg.graph_weight * (pg + logs.get("dccm/graph_transformed", 0.0))
            if cfg.label_weight:
                loss += cfg.label_weight * (pl + logs.get("dccm/label_transformed", 0.0))
            if cfg.mi_weight:
                mi, mi_logs = self._mi_loss(ctx, out["shallow"], out["deep"], deep_all, graph, target_sim, offset)
                loss += cfg.mi_weight * mi
                logs.update(mi_logs)
            # Sum over replicas = the global-batch loss (every term is normalised by global counts).
        self.apply_gradients(self.optimizer, tape, loss, self._variables())
        logs["loss"] = loss
        logs["dccm/confident_fraction"] = tf.reduce_sum(confident) / big_bf
        edges = tf.reduce_sum(graph * not_self)  # ordered pairs (i, j), i != j, of the global batch
        logs["dccm/graph_edges"] = edges
        logs["dccm/edge_fraction"] = edges / pairs
        return logs

    def _mi_loss(self, ctx, shallow, deep, deep_all, graph, target_sim, offset):
        """L_MI (eq. 14) for this replica's anchors; returns (loss share, logs)."""
        cfg = self.config
        seed = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        pos_index, pos_valid, neg_index, neg_valid = dccm_loss.sample_pairs(graph, target_sim, offset,
                                                                            cfg.mi_negatives, seed)
        disc = self.discriminator
        hs = disc.encode_shallow(shallow)  # [b, h, w, u]
        hd_all = disc.encode_deep(deep_all)  # [B, u]
        self_scores = disc.score(hs, disc.encode_deep(deep))
        pos_scores = disc.score(hs, tf.gather(hd_all, pos_index))
        n = cfg.mi_negatives
        # Each anchor's code n times ([b n, h, w, u], anchor-major) by a gather, not tf.repeat: under op
        # determinism the gradient of tf.repeat's broadcast (a sum over the repeat axis) differed in 3 of 2,000
        # repeated steps on one batch (CPU), the gather's in 0 of 4,000.
        anchors = tf.repeat(tf.range(tf.shape(hs)[0]), n)
        neg_scores = disc.score(tf.gather(hs, anchors), tf.gather(hd_all, tf.reshape(neg_index, [-1])))
        joint, joint_count, marginal, marginal_count = dccm_loss.jsd_mi_terms(
            tf.concat([self_scores, pos_scores], 0), tf.concat([tf.ones_like(pos_valid), pos_valid], 0),
            neg_scores, tf.reshape(neg_valid, [-1]))
        counts = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack([joint_count, marginal_count,
                                                                      tf.cast(tf.shape(pos_valid)[0], tf.float32)]))
        joint_term = joint / tf.maximum(counts[0], 1.0)
        marginal_term = marginal / tf.maximum(counts[1], 1.0)
        mi_loss = joint_term + marginal_term
        return mi_loss, {"dccm/mi": mi_loss, "dccm/mi_joint": joint_term, "dccm/mi_marginal": marginal_term,
                         "dccm/mi_neighbour_fraction": tf.reduce_sum(pos_valid) / counts[2]}

    # -- inference -----------------------------------------------------------------------------
    def predict(self, x):
        return self.model(x, training=False)["probabilities"]

    def serving_outputs(self, x):
        out = self.model(x, training=False)
        return {"probabilities": out["probabilities"], "conv_features": out["conv"], "fc_features": out["fc"]}
