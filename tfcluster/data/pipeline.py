"""tf.data input pipelines: shuffle -> batch -> map(batched augment, AUTOTUNE) -> prefetch.

`stage_dataset` builds the mini-batches of one stage of an epoch plan
(tfcluster.plan.Stage), in the stage's order; `StageBatches` reads a run's
stages, each kind of stage from one pipeline for the run (the same batches); `eval_dataset`
the clean images in source order for inference passes (`eval_images` their images).

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
from tfcluster.plan import Stage


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


def _shuffled_samples(source: Source, global_batch_size: int, keep: np.ndarray | None = None, passes: int = 1,
                      steps: int | None = None) -> dict:
    """The samples a shuffled stage draws its batches from, NumPy {"raw", "label", "index"} (all when `keep` is
    None). ValueError when they give no full batch, or fewer than `steps` in `passes` passes."""
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
    return {"raw": x, "label": y, "index": index}


def _stage_seed(seed: int, epoch: int, chunk: int = 0) -> int:
    """The seed of a shuffled stage's order and view draws: of (seed, epoch), and of chunk c > 0 too."""
    epoch_seed = _epoch_seed(seed, epoch)
    return _epoch_seed(epoch_seed, chunk + 1) if chunk else epoch_seed


def _seed_pairs(seed: int) -> np.ndarray:
    """int64 [2, 2]: the (seed, seed2) that Dataset.shuffle(seed=seed) and Dataset.random(seed=seed + 1) give
    their ops, TensorFlow's global seed included (tf.random.set_seed)."""
    return np.array([tf.compat.v1.random.get_seed(int(seed)), tf.compat.v1.random.get_seed(int(seed) + 1)], np.int64)


def _flat_types(ds: tf.data.Dataset) -> dict:
    specs = tf.nest.flatten(ds.element_spec)
    return {"output_types": [s.dtype for s in specs], "output_shapes": [s.shape for s in specs]}


def _shuffle(ds: tf.data.Dataset, buffer_size, seeds, reshuffle: bool) -> tf.data.Dataset:
    """ds.shuffle(buffer_size, seed, reshuffle_each_iteration=reshuffle): its op, with the seed pair
    `seeds` [2] (_seed_pairs(seed)[0]) given, which may be a tensor; Dataset.shuffle cannot take a
    tensor seed when the global seed is 0 (its seed check reads the tensor as a Python bool)."""
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(ds), buffer_size=buffer_size, seed=seeds[0], seed2=seeds[1],
        seed_generator=tf.raw_ops.DummySeedGenerator(), reshuffle_each_iteration=reshuffle, **_flat_types(ds))
    return tf.data.experimental.from_variant(variant, ds.element_spec)


def _random(seeds) -> tf.data.Dataset:
    """Dataset.random(seed + 1), its op with the seed pair `seeds` [2] (_seed_pairs(seed)[1]) given."""
    variant = tf.raw_ops.RandomDataset(seed=seeds[0], seed2=seeds[1], output_types=[tf.int64], output_shapes=[[]])
    return tf.data.experimental.from_variant(variant, tf.TensorSpec([], tf.int64))


def _shuffled_part(samples: dict, global_batch_size: int, seeds, passes=1, reshuffle: bool = False) -> tf.data.Dataset:
    """(batch of `samples`, seed pair [2]) elements: `passes` shuffled passes (a new order each pass when
    `reshuffle`, which more than one pass needs), full batches only; each batch's views draw from its seed
    pair. `seeds`: _seed_pairs(the stage's seed), [2, 2]; it and `passes` may be tensors."""
    ds = tf.data.Dataset.from_tensor_slices(samples)
    ds = _shuffle(ds, tf.shape(samples["index"], out_type=tf.int64)[0], seeds[0], reshuffle)
    if reshuffle:
        ds = ds.repeat(passes)
    ds = ds.batch(global_batch_size, drop_remainder=True)
    return tf.data.Dataset.zip((ds, _random(seeds[1]).batch(2)))


