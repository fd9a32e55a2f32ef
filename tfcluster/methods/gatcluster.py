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

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfcluster import visualize
from tfcluster.data import pipeline
from tfcluster.data.augment import AugmentConfig
from tfcluster.errors import InputError
from tfcluster.losses import gatcluster as gat_loss
from tfcluster.methods.base import BaseConfig, Method
from tfcluster.methods.clean_targets import fixed_subset
from tfcluster.methods.plan import EpochPlan, Stage, eager
from tfcluster.nets.batchnorm import MODES as CALIBRATION_MODES
from tfcluster.nets.batchnorm import BatchNormCalibrator
from tfcluster.nets.gatcluster import RECIPES, build_gatcluster_net, recipe_for

KMEANS_INPUTS = ("label", "attention_target")
TARGET_BN = ("moving", "recalibrate")
ATTENTION_LAYERS = ("attention_params", "gaussian_attention", "attention_probabilities_fc1",
                    "attention_probabilities_fc2", "attention_probabilities_fc3")


@dataclasses.dataclass(frozen=True)
class GATClusterConfig(BaseConfig):
    """GATCluster settings (section 4.2 unless noted).

    Attributes:
      batch_size: m2, the training mini-batch (32).
      large_batch: M, samples per round (1000 STL10 / ImageNet-10, 1500
        ImageNet-Dog, 4000 Cifar10, 6000 Cifar100-20).
      target_batch: m1, the sub-batch of step 1 (memory only: targets do not depend on it).
      repeats: passes of step 2 over each large batch (8 in the official code;
        Algorithm 1 shows one).
      learning_rate: Adam learning rate (1e-3).
      relation_weight, invariance_weight, attention_weight, entropy_weight:
        weights of L_R, L_T (alpha1 = 5), L_A (alpha2 = 5), L_E (alpha3 = 3) in eq. (12).
      attention: train the attention module (False: Table 2's "No AM", no
        L_A and no attention entropy).
      alpha: the Gaussian kernel's alpha (0.05).
      recipe: Table S6 column ("" = by input size: 28 mnist, 32 cifar, >= 64 stl10).
      attention_size: attention-map side (0 = 6 where reachable, else the recipe's map).
      width: channel multiplier of the image feature module (1.0 = Table S6).
      label_channels: the label module's 1x1 conv width (64).
      bn_momentum: BatchNorm momentum (0.9 = PyTorch's default).
      kmeans_on: "label" (the paper: k-means on the label features) or
        "attention_target" (the official code: on eq. (11)'s targets).
      kmeans_init: k-means restarts (20, official code).
      min_cluster_ratio: k-means is degenerate when a cluster has fewer than
        this * M / K members (0.1, official code).
      target_bn: BatchNorm statistics for step 1's inference: "moving" (the
        moving averages of training, as the official code's eval mode) or
        "recalibrate" (population statistics of the round's clean images,
        computed in sub-batches of m1 before the targets: nets.batchnorm;
        also after every epoch, on `calibration_samples` clean images, so that
        evaluation and the export use clean-image statistics too).
      calibration_samples: images for the end-of-epoch recalibration (0: all).
      calibration_mode: how "recalibrate" computes the statistics
        (nets.batchnorm): "one_pass" (one training-mode pass in sub-batches of
        m1; exact when m1 >= the images calibrated on) or "layerwise" (exact
        for any m1, about 7 passes for these networks).
    """

    epochs: int = 460
    batch_size: int = 32
    large_batch: int = 1000
    target_batch: int = 200
    repeats: int = 8
    learning_rate: float = 1e-3
    relation_weight: float = 1.0
    invariance_weight: float = 5.0
    attention_weight: float = 5.0
    entropy_weight: float = 3.0
    attention: bool = True
    alpha: float = 0.05
    recipe: str = ""
    attention_size: int = 0
    width: float = 1.0
    label_channels: int = 64
    bn_momentum: float = 0.9
    kmeans_on: str = "label"
    kmeans_init: int = 20
    min_cluster_ratio: float = 0.1
    target_bn: str = "moving"
    calibration_samples: int = 2000
    calibration_mode: str = "one_pass"

    def validate(self):
        super().validate()
        if self.recipe:
            self.check_choice("recipe", self.recipe, RECIPES)
        self.check_choice("target_bn", self.target_bn, TARGET_BN)
        self.check_choice("calibration_mode", self.calibration_mode, CALIBRATION_MODES)
        self.check_choice("kmeans_on", self.kmeans_on, KMEANS_INPUTS)
        if self.large_batch < self.batch_size:
            raise InputError(f"large_batch (M={self.large_batch}) must be at least batch_size (m2={self.batch_size})")
        if self.target_batch < 1 or self.repeats < 1:
            raise InputError(f"target_batch and repeats must be positive; got {self.target_batch}, {self.repeats}")


