"""Losses of the precise-feature clustering GAN (Gan et al., eqs. 5-8).

  L_D = E_fake[D(x~)] - E_real[D(x)] + lambda E_xhat[(||grad_xhat D(xhat)||_2 - 1)^2]   (5)
        xhat = eps x + (1 - eps) x~, eps ~ U[0, 1] per example (Algorithm 1, line 7)
  L_C = -(1/n) sum_i sum_j y_ij log q(y_j | x~_i)                                      (6)
        y = the fake labels fed to G, x~ = G(y, z)
  L_G = -E_fake[D(x~)] + eta L_C                                                       (7)
  eta_t = eta0 * gamma^floor(t / tau)                                                  (8)

Eq. (8) is printed as the update `eta <- eta gamma^floor(t/tau)` after every
generator step, which read literally compounds every step; the paper's text
("multiply it by 1.2 every 30,000 iterations") is the staircase implemented here.

Every function returns per-example terms or sums, so that a replica's share of
a global batch is `sum / global_batch` (the loop SUM-reduces over replicas).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Added under the square root of the gradient's squared norm: the norm's own
# gradient, g / ||g||, is then finite even where g = 0.
NORM_EPS = 1e-12


def safe_norm(g, axis):
    """sqrt(sum g^2 + NORM_EPS) over `axis`: the L2 norm, differentiable at 0."""
    return tf.sqrt(tf.reduce_sum(tf.square(g), axis=axis) + NORM_EPS)


def interpolate(real, fake, eps):
    """xhat = eps x + (1 - eps) x~; real, fake [B, ...], eps [B]."""
    shape = [-1] + [1] * (len(real.shape) - 1)
    e = tf.reshape(tf.cast(eps, real.dtype), shape)
    return e * real + (1.0 - e) * fake


def gradient_penalty_terms(critic, xhat, training: bool = True):
    """(||grad_xhat D(xhat)||_2 - 1)^2 per example [B], via a nested GradientTape.

    The inner tape records D(xhat) and gives its gradient wrt xhat; run under an
    outer tape, the result stays differentiable wrt the critic's weights
    (double back-propagation), which is what makes the penalty train D.
    """
    with tf.GradientTape() as inner:
        inner.watch(xhat)
        scores = critic(xhat, training=training)
    grads = inner.gradient(scores, xhat)
    norms = safe_norm(grads, axis=list(range(1, len(xhat.shape))))
    return tf.square(norms - 1.0)


def critic_loss_terms(d_real, d_fake, penalty, gp_weight: float):
    """Per-example L^(i) of Algorithm 1, line 8: D(x~) - D(x) + lambda (||.|| - 1)^2. Shapes [B]."""
    return tf.reshape(d_fake, [-1]) - tf.reshape(d_real, [-1]) + gp_weight * penalty


def cross_entropy_terms(labels, logits):
    """-log q(y_i | x_i) per example [B] from integer labels [B] and logits [B, K] (eq. 6)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits)


def generator_loss_terms(d_fake, ce_terms, eta):
    """Per-example -D(x~) + eta (-log q(y|x~)) (Algorithm 1, line 26; eq. 7). Shapes [B]."""
    return -tf.reshape(d_fake, [-1]) + tf.cast(eta, d_fake.dtype) * ce_terms


def eta_at(step, eta0: float, gamma: float, tau: int):
    """The staircase of eq. (8) at generator step t (0-based: steps done so far): eta0 gamma^floor(t/tau)."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if isinstance(step, (int, np.integer)):
        return float(eta0) * float(gamma) ** (int(step) // int(tau))
    t = tf.cast(step, tf.int64)
    return tf.cast(eta0, tf.float32) * tf.pow(tf.cast(gamma, tf.float32), tf.cast(t // int(tau), tf.float32))


def normalized_prior(prior, num_clusters: int) -> np.ndarray:
    """The cluster prior p(y) as probabilities [K]: uniform for an empty prior, else validated and normalised."""
    if prior is None or len(prior) == 0:
        return np.full(num_clusters, 1.0 / num_clusters)
    p = np.asarray(prior, np.float64)
    if p.shape != (num_clusters,):
        raise ValueError(f"the cluster prior has {p.size} entries but there are {num_clusters} clusters")
    if not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise ValueError(f"the cluster prior must be positive (no empty cluster, Assumption 1); got {tuple(p)}")
    return p / p.sum()