def _shuffled_batches(source: Source, global_batch_size: int, seed: int, epoch: int,
                      keep: np.ndarray | None = None, passes: int = 1, chunk: int = 0,
                      steps: int | None = None) -> tf.data.Dataset:
    """The un-augmented side of `_shuffled`: (batch of {"raw", "label", "index"}, seed pair [2]) elements.

    `steps`: take this many (ValueError when the samples give fewer full batches).
    """
    samples = _shuffled_samples(source, global_batch_size, keep, passes, steps)
    ds = _shuffled_part(samples, global_batch_size, _seed_pairs(_stage_seed(seed, epoch, chunk)), int(passes),
                        int(passes) > 1)
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


def _chunk_elements(source: Source, indices: np.ndarray, augment: augment_lib.AugmentConfig | None,
                    global_batch_size: int, seed: int, epoch: int, round_index: int, repeats: int = 1,
                    num_views: int = 1, steps: int | None = None) -> dict:
    """`_chunk`'s samples in train order before the augmentation map, each copied out: NumPy arrays
    {"raw" [S, ...], "label" [S], "index" [S] (position in `indices`), "params": {name: [S, V]} the views'
    augmentation parameters}, S = steps x batch (all the passes' full batches when `steps` is None).

    Batched by `global_batch_size`, they are `_chunk`'s batches before `_chunk_batch_fn`. Holds up to
    `repeats` copies of the chunk's images. ValueError when the passes give fewer than `steps` batches.
    """
    indices = np.asarray(indices)
    order, params = _chunk_draws(len(indices), augment, global_batch_size, seed, epoch, round_index, repeats,
                                 num_views)
    if steps is not None:
        if steps > len(order) // global_batch_size:
            raise ValueError(f"{steps} steps of batch {global_batch_size} need more than {repeats} pass(es) over "
                             f"{len(indices)} samples")
        order = order[:steps * global_batch_size]
    return {"raw": source.x[indices][order], "label": source.y[indices][order], "index": order,
            "params": {k: v[order] for k, v in params.items()}}


