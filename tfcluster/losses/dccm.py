"""DCCM's losses: pseudo-graph, pseudo-label and triplet mutual information.

Wu et al., "Deep Comprehensive Correlation Mining for Image Clustering" (ICCV 2019).
For prediction features z_i (softmax outputs, eq. 1) of a global batch:
  S_ij = cos(z_i, z_j);  W_ij = [S_ij >= thres1]                       (eq. 2)
  L_PG = mean over pairs i != j of BCE(W_ij, S_ij)                       (eq. 3)
  y_i = argmax_k z_ik, p_i = max_k z_ik, V_i = [p_i >= thres2]          (eqs. 7-8)
  L_PL = (1/B) sum_i V_i * (-log z_{i, y_i})                             (eq. 9)
  L_MI = E_J[sp(-T(d, s))] + E_M[sp(T(d, s))] = -MI_JSD                  (eqs. 13-14)
where J are pairs of a shallow map and a deep vector of the same sample or of
graph neighbours and M pairs of samples not connected in W. Sums over the
batch are normalised by *global* counts, so per-replica values add up to the
global-batch loss.
"""

from __future__ import annotations

import tensorflow as tf

from tfcluster.losses.common import EPS


def pseudo_graph(similarity, thres1):
    """W = [S >= thres1] as float, same shape as `similarity` (eq. 2)."""
    return tf.cast(similarity >= thres1, similarity.dtype)


def pseudo_labels(z, thres2):
    """Pseudo-labels and confidence mask (eqs. 7-8).

    Args:
      z: [B, K] prediction features.
      thres2: confidence threshold.
    Returns:
      (y int32 [B], V float [B]): argmax labels and [max_k z_ik >= thres2].
    """
    y = tf.argmax(z, axis=-1, output_type=tf.int32)
    v = tf.cast(tf.reduce_max(z, axis=-1) >= thres2, z.dtype)
    return y, v


def off_diagonal_mask(b, big_b, offset, dtype=tf.float32):
    """[b, big_b] ones except at (i, offset + i): a replica's rows without self-pairs."""
    return 1.0 - tf.one_hot(tf.range(b) + offset, big_b, dtype=dtype)


def label_ce_sum(z, y, v):
    """Sum_i V_i * (-log z_{i, y_i}) (eq. 9's l_l, cross-entropy), z [B, K], y [B], V [B]."""
    p = tf.gather(z, y, axis=1, batch_dims=1)
    return tf.reduce_sum(v * -tf.math.log(tf.clip_by_value(p, EPS, 1.0)))


def sample_pairs(graph_rows, similarity_rows, offset, num_negatives: int, seed):
    """Chooses MI partners for a replica's anchors from the global batch.

    Positive: the anchor's *nearest* graph neighbour (the largest S_ij with
    W_ij = 1, j != i), the best strategy (V1) of the supplement's Table 6.
    Negatives: `num_negatives` samples drawn uniformly without replacement
    among those with W_ij = 0 (Table 6's "random*"). The draw uses a stateless
    RNG over the whole [B, B] global batch, so it does not depend on how the
    batch is split over replicas. An anchor without a neighbour (or with fewer
    non-neighbours than asked) gets invalid slots, masked out of the loss.

    Args:
      graph_rows: [b, B] W for this replica's anchors against the global batch.
      similarity_rows: [b, B] the S the graph was computed from.
      offset: global index of the replica's first anchor.
      num_negatives: negatives per anchor.
      seed: int32 [2] stateless seed (e.g. (run seed, step)).
    Returns:
      pos_index int32 [b], pos_valid float [b], neg_index int32 [b, n],
      neg_valid float [b, n] (indices into the global batch).
    """
    b, big_b = tf.shape(graph_rows)[0], tf.shape(graph_rows)[1]
    not_self = off_diagonal_mask(b, big_b, offset, graph_rows.dtype)
    neighbours = graph_rows * not_self
    pos_index = tf.argmax(tf.where(neighbours > 0, similarity_rows, -2.0), axis=1, output_type=tf.int32)
    pos_valid = tf.cast(tf.reduce_max(neighbours, axis=1) > 0, graph_rows.dtype)
    noise = tf.random.stateless_uniform(tf.stack([big_b, big_b]), seed, minval=0.0, maxval=1.0)
    noise = noise[offset:offset + b]
    candidates = (1.0 - graph_rows) * not_self
    scores, neg_index = tf.math.top_k(tf.where(candidates > 0, noise, -1.0), k=num_negatives)
    return pos_index, pos_valid, neg_index, tf.cast(scores >= 0.0, graph_rows.dtype)


def jsd_mi_terms(pos_scores, pos_valid, neg_scores, neg_valid):
    """Pieces of L_MI = E_J[sp(-T)] + E_M[sp(T)] (eq. 14, i.e. -MI_JSD).

    Args:
      pos_scores: [P, h, w] discriminator scores of joint (positive) pairs.
      pos_valid: [P] 1 for pairs that exist.
      neg_scores: [Q, h, w] scores of marginal (negative) pairs.
      neg_valid: [Q].
    Returns:
      (joint_sum, joint_count, marginal_sum, marginal_count): sums of
      softplus(-T) over valid joint pairs' locations and of softplus(T) over
      valid marginal pairs' locations, and the numbers of pair-locations.
    """
    locations = tf.cast(tf.reduce_prod(tf.shape(pos_scores)[1:]), pos_scores.dtype)
    joint = tf.reduce_sum(tf.reduce_sum(tf.nn.softplus(-pos_scores), axis=[1, 2]) * pos_valid)
    marginal = tf.reduce_sum(tf.reduce_sum(tf.nn.softplus(neg_scores), axis=[1, 2]) * neg_valid)
    return joint, tf.reduce_sum(pos_valid) * locations, marginal, tf.reduce_sum(neg_valid) * locations
