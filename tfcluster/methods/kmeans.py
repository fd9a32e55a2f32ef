"""k-means on (standardised) pixels: the baseline every deep method must beat.

scikit-learn's KMeans (k-means++, `n_init` restarts) on flattened preprocessed
inputs. The centres live in a tf.Variable so that checkpoints and the exported
SavedModel carry them. `probabilities` are Student-t soft assignments
q_ij ∝ (1 + ||x_i - mu_j||^2 / d)^-1 (distances scaled by the dimension d so
they are not all one-hot); `cluster` = nearest centre.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from sklearn.cluster import KMeans

from tfcluster.configs.kmeans import PRESETS, KMeansConfig
from tfcluster.errors import InputError
from tfcluster.methods.base import Method


class KMeansPixels(Method):
    name = "kmeans"
    config_class = KMeansConfig
    presets = PRESETS
    trainable = False

    def build(self):
        dim = int(np.prod(self.input_shape))
        with self.strategy.scope():
            self.centres = tf.Variable(tf.zeros([self.num_clusters, dim]), trainable=False, name="centres")

    def checkpoint_objects(self):
        return {"centres": self.centres}

    def fit(self, x):
        """k-means++ (seeded by the run's seed) on inputs [N, ...] flattened. Returns logs."""
        if x.shape[0] < self.num_clusters:
            raise InputError(f"{x.shape[0]} samples cannot form {self.num_clusters} clusters")
        km = KMeans(self.num_clusters, n_init=self.config.n_init, max_iter=self.config.max_iter,
                    random_state=self.seed)
        km.fit(x.reshape(x.shape[0], -1))
        self.centres.assign(km.cluster_centers_.astype(np.float32))
        return {"kmeans/inertia": float(km.inertia_), "kmeans/iterations": int(km.n_iter_)}

    def predict(self, x):
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        d2 = (tf.reduce_sum(flat ** 2, 1, keepdims=True) - 2.0 * flat @ tf.transpose(self.centres)
              + tf.reduce_sum(self.centres ** 2, 1)[None, :])
        dim = tf.cast(tf.shape(flat)[1], tf.float32)
        q = 1.0 / (1.0 + tf.maximum(d2, 0.0) / dim)
        return q / tf.reduce_sum(q, 1, keepdims=True)
