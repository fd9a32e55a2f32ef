"""GATCluster's pseudo-targets and losses (Niu et al., 2020, eqs. 4-11).

Pseudo-targets (step 1 of Algorithm 1, NumPy, on the label features l [M, K]
of a large batch, computed without gradients):
  balanced_targets    eq. (5):  t_ih = (l_ih / z_h) / sum_h' (l_ih' / z_h'),  z_h = sum_j l_jh
  attention_targets   eq. (11): t^a_ih = (l_ih^2 / z_h) / sum_h' (l_ih'^2 / z_h')
  relation_clusters   eq. (6):  cluster ids c from k-means on l; r_ij = [c_i = c_j or i = j]
Losses (step 2, TF, on a mini-batch of transformed images); the *_sum
functions return sums over this replica's samples so that the caller divides
by global counts:
  invariance_sum      eq. (4):  -sum_i l^t_i . t_i
  relation_bce_sum    eq. (7):  BCE(r_ij, cos(l_i, l_j)) summed over rows i (local) x columns j (global)
  entropy             eq. (8):  sum_h p_h log p_h,  p = mean of l over the (global) mini-batch
  attention_bce_sum   eq. (10): sum_i (1/K) sum_h BCE(t^a_ih, l^a_ih)
"""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf

from tfcluster.losses.common import EPS, bce_sum, cosine_similarity


def _balance(scores: np.ndarray) -> np.ndarray:
    l = np.asarray(scores, np.float64)
    z = l.sum(0, keepdims=True)
    t = l / np.maximum(z, EPS)
    return t / np.maximum(t.sum(1, keepdims=True), EPS)


def balanced_targets(l: np.ndarray) -> np.ndarray:
    """Eq. (5): label features [M, K] divided by cluster frequency z_h, renormalised per row."""
    return _balance(l).astype(np.float32)


def attention_targets(l: np.ndarray) -> np.ndarray:
    """Eq. (11): squared label features [M, K] over z_h (of l, not of l^2), renormalised per row."""
    l = np.asarray(l, np.float64)
    z = l.sum(0, keepdims=True)
    t = l ** 2 / np.maximum(z, EPS)
    return (t / np.maximum(t.sum(1, keepdims=True), EPS)).astype(np.float32)


def relation_clusters(features: np.ndarray, num_clusters: int, seed: int, n_init: int = 20,
                      min_ratio: float = 0.1) -> tuple[np.ndarray, dict]:
    """Cluster ids whose equality gives eq. (6)'s relations, with a degenerate-case fallback.

    k-means (scikit-learn, `n_init` restarts) on `features` [M, D]. When it is
    degenerate -- fewer than K distinct clusters (e.g. the features of an
    untrained network collapse to fewer than K distinct points) or a cluster
    with fewer than `min_ratio` * M / K members -- the relations fall back to
    the identity (r_ij = 1 only for i = j: every pair is pushed apart), which
    is what the official code does; the ids are then 0..M-1.

    Returns:
      (ids int32 [M], info dict: "fallback" 0/1, "smallest_cluster", "clusters_found").
    """
    from sklearn.cluster import KMeans

    x = np.asarray(features, np.float64)
    m = len(x)
    identity = np.arange(m, dtype=np.int32)
    if m < num_clusters:
        return identity, {"fallback": 1.0, "smallest_cluster": 0.0, "clusters_found": float(m)}
    with warnings.catch_warnings():
        # "Number of distinct clusters found smaller than n_clusters": handled below.
        warnings.simplefilter("ignore")
        ids = KMeans(num_clusters, n_init=n_init, random_state=seed).fit_predict(x)
    counts = np.bincount(ids, minlength=num_clusters)
    info = {"smallest_cluster": float(counts.min()), "clusters_found": float((counts > 0).sum())}
    if (counts > 0).sum() < num_clusters or counts.min() < min_ratio * m / num_clusters:
        return identity, {**info, "fallback": 1.0}
    return ids.astype(np.int32), {**info, "fallback": 0.0}


def relation_matrix(ids: np.ndarray) -> np.ndarray:
    """Eq. (6) from cluster ids [M]: r [M, M] float, 1 where c_i = c_j (hence on the diagonal)."""
    ids = np.asarray(ids)
    return (ids[:, None] == ids[None, :]).astype(np.float32)


# -- losses (TF) ---------------------------------------------------------------------------------
def invariance_sum(l_t, targets):
    """Eq. (4) summed over samples: -sum_i l^t_i . t_i. l_t, targets: [b, K]."""
    return -tf.reduce_sum(l_t * targets)


def relation_bce_sum(l_rows, l_all, relations):
    """Eq. (7) summed over pairs: rows [b, K] (this replica) against all columns [B, K].

    relations: [b, B] targets in {0, 1}. The cosine similarity of non-negative
    features lies in [0, 1]; it is clipped to [EPS, 1 - EPS] for the logs.
    """
    return bce_sum(cosine_similarity(l_rows, l_all), relations)


def entropy(p):
    """Eq. (8): sum_h p_h log p_h of a distribution p [K] (minimising it spreads the clusters)."""
    p = tf.maximum(p, EPS)
    return tf.reduce_sum(p * tf.math.log(p))


def attention_bce_sum(l_a, targets):
    """Eq. (10) summed over samples: sum_i (1/K) sum_h BCE(t^a_ih, l^a_ih). l_a, targets: [b, K]."""
    k = tf.cast(tf.shape(l_a)[-1], l_a.dtype)
    return bce_sum(l_a, targets) / k