def _chunk_batch_fn(source: Source, preprocessor: Preprocessor, augment: augment_lib.AugmentConfig | None,
                    num_views: int):
    """fn(a batch of _chunk_elements) -> a training element, one tf.function per (source, preprocessor, augment, views)."""

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
    """The `stage.steps` global batches of one stage (tfcluster.plan.Stage), in its order.

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


class _Feed:
    """One input pipeline for the run's stages of one kind: each stage's samples go in as a part, its
    batches come out, augmented, in the order the parts went in.

    A queue of parts -> flat_map(a part's batches) -> map(augment) -> prefetch, one iterator for the
    run: a stage's batches need no dataset built and no iterator instantiated, whose cost was a few
    percent of DAC's epoch (docs/RESULTS.md, "Speed"). Between parts the
    pipeline waits for the next (it prefetches up to the last part put in); `close`, or dropping the
    feed, puts in an end marker. (Dataset.from_generator would do the same from Python, but it sets
    glibc's M_TRIM_THRESHOLD for the whole process, which slowed DAC's steps by about 3%.)
    """

    def __init__(self, signature, make_part, make_element):
        """`signature`: the parts' structure of tf.TensorSpec; `make_part(part) -> Dataset` of a part's
        batches; `make_element(batch) -> training element` (the augmentation map)."""
        specs = tf.nest.flatten(signature)
        self._end = [False] + [np.zeros([0 if d is None else d for d in s.shape], s.dtype.as_numpy_dtype)
                               for s in specs]  # the end marker: not live, empty tensors
        self._queue = tf.queue.FIFOQueue(2**30, [tf.bool] + [s.dtype for s in specs], shapes=None)
        self.owed = 0  # batches put in and not yet taken

        def next_part(_):
            live, *flat = self._queue.dequeue()
            flat = [tf.ensure_shape(t, s.shape) for t, s in zip(flat, specs)]
            return tf.ensure_shape(live, []), tf.nest.pack_sequence_as(signature, flat)

        ds = tf.data.Dataset.range(1).repeat().map(next_part).take_while(lambda live, part: live)
        ds = ds.flat_map(lambda live, part: make_part(part))
        ds = ds.map(make_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        self._iterator = iter(ds.prefetch(tf.data.AUTOTUNE).with_options(training_options()))

    def put(self, part: dict, batches: int) -> None:
        self._queue.enqueue([True] + tf.nest.flatten(part))
        self.owed += int(batches)

    def take(self, n: int, name: str):
        """The next `n` batches (of what went in), as an iterator."""
        for i in range(n):
            self.owed -= 1
            try:
                yield next(self._iterator)
            except StopIteration:
                raise RuntimeError(f"stage {name!r}: its input pipeline ended after {i} of {n} batches") from None

    def close(self) -> None:
        if self._iterator is not None:
            self._queue.enqueue(self._end)
            self._iterator = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001  (TensorFlow torn down at exit: nothing left to end)
            pass


class StageBatches:
    """The training batches of a run's epoch plans, stage by stage: `epoch(e, stages)`, then `batches(index,
    skip)`; `close()` at the end (or use it as a context manager).

    Stages with steps, one step a call, of the same order, batch size, view
    count and (shuffled) passes > 1 or not, read one input pipeline for the
    whole run (`_Feed`): an epoch's chunks (DAC's, DCCM's), GATCluster's large
    batches (whose `repeats` passes are copied out in order), the one-pass
    epochs of the other methods. Consecutive such stages go in together when
    a stage is first read, up to SHARED_PIPELINE_BYTES of images, so a
    stage's first batches are prepared while the next stages' `begin`
    computes their targets (the targets need the network trained up to the
    stage; the batches do not). The batches are `stage_dataset`'s, stage by
    stage (a test checks it). Reading a stage out of turn (a resumed run's
    first stage, with `skip`) starts a new pipeline for its kind. Blocks of
    `per_call` > 1 steps ([n, B, ...], never across a stage's end), and
    GATCluster's large batches over the byte cap, get a `stage_dataset` each.
    """

    def __init__(self, source: Source, preprocessor: Preprocessor, augment: augment_lib.AugmentConfig | None,
                 seed: int, per_call: int = 1):
        self.source, self.preprocessor, self.augment = source, preprocessor, augment
        self.seed, self.per_call = int(seed), int(per_call)
        self.stages, self.epoch_index = (), -1
        self._feeds, self._pending = {}, {}  # kind -> _Feed; kind -> stage indices put in and not yet read

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for feed in self._feeds.values():
            feed.close()
        self._feeds, self._pending = {}, {}

    def epoch(self, epoch: int, stages) -> None:
        """The next epoch's plan: `batches` reads its stages. Stages of the last epoch left unread (a
        stop) end their pipelines."""
        for kind in [k for k, pending in self._pending.items() if pending or self._feeds[k].owed]:
            self._feeds.pop(kind).close()
            del self._pending[kind]
        self.epoch_index, self.stages = int(epoch), tuple(stages)

    def _size(self, stage: Stage) -> float:
        """Bytes of images the stage's part of a shared pipeline holds."""
        per_sample = self.source.x.nbytes / max(len(self.source), 1)
        samples = len(self.source) if stage.indices is None else len(stage.indices)
        return per_sample * samples * (stage.repeats if stage.order == "chunk" else 1)

    def _shared(self, stage: Stage) -> bool:
        return (self.per_call == 1 and bool(stage.steps) and (stage.order == "shuffle" or (
            stage.order == "chunk" and self._size(stage) <= SHARED_PIPELINE_BYTES)))

    @staticmethod
    def _kind(stage: Stage) -> tuple:
        return stage.order, stage.batch_size, stage.num_views, stage.order == "shuffle" and stage.repeats > 1

    def _group(self, index: int) -> list:
        """Indices of the stages that go into the pipeline together, starting at stage `index`."""
        first = self.stages[index]
        members, held = [index], self._size(first)
        for j in range(index + 1, len(self.stages)):
            stage = self.stages[j]
            if not stage.steps:  # eager work between chunks: nothing to read
                continue
            if not self._shared(stage) or self._kind(stage) != self._kind(first):
                break
            held += self._size(stage)
            if held > SHARED_PIPELINE_BYTES:
                break
            members.append(j)
        return members

    def _feed(self, kind: tuple, part: dict) -> _Feed:
        """The run's pipeline for `kind` of stage (made for parts like `part`)."""
        if kind not in self._feeds:
            order, batch_size, num_views, reshuffle = kind
            signature = tf.nest.map_structure(  # arrays of samples ([S, ...]), seed pairs [2, 2], scalars
                lambda a: tf.TensorSpec([None, *a.shape[1:]] if a.ndim else [], tf.as_dtype(a.dtype)), part)
            if order == "chunk":

                def make_part(part):
                    return tf.data.Dataset.from_tensor_slices(part).batch(batch_size, drop_remainder=True)

                make = _chunk_batch_fn(self.source, self.preprocessor, self.augment, num_views)
            else:

                def make_part(part):  # _shuffled_batches, from tensors
                    ds = _shuffled_part(part["samples"], batch_size, part["seeds"], part["passes"], reshuffle)
                    return ds.take(part["steps"]).skip(part["skip"])

                make = _shuffled_batch_fn(self.source, self.preprocessor, self.augment, num_views)
            self._feeds[kind], self._pending[kind] = _Feed(signature, make_part, make), []
        return self._feeds[kind]

    def _part(self, stage: Stage, skip: int) -> dict:
        """What `_Feed` turns into the stage's batches after its first `skip` (NumPy)."""
        if stage.order == "chunk":
            part = _chunk_elements(self.source, stage.indices, self.augment, stage.batch_size, self.seed,
                                   self.epoch_index, stage.chunk, stage.repeats, stage.num_views, steps=stage.steps)
            return tf.nest.map_structure(lambda a: a[skip * stage.batch_size:], part)
        samples = _shuffled_samples(self.source, stage.batch_size, stage.indices, stage.repeats, stage.steps)
        return {"samples": samples, "seeds": _seed_pairs(_stage_seed(self.seed, self.epoch_index, stage.chunk)),
                "passes": np.int64(stage.repeats), "steps": np.int64(stage.steps), "skip": np.int64(skip)}

    def batches(self, index: int, skip: int = 0):
        """An iterator over stage `index`'s batches after its first `skip` (blocks of `per_call` when > 1)."""
        stage = self.stages[index]
        if not self._shared(stage):
            ds = stage_dataset(self.source, self.preprocessor, self.augment, stage, self.seed, self.epoch_index)
            ds = ds.skip(skip) if skip else ds
            return iter(ds.batch(self.per_call) if self.per_call > 1 else ds)
        kind = self._kind(stage)
        pending = self._pending.get(kind, [])
        in_turn = (kind in self._feeds and pending[:1] == [index] and not skip  # its next batches are this stage's
                   and self._feeds[kind].owed == sum(self.stages[j].steps for j in pending))
        if not in_turn:
            if kind in self._feeds and (pending or self._feeds[kind].owed):  # a new pipeline
                self._feeds.pop(kind).close()
                self._pending.pop(kind)
            for j in self._group(index):
                part = self._part(self.stages[j], skip if j == index else 0)
                self._feed(kind, part).put(part, self.stages[j].steps - (skip if j == index else 0))
                self._pending[kind].append(j)
        self._pending[kind].pop(0)
        return self._feeds[kind].take(stage.steps - skip, stage.name)


def training_options() -> tf.data.Options:
    """tf.data options of the training pipelines: the autotuner off.

    The AUTOTUNE map parallelism and prefetch buffer then keep tf.data's fixed
    defaults. With the autotuner on, a live training iterator slowed the steps
    beside it (docs/RESULTS.md, "Speed"). Batches and their order are unchanged.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def eval_images(source: Source, preprocessor: Preprocessor, batch_size: int):
    """The preprocessed images [B, ...] of `eval_dataset`'s batches, in source order, as an iterable.

    Data that fit in one batch (a chunk's targets) are preprocessed directly: building and
    instantiating a pipeline for one batch took 24 ms against 3 ms (1,000 MNIST images, 2 CPUs).
    """
    if len(source) <= batch_size:
        return [preprocessor(tf.constant(source.x))]
    return (batch["image"] for batch in eval_dataset(source, preprocessor, batch_size))


def eval_dataset(source: Source, preprocessor: Preprocessor, batch_size: int) -> tf.data.Dataset:
    """Preprocessed images in source order: dicts of "image" [B,...] and "label" [B]."""
    ds = tf.data.Dataset.from_tensor_slices({"raw": source.x, "label": source.y})
    ds = ds.batch(batch_size).map(lambda e: {"image": preprocessor(e["raw"]), "label": e["label"]},
                                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