# M per dataset (section 4.2); a source name containing the key selects it.
PAPER_LARGE_BATCH = {"imagenet_dog": 1500, "imagenet10": 1000, "stl10": 1000, "cifar100": 6000, "cifar10": 4000}
# The official code's 6000 rounds (large batches) for STL10.
PAPER_ROUNDS = 6000


def _augment(info) -> AugmentConfig:
    """Flip, affine, colour jitter (then grayscale: a preprocessing setting), section 4.2, at the official
    code's strengths. Horizontal flips and hue only for colour images (digits are not mirror-symmetric).
    """
    rgb = info.image_shape[-1] == 3
    return AugmentConfig(flip_horizontal=rgb, rotation=10.0, shift=0.1, scale=(0.8, 1.2), shear=10.0,
                         brightness=0.3, contrast=0.3, hue=0.2 if rgb else 0.0)


def _large_batch_for(info) -> int:
    name = info.name.lower().replace("-", "_")
    for key, m in PAPER_LARGE_BATCH.items():
        if key in name:
            return m
    return 1000


def paper_preset(info) -> GATClusterConfig:
    """Section 4.2: M per dataset, m2 = 32, Adam 1e-3, alphas 0.05 / 5 / 5 / 3, grayscale except ImageNet-Dog.

    Recipe: Table S6's column for the dataset (ImageNet-Dog: its own). Epochs:
    the official code's 6000 large batches (STL10), as epochs of this data.
    Command: tfcluster train --method=gatcluster --preset=paper --dataset=stl10
    Paper (Table 1): STL10 ACC 0.583, ImageNet-10 0.739 (0.762 at 128x128).
    """
    dog = "imagenet_dog" in info.name.lower().replace("-", "_")
    m = min(_large_batch_for(info), max(info.num_samples, 1))
    rounds_per_epoch = max(1, info.num_samples // max(m, 1))
    size = info.image_shape[0] if len(info.image_shape) == 3 else 0
    recipe = ("imagenet_dog_128" if size >= 128 else "imagenet_dog") if dog else ""
    rgb = len(info.image_shape) == 3 and info.image_shape[-1] == 3
    return GATClusterConfig(large_batch=m, epochs=max(1, round(PAPER_ROUNDS / rounds_per_epoch)),
                            augment=_augment(info), grayscale=rgb and not dog, recipe=recipe)


# Training images the cpu preset aims at (step-2 mini-batch images).
CPU_IMAGE_BUDGET = 160_000


def cpu_preset(info) -> GATClusterConfig:
    """CPU preset: 13-15 min on MNIST-5k on 2 cores (median ACC 0.548 of 3 seeds; Fashion-MNIST 0.585).

    Command: tfcluster train --method=gatcluster --preset=cpu --dataset=mnist5k
    Changes from `paper` and why (docs/RESULTS.md):
      - width 0.5: 4x less compute per image;
      - target_bn="recalibrate" (one training-mode pass): with the moving statistics of
        augmented batches some rounds' inference-mode targets collapsed at this budget;
      - M = 1000, m1 = 500, and ~160,000 step-2 images: 4 passes per large batch instead of 8
        on small data (targets refreshed twice as often per image seen), fewer on large data
        so that one epoch fits (Fashion-MNIST: 2 passes, one epoch); evaluation every 2 epochs.
    """
    cfg = paper_preset(info)
    m = min(1000, max(info.num_samples, 1))
    rounds = max(1, info.num_samples // m)
    per_pass = rounds * (m // cfg.batch_size) * cfg.batch_size
    repeats = int(min(4, max(1, round(CPU_IMAGE_BUDGET / per_pass))))
    return dataclasses.replace(cfg, large_batch=m, target_batch=500, repeats=repeats, width=0.5,
                               target_bn="recalibrate", eval_every=2,
                               epochs=max(1, round(CPU_IMAGE_BUDGET / (per_pass * repeats))))


def _ablation(name: str, doc: str, **changes):
    def preset(info) -> GATClusterConfig:
        cfg = cpu_preset(info)
        if name == "color":
            return dataclasses.replace(cfg, grayscale=False)
        return dataclasses.replace(cfg, **changes)

    preset.__doc__ = f"Table 2's {doc!r} at the cpu preset's scale."
    return preset


ABLATIONS = {
    "color": _ablation("color", "Color (colour instead of grayscale inputs)"),
    "no_ti": _ablation("no_ti", "No TI (no transformation invariance)", invariance_weight=0.0),
    "no_sm": _ablation("no_sm", "No SM (no separability maximisation)", relation_weight=0.0),
    "no_am": _ablation("no_am", "No AM (no attention module)", attention=False),
}


class GATCluster(Method):
    name = "gatcluster"
    config_class = GATClusterConfig
    presets = {"paper": paper_preset, "cpu": cpu_preset, **ABLATIONS}
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
        if self.config.target_bn == "recalibrate":
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
