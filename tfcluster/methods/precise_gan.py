"""Precise-feature clustering with a conditional WGAN-GP (Gan, Dong, Zhou, Gao and Dong).

"Learning the Precise Feature for Cluster Assignment", Algorithm 1. Three
networks (nets/precise_gan.py): a generator G(y, z) of a cluster id y ~ p(y)
and noise z ~ N(0, I), a critic D and a classifier C. One training step of the
loop is one generator iteration t:
  N_critic critic steps    on L_D, eq. (5), with a gradient penalty on random
                           interpolates of real and generated samples;
  N_class classifier steps on L_C, eq. (6): cross-entropy of C on generated
                           samples against their fake labels y;
  one generator step       on L_G = -E[D(G(y, z))] + eta_t L_C, eq. (7), with
                           the staircase eta_t = eta0 gamma^floor(t / tau), eq. (8).
Each network has its own Adam optimizer, whose `iterations` counts its own
steps (critic N_critic t, classifier N_class t, generator t); all three and
their optimizers are checkpointed. The clustering is argmax C(x) on real data.

Data layout: each loop step takes N_critic x n real samples (the critic's n per
step) stored as [n, N_critic, ...] (sample j of critic step i at row j*N_critic+i),
so that splitting a global batch over replicas splits every critic step's batch
n the same way; y, z and the interpolation eps are drawn for the whole global
batch from stateless seeds (run seed, generator step, sub-step) and each replica
takes its rows. A step on R replicas therefore equals the step on one device,
gradient penalty included (it is per example; the sum is over the global batch).

The EMD estimate of the paper's Fig. 3 (b, f) is E D(real) - E D(fake) with
real samples the critic never trains on: `holdout` samples are kept out of the
epoch plan's stage (`PreciseGAN.held_out`).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfcluster.configs.precise_gan import PRESETS, PreciseGANConfig
from tfcluster.errors import InputError
from tfcluster.evaluation import metrics
from tfcluster.losses import precise_gan as gan_loss
from tfcluster.methods.base import Method
from tfcluster.methods.clean_targets import fixed_subset
from tfcluster.plan import EpochPlan, Stage, eager
from tfcluster.nets.precise_gan import build_classifier, build_critic, build_generator, variant_for


class PreciseGAN(Method):
    name = "precise_gan"
    config_class = PreciseGANConfig
    presets = PRESETS
    # Stays float32 under auto: its bfloat16 median ACC was at the 0.02 threshold below float32's, for a step
    # barely faster (docs/RESULTS.md, "Speed")
    auto_bfloat16 = False
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.config
        try:
            self.prior = gan_loss.normalized_prior(cfg.prior, self.num_clusters)
        except ValueError as e:
            raise InputError(str(e)) from None
        replicas = self.strategy.num_replicas_in_sync
        if cfg.batch_size % replicas:
            raise InputError(f"batch_size (n={cfg.batch_size}) must be divisible by the {replicas} replicas")
        n = int(self.info.num_samples)
        if n and cfg.holdout >= n:
            raise InputError(f"holdout={cfg.holdout} leaves no training data ({n} samples)")
        if n and self.samples_per_iteration() > n - cfg.holdout:
            raise InputError(f"one generator iteration needs n x N_critic = {self.samples_per_iteration()} real "
                             f"samples, more than the {n - cfg.holdout} training samples; lower batch_size")

    def check_input_shape(self, input_shape):
        if self.info.modality == "image":
            self.require_image_variant(input_shape, variant_for)
        elif len(input_shape) != 1:
            raise InputError(f"precise_gan takes vectors [D] or images [H, W, C]; got inputs of shape {input_shape}")

    # -- schedule ---------------------------------------------------------------------------------
    def samples_per_iteration(self) -> int:
        """Real samples one generator iteration takes: n for each of the N_critic critic steps."""
        return int(self.config.batch_size * self.config.critic_iterations)

    def _per_pass(self) -> int:
        """Generator iterations in one pass over the training samples."""
        return max(1, (int(self.info.num_samples) - int(self.config.holdout)) // self.samples_per_iteration())

    def passes_per_epoch(self) -> int:
        """An epoch of the loop is about eval_every_iterations: whole passes (the loop's
        per-epoch work, a new input pipeline, is then paid once per evaluation, not per pass)."""
        return max(1, round(self.config.eval_every_iterations / self._per_pass()))

    def iterations_per_epoch(self) -> int:
        n = int(self.info.num_samples) - int(self.config.holdout)
        return max(1, self.passes_per_epoch() * n // self.samples_per_iteration())

    def num_epochs(self) -> int:
        return math.ceil(self.config.generator_iterations / self.iterations_per_epoch())

    def finished(self) -> bool:
        return int(self.g_optimizer.iterations.numpy()) >= self.config.generator_iterations

    def held_out(self) -> np.ndarray:
        """Samples kept out of training (for the EMD estimate): a fixed random subset."""
        subset = fixed_subset(int(self.info.num_samples), int(self.config.holdout))
        return np.zeros([0], np.int64) if subset is None else subset

    def epoch_plan(self, epoch, predict_all):
        """[`passes_per_epoch` passes over the non-held-out samples, cut to stop at N iterations; Fig. 3's curves]."""
        held = self.held_out()
        keep = np.setdiff1d(np.arange(int(self.info.num_samples)), held) if len(held) else None
        steps = max(0, min(self.iterations_per_epoch(),
                           self.config.generator_iterations - epoch * self.iterations_per_epoch()))
        return EpochPlan((
            Stage(step=self.train_step, steps=steps, batch_size=self.samples_per_iteration(), indices=keep,
                  repeats=self.passes_per_epoch(), name="iterations"),
            eager(lambda: self.end_epoch(epoch, predict_all), "curves")))

    # -- build --------------------------------------------------------------------------------------
    def build(self):
        cfg, k = self.config, self.num_clusters
        if self.preprocessor is None:
            raise InputError("precise_gan needs the run's Preprocessor (preprocessor= when it is made)")
        shape = self.input_shape
        bias = None
        if cfg.generator_output_bias == "data_mean" and self.info.modality == "image":
            mean = np.clip(np.asarray(self.preprocessor.mean, np.float64), 1e-3, 1 - 1e-3)
            bias = np.log(mean / (1 - mean)).astype(np.float32)
        with self.strategy.scope():
            self.generator = build_generator(shape, k, cfg.noise_dim, dim=cfg.dim, hidden=cfg.hidden,
                                             batchnorm=cfg.generator_batchnorm, output_bias=bias)
            self.critic = build_critic(shape, dim=cfg.dim, hidden=cfg.hidden)
            self.classifier = build_classifier(shape, k, dim=cfg.dim, hidden=cfg.hidden)
            self.d_optimizer, self.c_optimizer, self.g_optimizer = (
                keras.optimizers.Adam(cfg.learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2, name=f"{n}_adam")
                for n in ("critic", "classifier", "generator"))
            self.d_optimizer.build(self.critic.trainable_variables)
            self.c_optimizer.build(self.classifier.trainable_variables)
            self.g_optimizer.build(self.generator.trainable_variables)
        self._log_prior = tf.constant(np.log(self.prior)[None, :], tf.float32)
        self._mean = tf.constant(self.preprocessor.mean, tf.float32)
        self._std = tf.constant(self.preprocessor.std, tf.float32)
        self._is_image = self.info.modality == "image"
        self._critic_fn = tf.function(lambda x: self.critic(x, training=False)[:, 0])
        self._generate_fn = tf.function(self._generate_model_space, reduce_retracing=True)

    def checkpoint_objects(self):
        return {"generator": self.generator, "critic": self.critic, "classifier": self.classifier,
                "critic_optimizer": self.d_optimizer, "classifier_optimizer": self.c_optimizer,
                "generator_optimizer": self.g_optimizer}

    def export_objects(self):
        return {"generator": self.generator, "classifier": self.classifier}

    # -- sampling ---------------------------------------------------------------------------------
    def to_model_space(self, samples):
        """G's outputs -> the space D and C see: pixels in [0, 1] standardised as the real images are."""
        if self._is_image:
            return (samples - self._mean) / self._std
        return samples  # vectors: G is linear and generates standardised vectors directly

    def to_raw_space(self, samples):
        """G's outputs -> the data's own units: pixels in [0, 1], or de-standardised vectors."""
        return samples if self._is_image else samples * self._std + self._mean

    def sample_latents(self, count: int, seed):
        """(ids [count] int32, one-hot y [count, K], z [count, Z], eps [count]) from a stateless seed [2]."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        ids = tf.random.stateless_categorical(self._log_prior, count, seeds[0], dtype=tf.int32)[0]
        z = tf.random.stateless_normal([count, self.config.noise_dim], seeds[1])
        eps = tf.random.stateless_uniform([count], seeds[2])
        return ids, tf.one_hot(ids, self.num_clusters), z, eps

    def _generate_model_space(self, one_hot, z):
        return self.to_model_space(self.generator([one_hot, z], training=False))

    # -- Algorithm 1 ---------------------------------------------------------------------------------
    def _seed(self, t, sub: int):
        return tf.stack([tf.cast(self.seed, tf.int64), tf.cast(t, tf.int64) * 64 + sub])

    def _local(self, global_tensor):
        """This replica's rows of a tensor drawn for the global batch."""
        _, rid, replicas = self.replica_info()
        per = self.config.batch_size // replicas
        return global_tensor[rid * per:(rid + 1) * per]

    def _local_latents(self, t, sub: int):
        ids, y, z, eps = self.sample_latents(self.config.batch_size, self._seed(t, sub))
        return self._local(ids), self._local(y), self._local(z), self._local(eps)

    def critic_step(self, real, t, i: int) -> dict:
        """Lines 2-11: one Adam step of D on eq. (5) over n real and n generated samples."""
        cfg = self.config
        _, y, z, eps = self._local_latents(t, i)
        fake = self.to_model_space(self.generator([y, z], training=True))
        with tf.GradientTape() as tape:
            d_real, d_fake = self.critic(real, training=True), self.critic(fake, training=True)
            penalty = gan_loss.gradient_penalty_terms(self.critic, gan_loss.interpolate(real, fake, eps))
            terms = gan_loss.critic_loss_terms(d_real, d_fake, penalty, cfg.gp_weight)
            loss = tf.reduce_sum(terms) / cfg.batch_size
        self.apply_gradients(self.d_optimizer, tape, loss, self.critic.trainable_variables)
        n = float(cfg.batch_size)
        return {"critic/loss": loss, "critic/gradient_penalty": tf.reduce_sum(penalty) / n,
                "critic/emd_train": (tf.reduce_sum(d_real) - tf.reduce_sum(d_fake)) / n}

    def classifier_step(self, t, i: int) -> dict:
        """Lines 12-20: one Adam step of C on eq. (6) over n generated samples and their fake labels."""
        cfg = self.config
        ids, y, z, _ = self._local_latents(t, cfg.critic_iterations + i)
        fake = self.to_model_space(self.generator([y, z], training=True))
        with tf.GradientTape() as tape:
            logits = self.classifier(fake, training=True)["logits"]
            ce = gan_loss.cross_entropy_terms(ids, logits)
            loss = tf.reduce_sum(ce) / cfg.batch_size
        self.apply_gradients(self.c_optimizer, tape, loss, self.classifier.trainable_variables)
        correct = tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), ids), tf.float32)
        return {"classifier/cross_entropy": loss, "classifier/fake_accuracy": tf.reduce_sum(correct) / cfg.batch_size}

    def generator_step(self, t) -> dict:
        """Lines 21-29: one Adam step of G on eq. (7), L_G = -E D(G(y, z)) + eta_t L_C."""
        cfg = self.config
        _, _, replicas = self.replica_info()
        ids, y, z, _ = self._local_latents(t, cfg.critic_iterations + cfg.classifier_iterations)
        eta = gan_loss.eta_at(t, cfg.eta0, cfg.eta_gamma, cfg.eta_tau)
        with tf.GradientTape() as tape:
            fake = self.to_model_space(self.generator([y, z], training=True))
            d_fake = self.critic(fake, training=True)
            ce = gan_loss.cross_entropy_terms(ids, self.classifier(fake, training=True)["logits"])
            loss = tf.reduce_sum(gan_loss.generator_loss_terms(d_fake, ce, eta)) / cfg.batch_size
        self.apply_gradients(self.g_optimizer, tape, loss, self.generator.trainable_variables)
        return {"loss": loss, "generator/reality": -tf.reduce_sum(d_fake) / cfg.batch_size,
                "generator/entropy": tf.reduce_sum(ce) / cfg.batch_size, "generator/eta": eta / replicas}

    def train_step(self, batch):
        cfg = self.config
        t = self.g_optimizer.iterations  # generator steps done so far
        x = batch["image"]
        real = tf.reshape(x, tf.concat([[-1, cfg.critic_iterations], tf.shape(x)[1:]], 0))
        logs = {}
        for i in range(cfg.critic_iterations):
            logs.update(self.critic_step(real[:, i], t, i))
        for i in range(cfg.classifier_iterations):
            logs.update(self.classifier_step(t, i))
        logs.update(self.generator_step(t))
        return logs

    # -- evaluation ---------------------------------------------------------------------------------
    def _fakes(self, count: int, seed: int):
        ids, y, z, _ = self.sample_latents(count, tf.constant([seed, 2**30], tf.int64))
        return ids.numpy(), self._generate_fn(y, z)

    def curves(self, predict_all, step: int) -> dict:
        """Fig. 3's curves on fresh generated samples: fake accuracy, entropy, EMD on held-out real data."""
        cfg = self.config
        ids, fakes = self._fakes(cfg.eval_fakes, step)
        probs = self.classifier(fakes, training=False)["probabilities"].numpy()
        held = self.held_out()
        tag = "eval/emd_heldout"
        if not len(held):
            held, tag = np.arange(min(cfg.eval_fakes, int(self.info.num_samples))), "eval/emd_training_samples"
        d_real = predict_all(self._critic_fn, subset=held)
        d_fake = self._critic_fn(fakes).numpy()
        return {"eval/fake_accuracy": float((probs.argmax(1) == ids).mean()),
                "eval/fake_cross_entropy": float(-np.log(np.maximum(probs[np.arange(len(ids)), ids], 1e-12)).mean()),
                tag: float(d_real.mean() - d_fake.mean()),
                "eval/eta": gan_loss.eta_at(step, cfg.eta0, cfg.eta_gamma, cfg.eta_tau)}

    def end_epoch(self, epoch, predict_all):
        last = epoch + 1 == self.num_epochs() or self.finished()
        if last or (epoch + 1) % self.config.eval_every == 0:
            return self.curves(predict_all, int(self.g_optimizer.iterations.numpy()))
        return {}

    def evaluation_extras(self, probabilities, labels, images, predict_all):
        """The official code's accuracy (`batch_purity`: purity in batches of 100, averaged; with labels,
        for reporting only) and a gallery of generated images: one row per cluster id (Fig. 3 d, h)."""
        extra = {}
        if labels is not None:
            extra["batch_purity"] = metrics.batch_purity(labels, probabilities.argmax(1), batch_size=100)
        if images is None:
            return extra, {}
        k, per = min(self.num_clusters, 32), self.config.samples_per_cluster
        ids = np.repeat(np.arange(k), per)
        z = tf.random.stateless_normal([len(ids), self.config.noise_dim], [self.seed, 2**29])
        pixels = self.generator([tf.one_hot(ids, self.num_clusters), z], training=False).numpy()
        return extra, {"precise_gan/samples_per_cluster": list(pixels.reshape((k, per) + pixels.shape[1:]))}

    # -- inference ---------------------------------------------------------------------------------
    def predict(self, x):
        return self.classifier(x, training=False)["probabilities"]

    def serving_signatures(self) -> dict:
        """`generate` (cluster ids -> samples, fresh noise) and `generate_from_noise` (ids and z -> samples)."""
        k, zdim = self.num_clusters, self.config.noise_dim

        def outputs(ids, z):
            ids = tf.cast(ids, tf.int32)
            tf.debugging.assert_non_negative(ids, message="cluster ids must be in [0, K)")
            tf.debugging.assert_less(ids, k, message="cluster ids must be in [0, K)")
            samples = self.to_raw_space(self.generator([tf.one_hot(ids, k), z], training=False))
            if self._is_image:
                return {"images": samples,
                        "pixels": tf.cast(tf.round(tf.clip_by_value(samples, 0.0, 1.0) * 255.0), tf.uint8)}
            return {"samples": samples}

        ids_spec = tf.TensorSpec([None], tf.int64, name="cluster")

        @tf.function(input_signature=[ids_spec])
        def generate(cluster):
            return outputs(cluster, tf.random.normal([tf.shape(cluster)[0], zdim]))

        @tf.function(input_signature=[ids_spec, tf.TensorSpec([None, zdim], tf.float32, name="noise")])
        def generate_from_noise(cluster, noise):
            return outputs(cluster, noise)

        return {"generate": generate, "generate_from_noise": generate_from_noise}
