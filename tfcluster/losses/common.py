"""Pieces the methods' losses share: cosine similarity and clipped binary cross-entropy."""

from __future__ import annotations

import tensorflow as tf

EPS = 1e-7


def cosine_similarity(a, b):
    """[n, K], [m, K] -> [n, m] cosine similarities (rows L2-normalised, epsilon 1e-12)."""
    a = tf.math.l2_normalize(a, axis=-1, epsilon=1e-12)
    b = tf.math.l2_normalize(b, axis=-1, epsilon=1e-12)
    return tf.matmul(a, b, transpose_b=True)


def bce_sum(p, targets, mask=None):
    """Sum of BCE(targets, p) = -(t log p + (1 - t) log(1 - p)), p clipped to [EPS, 1 - EPS].

    p, targets (and the optional 0/1 `mask`) share one shape; masked-out entries add nothing.
    """
    p = tf.clip_by_value(p, EPS, 1.0 - EPS)
    bce = -(targets * tf.math.log(p) + (1.0 - targets) * tf.math.log(1.0 - p))
    return tf.reduce_sum(bce if mask is None else bce * mask)
