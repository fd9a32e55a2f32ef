"""tf.data input pipelines: shuffle -> map(augment, AUTOTUNE) -> batch -> prefetch.

Training elements are dicts:
  "image"  float32 [B, H, W, C'] the un-augmented, preprocessed images
  "views"  float32 [B, V, H, W, C'] V independently augmented views (V >= 0);
           batch-major, because the strategy splits every tensor on axis 0
  "label"  int64 [B] (-1 where unknown; never used by training steps)
  "index"  int64 [B] position in the source
Each epoch's order and augmentation draws are a pure function of
(seed, epoch), so a run resumed at epoch e sees exactly what an uninterrupted
run would have seen.
"""

from __future__ import annotations

import tensorflow as tf

from tfcluster.data import augment as augment_lib
from tfcluster.data.preprocess import Preprocessor
from tfcluster.data.sources import Source


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**31 - 1)


def train_dataset(source: Source, preprocessor: Preprocessor, augment: augment_lib.AugmentConfig | None,
                  global_batch_size: int, seed: int, epoch: int, num_views: int = 1,
                  drop_remainder: bool = True) -> tf.data.Dataset:
    """One epoch of shuffled, augmented, batched training data (global batches)."""
    n = len(source)
    if global_batch_size > n:
        raise ValueError(f"batch size {global_batch_size} is larger than the dataset ({n} samples)")
    epoch_seed = _epoch_seed(seed, epoch)
    ds = tf.data.Dataset.from_tensor_slices({"raw": source.x, "label": source.y,
                                             "index": tf.range(n, dtype=tf.int64)})
    ds = ds.shuffle(n, seed=epoch_seed, reshuffle_each_iteration=False)
    seeds = tf.data.Dataset.random(seed=epoch_seed + 1).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds))
    aug = augment or augment_lib.AugmentConfig()
    is_image = source.info.modality == "image"

    def make(element, pair):
        raw = element["raw"]
        x = preprocessor.to_float(raw) if is_image else tf.cast(raw, tf.float32)
        views = []
        if num_views:
            view_seeds = tf.random.experimental.stateless_split(pair, num_views)
            for v in range(num_views):
                xv = augment_lib.augment(x, view_seeds[v], aug) if is_image else x
                views.append(preprocessor.finish(xv))
        out = {"image": preprocessor.finish(x), "label": element["label"], "index": element["index"]}
        out["views"] = tf.stack(views) if views else tf.zeros([0] + list(out["image"].shape), tf.float32)
        return out

    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(global_batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(source: Source, preprocessor: Preprocessor, batch_size: int) -> tf.data.Dataset:
    """Preprocessed images in source order: dicts of "image" [B,...] and "label" [B]."""
    ds = tf.data.Dataset.from_tensor_slices({"raw": source.x, "label": source.y})
    ds = ds.batch(batch_size).map(lambda e: {"image": preprocessor(e["raw"]), "label": e["label"]},
                                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
