"""DAC's adaptive thresholds and pairwise binary cross-entropy.

For label features l_i (non-negative, unit L2 norm) the similarity is
s_ij = l_i . l_j in [0, 1]. With the thresholds of the DAC paper,
  u(lambda) = 0.95 - lambda,   l(lambda) = 0.455 + 0.1 lambda,
pairs with s_ij > u are labelled similar (r_ij = 1), pairs with s_ij < l
dissimilar (r_ij = 0) and the others are ignored (v_ij = 0). The loss is
  sum_ij v_ij BCE(r_ij, s_ij) / sum_ij v_ij
over the global batch; self-pairs (i == j) are excluded.

`official_loss_terms` is the official code's loss instead (vector-1127/DAC,
MNIST/mnist.py): the squared error (s_ij - r_ij)^2 over all pairs of the batch,
self-pairs included, with r_ij = [t_ij > th] for target similarities t_ij and
one threshold th (no pair ignored).
"""

from __future__ import annotations

import tensorflow as tf

from tfcluster.losses.common import bce_sum


def select_pairs(similarity, upper, lower):
    """Returns (targets r, mask v), both float [..] like `similarity`."""
    positive = tf.cast(similarity > upper, similarity.dtype)
    negative = tf.cast(similarity < lower, similarity.dtype)
    return positive, positive + negative


def dac_loss_terms(local_features, global_features, upper, lower, local_offset=0, target_local=None,
                   target_global=None, exclude_self=True):
    """Per-replica pieces of the DAC loss over the global batch.

    Args:
      local_features: [b, K] label features of this replica's samples (with gradient).
      global_features: [B, K] label features of the whole global batch, rows
        local_offset .. local_offset + b - 1 being this replica's.
      upper, lower: scalar thresholds u, l.
      local_offset: index of this replica's first row in the global batch.
      target_local, target_global: optional features from which pairs are
        *selected* (e.g. of un-augmented images); default: the features themselves.
      exclude_self: drop the pairs (i, i). Keep them when local and global
        features are two different augmented views, so that each image's two
        views form a pair (its target similarity is 1, a positive).
    Returns:
      (loss_sum, num_selected, num_positive): this replica's rows' summed BCE,
      number of selected pairs and of positive pairs (self-pairs excluded).
    """
    similarity = tf.matmul(local_features, global_features, transpose_b=True)  # [b, B]
    if target_local is None:
        target_local, target_global = local_features, global_features
    target_similarity = tf.stop_gradient(tf.matmul(target_local, target_global, transpose_b=True))
    targets, mask = select_pairs(target_similarity, upper, lower)
    if exclude_self:
        b, big_b = tf.shape(similarity)[0], tf.shape(similarity)[1]
        mask = mask * (1.0 - tf.one_hot(tf.range(b) + local_offset, big_b, dtype=similarity.dtype))
    return bce_sum(similarity, targets, mask), tf.reduce_sum(mask), tf.reduce_sum(targets * mask)


def official_loss_terms(local_features, global_features, threshold, target_local, target_global):
    """Per-replica pieces of the official code's squared-error loss over the global batch.

    Args:
      local_features: [b, K] unit label features of this replica's samples (with gradient).
      global_features: [B, K] those of the whole global batch (the same views).
      threshold: scalar th; target pairs are r_ij = [target_i . target_j > th].
      target_local, target_global: [b, K] / [B, K] unit target features.
    Returns:
      (squared_error_sum, num_positive) over this replica's b x B pairs.
    """
    similarity = tf.matmul(local_features, global_features, transpose_b=True)  # [b, B]
    target_similarity = tf.stop_gradient(tf.matmul(target_local, target_global, transpose_b=True))
    targets = tf.cast(target_similarity > threshold, similarity.dtype)
    return tf.reduce_sum(tf.square(similarity - targets)), tf.reduce_sum(targets)
