"""DBC's soft k-means scores, boosted targets and KL loss (Li et al., 2017, eqs. 1-3).

  s_ij = (1 + ||z_i - mu_j||^2 / v)^(-(v+1)/2) / sum_j' (...)              (1)
  r_ij = (s_ij^alpha / n_j) / sum_j' (s_ij'^alpha / n_j')                  (2)
  L    = KL(R || S) = sum_i sum_j r_ij log(r_ij / s_ij)                     (3)
with the balance normalisations of section 4.3.2:
  "none":    n_j = 1
  "soft":    n_j = sum_i s_ij          (DEC's)
  "boosted": n_j = sum_i s_ij^alpha    (the paper's, default)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfcluster.configs.dbc import NORMALIZATIONS

EPS = 1e-12


def soft_assign(z, mu, v: float = 1.0):
    """Student-t soft scores, eq. (1).

    Args:
      z: float [B, D] features; mu: float [K, D] centres; v: degrees of freedom.
    Returns:
      float [B, K], rows summing to 1.
    """
    d2 = tf.reduce_sum(tf.square(z[:, None, :] - mu[None, :, :]), axis=-1)
    kernel = tf.pow(1.0 + d2 / v, -(v + 1.0) / 2.0)
    return kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)


def boosted_target(s: np.ndarray, alpha: float = 2.0, normalization: str = "boosted") -> np.ndarray:
    """Boosted target distribution, eq. (2), over the whole training set.

    Args:
      s: [N, K] soft scores of every training sample.
      alpha: boosting factor (> 1).
      normalization: "none", "soft" or "boosted" (see module docstring).
    Returns:
      [N, K] float64, rows summing to 1.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    s = np.asarray(s, np.float64)
    boosted = s ** alpha
    if normalization == "none":
        n = np.ones(s.shape[1])
    elif normalization == "soft":
        n = s.sum(0)
    else:
        n = boosted.sum(0)
    r = boosted / np.maximum(n, EPS)
    return r / r.sum(1, keepdims=True)


def kl_rows(r, s):
    """Per-sample KL(r_i || s_i) = sum_j r_ij log(r_ij / s_ij); [B, K] -> [B]."""
    r = tf.convert_to_tensor(r)
    s = tf.cast(s, r.dtype)
    return tf.reduce_sum(tf.math.xlogy(r, r) - r * tf.math.log(tf.maximum(s, EPS)), axis=1)


def changed_fraction(previous: np.ndarray, current: np.ndarray) -> float:
    """Fraction of hard assignments that differ (the stop rule's statistic)."""
    return float(np.mean(np.asarray(previous) != np.asarray(current)))
