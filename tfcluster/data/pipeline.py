"""tf.data input pipelines: shuffle -> batch -> map(batched augment, AUTOTUNE) -> prefetch.

`stage_dataset` builds the mini-batches of one stage of an epoch plan
(methods.plan.Stage), in the stage's order; `StageBatches` reads an epoch's
stages, consecutive chunks from one pipeline (the same batches); `eval_dataset`
the clean images in source order for inference passes.

Training elements are dicts:
  "image"  float32 [B, H, W, C'] the un-augmented, preprocessed images
  "views"  float32 [B, V, H, W, C'] V independently augmented views (V >= 0);
           batch-major, because the strategy splits every tensor on axis 0
  "label"  int64 [B] (-1 where unknown; never used by training steps)
  "index"  int64 [B] position in the source
Each epoch's order and augmentation draws are a pure function of
(seed, epoch) (of (seed, epoch, chunk) for "chunk" stages), so a run resumed at
epoch e sees exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfcluster.data import augment as augment_lib
from tfcluster.data.preprocess import Preprocessor
from tfcluster.data.sources import Source
from tfcluster.methods.plan import Stage


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**31 - 1)


def _batch_fn(source: Source, preprocessor: Preprocessor, augment: augment_lib.AugmentConfig | None,
              num_views: int):
    """fn(raw [B,...], label [B], index [B], params) -> one training element (module docstring).

    `params` are the augmentation parameters of the B * V views, view v of
    sample b at row b * V + v (augment.draw; empty when nothing is random).
    The whole batch is augmented in a few batched ops (augment.apply).
    """
    aug = augment or augment_lib.AugmentConfig()
    is_image = source.info.modality == "image"

    def element(raw, label, index, params):
        x = preprocessor.to_float(raw) if is_image else tf.cast(raw, tf.float32)
        out = {"image": preprocessor.finish(x), "label": label, "index": index}
        if num_views and is_image and not aug.is_identity:
            views = preprocessor.finish(augment_lib.apply(tf.repeat(x, num_views, axis=0), params, aug))
            out["views"] = tf.reshape(views, [-1, num_views] + out["image"].shape[1:].as_list())
        else:
            out["views"] = tf.repeat(out["image"][:, None], num_views, axis=1)
        return out

    return element


def _shuffled_batches(source: Source, global_batch_size: int, seed: int, epoch: int,
                      keep: np.ndarray | None = None, passes: int = 1, chunk: int = 0,
                      steps: int | None = None) -> tf.data.Dataset:
    """The un-augmented side of `_shuffled`: (batch of {"raw", "label", "index"}, seed pair [2]) elements.

    `steps`: take this many (ValueError when the samples give fewer full batches).
    """
    if keep is None:
        x, y, index = source.x, source.y, np.arange(len(source), dtype=np.int64)
    else:
        index = np.asarray(keep, np.int64)
        x, y = source.x[index], source.y[index]
    n = len(index)
    if global_batch_size > n:
        raise ValueError(f"batch size {global_batch_size} is larger than the dataset ({n} samples)")
    if steps is not None and steps > int(passes) * n // global_batch_size:
        raise ValueError(f"{steps} steps of batch {global_batch_size} need more than {passes} pass(es) over "
                         f"{n} samples")
    epoch_seed = _epoch_seed(seed, epoch)
    if chunk:
        epoch_seed = _epoch_seed(epoch_seed, chunk + 1)
    ds = tf.data.Dataset.from_tensor_slices({"raw": x, "label": y, "index": index})
    if passes == 1:
        ds = ds.shuffle(n, seed=epoch_seed, reshuffle_each_iteration=False)
    else:
        ds = ds.shuffle(n, seed=epoch_seed, reshuffle_each_iteration=True).repeat(int(passes))
    ds = ds.batch(global_batch_size, drop_remainder=True)
    seeds = tf.data.Dataset.random(seed=epoch_seed + 1).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds))
    return ds if steps is None else ds.take(steps)


def _shuffled(source: Source, preprocessor: Preprocessor, augment: augment_lib.AugmentConfig | None,
              global_batch_size: int, seed: int, epoch: int, num_views: int = 1,
              keep: np.ndarray | None = None, passes: int = 1, chunk: int = 0) -> tf.data.Dataset:
    """One epoch of shuffled, augmented, batched training data (global batches, full ones only).

    `keep`: indices of the samples to train on (default all); "index" stays the
    position in the source. `passes`: shuffled passes over them in the epoch
    (a new order each pass; batches run on across pass boundaries). Each batch
    draws its views' parameters from its own stateless seed. `chunk`: the
    stage's number among the epoch's chunks; chunk c > 0 seeds its order and
    draws from (seed, epoch, c), so two chunks of an epoch draw differently.
    """
    ds = _shuffled_batches(source, global_batch_size, seed, epoch, keep=keep, passes=passes, chunk=chunk)
    make = _shuffled_batch_fn(source, preprocessor, augment, num_views)
    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


_BATCH_FNS: dict = {}  # ((order, augment, views), ids of source and preprocessor) -> (source, preprocessor, tf.function)


def _cached_batch_fn(kind: tuple, source: Source, preprocessor: Preprocessor, build):
    """`build()`'s tf.function, made once per `kind` (stage order, augment, views), source and preprocessor.

    Dataset.map traces the function it is given for every new dataset; given a
    tf.function, it traces a call of it, whose graph is traced once: epochs of
    many stages (chunks) then build their datasets in milliseconds instead of
    retracing the augmentation each time (0.2-0.4 s a stage on 2 CPUs).
    """
    key = (kind, id(source), id(preprocessor))
    if key in _BATCH_FNS and _BATCH_FNS[key][0] is source and _BATCH_FNS[key][1] is preprocessor:
        return _BATCH_FNS[key][2]
    if len(_BATCH_FNS) >= 16:  # runs in one process (tests) each keep their source alive here: a few at most
        _BATCH_FNS.pop(next(iter(_BATCH_FNS)))
    _BATCH_FNS[key] = (source, preprocessor, build())
    return _BATCH_FNS[key][2]


def _shuffled_batch_fn(source: Source, preprocessor: Preprocessor, augment: augment_lib.AugmentConfig | None,
                       num_views: int):
    """fn(batch, seed pair) -> a training element, one tf.function per (source, preprocessor, augment, views)."""

    def build():
        batch_fn = _batch_fn(source, preprocessor, augment, num_views)
        aug = augment or augment_lib.AugmentConfig()

        @tf.function(reduce_retracing=True)
        def make(batch, pair):
            params = augment_lib.draw(aug, pair, tf.shape(batch["index"])[0] * num_views)
            return batch_fn(batch["raw"], batch["label"], batch["index"], params)

        return make

    return _cached_batch_fn(("shuffled", augment, int(num_views)), source, preprocessor, build)


def chunk_order(num_samples: int, round_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The chunks of one epoch (GATCluster's large batches): floor(N / M) disjoint index sets [M].

    A pure function of (seed, epoch); the N mod M samples left over differ from epoch to epoch.
    """
    if round_size > num_samples:
        raise ValueError(f"the large batch ({round_size}) is larger than the dataset ({num_samples} samples)")
    perm = np.random.RandomState(_epoch_seed(seed, epoch)).permutation(num_samples)
    return [perm[r * round_size:(r + 1) * round_size] for r in range(num_samples // round_size)]


def _chunk_draws(m: int, augment: augment_lib.AugmentConfig | None, global_batch_size: int, seed: int, epoch: int,
                 round_index: int, repeats: int, num_views: int) -> tuple:
    """A round's positions in train order, int64 [repeats * floor(M / batch) * batch] (a new permutation of
    0..M-1 each pass), and its views' augmentation parameters, {name: float32 [M, V]}: pure functions of
    (seed, epoch, round)."""
    if global_batch_size > m:
        raise ValueError(f"batch size {global_batch_size} is larger than the large batch ({m} samples)")
    round_seed = _epoch_seed(_epoch_seed(seed, epoch), round_index + 1)
    rng = np.random.RandomState(round_seed)
    per_pass = (m // global_batch_size) * global_batch_size
    order = np.concatenate([rng.permutation(m)[:per_pass] for _ in range(repeats)]).astype(np.int64)
    aug = augment or augment_lib.AugmentConfig()
    params = augment_lib.draw(aug, tf.constant([round_seed, 0], tf.int64), m * num_views)
    return order, {k: tf.reshape(v, [m, num_views]).numpy() for k, v in params.items()}


def _chunk(source: Source, indices: np.ndarray, preprocessor: Preprocessor,
           augment: augment_lib.AugmentConfig | None, global_batch_size: int, seed: int, epoch: int,
           round_index: int, repeats: int = 1, num_views: int = 1) -> tf.data.Dataset:
    """Mini-batches over one chunk, `repeats` passes (e.g. step 2 of GATCluster's Algorithm 1).

    Each sample is transformed once per round ("randomly transform X_b"): the
    parameters of all M x V views are drawn once, from the round's seed, so
    every pass sees the same transformed images, in a new random order, without
    holding them in memory. Each pass yields floor(M / batch) full batches.
    Elements are as in `_shuffled`, except "index" is the position in
    `indices` (0..M-1), where the chunk's targets are stored.
    """
    indices = np.asarray(indices)
    order, params = _chunk_draws(len(indices), augment, global_batch_size, seed, epoch, round_index, repeats,
                                 num_views)
    raw = tf.constant(source.x[indices])
    labels = tf.constant(source.y[indices])
    params = {k: tf.constant(v) for k, v in params.items()}
    batch_fn = _batch_fn(source, preprocessor, augment, num_views)

    def make(pos):
        views = {k: tf.reshape(tf.gather(v, pos), [-1]) for k, v in params.items()}
        return batch_fn(tf.gather(raw, pos), tf.gather(labels, pos), pos, views)

    ds = tf.data.Dataset.from_tensor_slices(order).batch(global_batch_size, drop_remainder=True)
    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _chunk_batches(source: Source, indices: np.ndarray, augment: augment_lib.AugmentConfig | None,
                   global_batch_size: int, seed: int, epoch: int, round_index: int, repeats: int = 1,
                   num_views: int = 1, steps: int | None = None) -> tf.data.Dataset:
    """`_chunk`'s mini-batches before the augmentation map, each batch's samples copied out in order.

    Elements: {"raw" [B, ...], "label" [B], "index" [B] (position in `indices`),
    "params": {name: [B, V]} the views' augmentation parameters}; `_chunk_batch_fn`
    turns one into `_chunk`'s element. Holds `repeats` copies of the chunk's images.
    `steps`: take this many (ValueError when the passes give fewer).
    """
    indices = np.asarray(indices)
    order, params = _chunk_draws(len(indices), augment, global_batch_size, seed, epoch, round_index, repeats,
                                 num_views)
    if steps is not None and steps > len(order) // global_batch_size:
        raise ValueError(f"{steps} steps of batch {global_batch_size} need more than {repeats} pass(es) over "
                         f"{len(indices)} samples")
    elements = {"raw": source.x[indices][order], "label": source.y[indices][order], "index": order,
                "params": {k: v[order] for k, v in params.items()}}
    ds = tf.data.Dataset.from_tensor_slices(elements).batch(global_batch_size, drop_remainder=True)
    return ds if steps is None else ds.take(steps)


def _chunk_batch_fn(source: Source, preprocessor: Preprocessor, augment: augment_lib.AugmentConfig | None,
                    num_views: int):
    """fn(_chunk_batches element) -> a training element, one tf.function per (source, preprocessor, augment, views)."""

    def build():
        batch_fn = _batch_fn(source, preprocessor, augment, num_views)

        @tf.function(reduce_retracing=True)
        def make(batch):
            views = {k: tf.reshape(v, [-1]) for k, v in batch["params"].items()}
            return batch_fn(batch["raw"], batch["label"], batch["index"], views)

        return make

    return _cached_batch_fn(("chunk", augment, int(num_views)), source, preprocessor, build)


def stage_dataset(source: Source, preprocessor: Preprocessor, augment: augment_lib.AugmentConfig | None,
                  stage: Stage, seed: int, epoch: int) -> tf.data.Dataset:
    """The `stage.steps` global batches of one stage (methods.plan.Stage), in its order.

    Elements: "image" [B, ...], "views" [B, V, ...], "label" [B], "index" [B]
    (see the module docstring; "index" is the position in `stage.indices` for
    "chunk" stages). Raises ValueError when a batch is larger than the samples.
    """
    if stage.order == "chunk":
        ds = _chunk(source, stage.indices, preprocessor, augment, stage.batch_size, seed, epoch, stage.chunk,
                    stage.repeats, num_views=stage.num_views)
    else:
        ds = _shuffled(source, preprocessor, augment, stage.batch_size, seed, epoch, num_views=stage.num_views,
                       keep=stage.indices, passes=stage.repeats, chunk=stage.chunk)
    return ds.take(stage.steps).with_options(training_options())


# Images a shared pipeline's stages may hold at once (each stage's copy of its samples): bounds the
# memory of an epoch of large images; MNIST's 1,000-image chunks (0.8 MB) share whole epochs.
SHARED_PIPELINE_BYTES = 64 * 2**20


class StageBatches:
    """The training batches of one epoch plan's stages, stage by stage: `batches(index, skip)`.

    Consecutive stages with steps, of one order, batch size and view count
    (an epoch's chunks: DAC's, DCCM's; GATCluster's large batches, whose
    `repeats` passes are copied out in order, up to SHARED_PIPELINE_BYTES),
    share one input pipeline: one
    augmentation map and one iterator over all their batches, which prefetches
    a stage's first batches while the stage's `begin` computes its targets
    (the targets need the network trained up to the stage; the batches do
    not). The batches are `stage_dataset`'s, stage by stage (a test checks
    it). A pipeline of its own for each chunk cost 50-80 ms a stage, tracing
    the map and instantiating its iterator: about 10% of DAC's bfloat16 steps
    over a 1,000-image chunk on a 2-core Xeon with AMX (docs/RESULTS.md).
    Other stages, and blocks of `per_call` > 1 steps a call ([n, B, ...],
    never across a stage's end), get a `stage_dataset` of their own.
    """

    def __init__(self, source: Source, preprocessor: Preprocessor, augment: augment_lib.AugmentConfig | None,
                 stages, seed: int, epoch: int, per_call: int = 1):
        self.source, self.preprocessor, self.augment = source, preprocessor, augment
        self.stages, self.seed, self.epoch, self.per_call = tuple(stages), int(seed), int(epoch), int(per_call)
        self._iterator, self._pending = None, []

    def _size(self, stage: Stage) -> float:
        """Bytes of images the stage's part of a shared pipeline holds."""
        per_sample = self.source.x.nbytes / max(len(self.source), 1)
        samples = len(self.source) if stage.indices is None else len(stage.indices)
        return per_sample * samples * (stage.repeats if stage.order == "chunk" else 1)

    def _shared(self, stage: Stage) -> bool:
        return (self.per_call == 1 and bool(stage.steps) and (stage.order == "shuffle" or (
            stage.order == "chunk" and self._size(stage) <= SHARED_PIPELINE_BYTES)))

    def _group(self, index: int) -> list:
        """Indices of the stages that share a pipeline starting at stage `index`."""
        first = self.stages[index]
        kind = (first.order, first.batch_size, first.num_views)
        members, held = [index], self._size(first)
        for j in range(index + 1, len(self.stages)):
            stage = self.stages[j]
            if not stage.steps:  # eager work between chunks: nothing to read
                continue
            if not self._shared(stage) or (stage.order, stage.batch_size, stage.num_views) != kind:
                break
            held += self._size(stage)
            if held > SHARED_PIPELINE_BYTES:
                break
            members.append(j)
        return members

    def _open(self, index: int, skip: int) -> None:
        members = self._group(index)
        parts, steps = [], []
        first = self.stages[index]
        for j in members:
            stage = self.stages[j]
            if first.order == "chunk":
                part = _chunk_batches(self.source, stage.indices, self.augment, stage.batch_size, self.seed,
                                      self.epoch, stage.chunk, stage.repeats, stage.num_views, steps=stage.steps)
            else:
                part = _shuffled_batches(self.source, stage.batch_size, self.seed, self.epoch, keep=stage.indices,
                                         passes=stage.repeats, chunk=stage.chunk, steps=stage.steps)
            parts.append(part.skip(skip) if j == index and skip else part)
            steps.append(stage.steps - (skip if j == index else 0))
        if len(parts) == 1:
            ds = parts[0]
        else:
            choice = tf.data.Dataset.from_tensor_slices(np.repeat(np.arange(len(parts), dtype=np.int64), steps))
            ds = tf.data.Dataset.choose_from_datasets(parts, choice)
        make = (_chunk_batch_fn if first.order == "chunk" else _shuffled_batch_fn)(
            self.source, self.preprocessor, self.augment, first.num_views)
        ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
        self._iterator, self._pending = iter(ds.with_options(training_options())), members

    def batches(self, index: int, skip: int = 0):
        """An iterator over stage `index`'s batches after its first `skip` (blocks of `per_call` when > 1)."""
        stage = self.stages[index]
        if not self._shared(stage):
            ds = stage_dataset(self.source, self.preprocessor, self.augment, stage, self.seed, self.epoch)
            ds = ds.skip(skip) if skip else ds
            return iter(ds.batch(self.per_call) if self.per_call > 1 else ds)
        if skip or self._pending[:1] != [index]:
            self._open(index, skip)
        self._pending = self._pending[1:]
        return self._take(self._iterator, stage.steps - skip, stage.name)

    @staticmethod
    def _take(iterator, n: int, name: str):
        for i in range(n):
            try:
                yield next(iterator)
            except StopIteration:
                raise RuntimeError(f"stage {name!r}: its input pipeline ended after {i} of {n} batches") from None


def training_options() -> tf.data.Options:
    """tf.data options of the training pipelines: the autotuner off.

    The AUTOTUNE map parallelism and prefetch buffer then keep tf.data's fixed
    defaults. With the autotuner on, a live training iterator slowed the steps
    beside it on a 2-core CPU: DAC's float32 loop ran at 0.66-0.79 of its bare
    step, and at 0.89 with the autotuner off (alternating runs of
    tools/throughput.py; docs/RESULTS.md). Batches and their order are unchanged.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def eval_dataset(source: Source, preprocessor: Preprocessor, batch_size: int) -> tf.data.Dataset:
    """Preprocessed images in source order: dicts of "image" [B,...] and "label" [B]."""
    ds = tf.data.Dataset.from_tensor_slices({"raw": source.x, "label": source.y})
    ds = ds.batch(batch_size).map(lambda e: {"image": preprocessor(e["raw"]), "label": e["label"]},
                                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
