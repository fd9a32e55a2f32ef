"""Chunked targets (DAC select_on="chunk", DCCM targets="chunk"): the plan, the targets, the draws."""

import numpy as np
import pytest
import tensorflow as tf

from tfcluster import run
from tfcluster.data import pipeline
from tfcluster.data.preprocess import Preprocessor
from tfcluster.data.sources import make_source
from tfcluster.errors import InputError
from tfcluster.methods.clean_targets import chunk_stages
from tfcluster.plan import Stage
from tfcluster.nets.batchnorm import BatchNormCalibrator
from tfcluster.training.loop import Trainer


def test_an_epoch_of_chunks_covers_disjoint_chunks_with_repeats_passes_each():
    calls = []
    stages = chunk_stages(lambda b: {}, num_samples=1050, chunk_size=200, repeats=3, batch_size=64, num_views=2,
                          seed=4, epoch=1, begin_chunk=lambda c, idx: calls.append((c, idx)) or {})
    assert len(stages) == 5  # floor(1050 / 200); the 50 left over change with the epoch
    assert all(s.steps == 3 * 200 // 64 and s.repeats == 3 and s.num_views == 2 and s.order == "shuffle"
               for s in stages)
    chunks = [s.indices for s in stages]
    assert len(np.unique(np.concatenate(chunks))) == 1000
    np.testing.assert_array_equal(chunks, pipeline.chunk_order(1050, 200, 4, 1))
    stages[3].begin()
    assert calls[0][0] == 3 and calls[0][1] is chunks[3]
    # a chunk larger than the data is the whole data
    assert [len(s.indices) for s in chunk_stages(lambda b: {}, 100, 1000, 1, 10, 0, 0, 0, lambda c, i: {})] == [100]


def test_shuffled_chunks_of_an_epoch_draw_their_own_orders_and_views():
    rng = np.random.RandomState(0)
    source = make_source("t", rng.randint(0, 255, (40, 8, 8, 1)).astype(np.uint8), np.zeros(40, np.int64),
                         num_classes=2)
    from tfcluster.configs.base import AugmentConfig

    aug = AugmentConfig(rotation=20.0, shift=0.1)
    same = np.arange(20)

    def first_batch(chunk):
        stage = Stage(step=lambda b: {}, steps=1, batch_size=20, indices=same, num_views=1, chunk=chunk)
        return next(iter(pipeline.stage_dataset(source, Preprocessor.fit(source.x), aug, stage, seed=1, epoch=0)))

    a, b, a_again = first_batch(1), first_batch(2), first_batch(1)
    np.testing.assert_array_equal(a["views"].numpy(), a_again["views"].numpy())
    order_a, order_b = a["index"].numpy(), b["index"].numpy()
    views_a = a["views"].numpy()[np.argsort(order_a)]
    views_b = b["views"].numpy()[np.argsort(order_b)]
    assert not np.array_equal(order_a, order_b) and not np.allclose(views_a, views_b)


def _method_and_trainer(tmp_path, method, source, overrides):
    options = run.RunOptions(method=method, dataset="digits", workdir=str(tmp_path), preset="cpu", seed=0,
                             overrides=overrides, progress=False, export=False, precision="float32",
                             strategy="one_device")
    built, _, _, _ = run.build(options, source=source)
    return built, Trainer(built, source, str(tmp_path), progress=False, log=lambda m: None)


@pytest.mark.parametrize("method,overrides", [
    ("dac", ("select_on=chunk", "width=0.125", "batch_size=32", "chunk_size=100", "chunk_repeats=2", "epochs=1")),
    ("dccm", ("targets=chunk", "width=0.125", "batch_size=32", "chunk_size=100", "chunk_repeats=2", "epochs=1",
              "disc_units=16")),
    ("dac", ("select_on=chunk", "width=0.125", "batch_size=32", "chunk_size=100", "chunk_repeats=2", "epochs=1",
             "calibration_mode=layerwise")),
])
def test_a_chunks_targets_are_its_clean_predictions_with_batchnorm_calibrated_on_it(tmp_path, method, overrides,
                                                                                    mnist_small):
    source = make_source("m", mnist_small.x[:250], mnist_small.y[:250], num_classes=10)
    built, trainer = _method_and_trainer(tmp_path, method, source, overrides)
    plan = built.epoch_plan(0, trainer.predict_all)
    chunked = [s for s in plan.stages if s.steps]
    assert len(chunked) == 2 and all(s.steps == 2 * 100 // 32 for s in chunked)
    for stage in plan.stages[:1] if method == "dac" else []:
        stage.begin()  # DAC's schedule stage sets lambda
    chunked[0].begin()
    first_rows = built.epoch_targets.numpy()[chunked[0].indices]
    trainer._distributed_step(chunked[0].step)(next(iter(pipeline.stage_dataset(
        source, built.preprocessor, built.config.augment, chunked[0], 0, 0))))  # weights away from chunk 0's
    stage = chunked[1]
    stage.begin()
    # Independently: calibrate a copy of the network on the chunk's clean images, then predict them.
    x = np.concatenate([b["image"].numpy() for b in pipeline.eval_dataset(
        make_source("c", source.x[stage.indices], source.y[stage.indices], num_classes=10), built.preprocessor,
        500)])
    model = built.model
    moving = [w.numpy() for w in model.weights]
    BatchNormCalibrator(model, "one_pass")(lambda fn: fn(tf.constant(x)).numpy())
    out = model(x, training=False)
    expected = (out / tf.norm(out, axis=1, keepdims=True) if method == "dac" else out["probabilities"]).numpy()
    for w, v in zip(model.weights, moving):
        w.assign(v)
    targets = built.epoch_targets.numpy()
    # One training-mode pass over the chunk as a single batch gave the targets: equal to inference with
    # the chunk's statistics up to float32 round-off of the fused BatchNorm kernel, compounded over the
    # layers (test_dac: training mode on all data == inference with population statistics).
    np.testing.assert_allclose(targets[stage.indices], expected, rtol=5e-3, atol=1e-3)
    # chunk 0's rows keep the targets its own begin set (before the step)
    np.testing.assert_array_equal(targets[chunked[0].indices], first_rows)


def test_chunk_settings_are_checked():
    with pytest.raises(InputError, match="chunk_size"):
        run.build(run.RunOptions(method="dac", dataset="digits", preset="cpu", workdir="/tmp/unused",
                                 overrides=("select_on=chunk", "chunk_size=8", "batch_size=64")))


@pytest.mark.parametrize("method,overrides,every_epoch", [
    ("dac", ("select_on=chunk", "chunk_size=100"), False),
    ("dac", ("select_on=epoch",), True),  # the next epoch's targets need the calibrated statistics
    ("dccm", ("targets=chunk", "chunk_size=100", "disc_units=16"), False),
    ("gatcluster", ("large_batch=100", "target_batch=100"), False),
])
def test_end_of_epoch_recalibration_runs_only_before_an_evaluation_unless_targets_need_it(
        tmp_path, method, overrides, every_epoch, mnist_small):
    source = make_source("m", mnist_small.x[:250], mnist_small.y[:250], num_classes=10)
    built, trainer = _method_and_trainer(tmp_path, method, source,
                                         overrides + ("width=0.125", "batch_size=32", "epochs=5", "eval_every=2"))
    calls = []
    if method == "gatcluster":
        built._calibrator = lambda predict: calls.append("calibrate")
    else:
        built.clean_targets.calibrate = lambda *a, **k: calls.append("calibrate")
        built.clean_targets.keep = lambda predictions: None
    assert [built.evaluates_after(e) for e in range(5)] == [False, True, False, True, True]
    ran = []
    for epoch in range(5):
        end = built.epoch_plan(epoch, trainer.predict_all).stages[-1]
        assert not end.steps
        calls.clear()
        end.begin()
        ran.append(bool(calls))
    assert ran == ([True] * 5 if every_epoch else [False, True, False, True, True])


def test_stage_batches_read_one_pipeline_per_kind_for_the_run_with_each_stages_own_batches(monkeypatch):
    """data.pipeline.StageBatches: the batches of stage_dataset, stage by stage and epoch by epoch, from one
    pipeline per kind of stage for the whole run; resumed mid-stage, read out of turn, or left mid-stage (a
    stop), the batches stay right; a byte cap splits the stages put in together; blocks of steps keep a
    pipeline each."""
    from tfcluster.configs.base import AugmentConfig
    from tfcluster.plan import eager

    rng = np.random.RandomState(0)
    source = make_source("t", rng.randint(0, 255, (130, 6, 6, 1)).astype(np.uint8), np.arange(130) % 3,
                         num_classes=3)
    pre, aug = Preprocessor.fit(source.x), AugmentConfig(rotation=20.0, shift=0.1)

    def epoch_stages(epoch, repeats=2):
        stages = chunk_stages(lambda b: {}, num_samples=130, chunk_size=40, repeats=repeats, batch_size=16,
                              num_views=2, seed=3, epoch=epoch, begin_chunk=lambda c, i: {})
        stages.insert(2, eager(lambda: {}, "between"))  # eager work between chunks: nothing to read
        stages.append(Stage(step=lambda b: {}, steps=3, batch_size=8, num_views=1, name="other batch"))
        return tuple(stages)

    def reference(stages, epoch, index, skip=0, block=1):
        ds = pipeline.stage_dataset(source, pre, aug, stages[index], seed=3, epoch=epoch).skip(skip)
        return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in (ds.batch(block) if block > 1 else ds)]

    def read(feed, index, skip=0, n=None):
        batches = feed.batches(index, skip)
        return [tf.nest.map_structure(lambda t: t.numpy(), b) for _, b in zip(range(n or 10**6), batches)]

    def assert_same(got, want):
        assert len(got) == len(want) > 0
        for g, w in zip(got, want):
            assert g.keys() == w.keys()
            for key in g:
                np.testing.assert_array_equal(g[key], w[key])

    feeds, groups = [], []  # pipelines made; the first stage of each set of stages put in together
    real_init, real_group = pipeline._Feed.__init__, pipeline.StageBatches._group
    monkeypatch.setattr(pipeline._Feed, "__init__", lambda self, *a: feeds.append(1) or real_init(self, *a))
    monkeypatch.setattr(pipeline.StageBatches, "_group", lambda self, i: groups.append(i) or real_group(self, i))
    with_steps = [i for i, s in enumerate(epoch_stages(2)) if s.steps]
    with pipeline.StageBatches(source, pre, aug, seed=3) as feed:
        for epoch in (2, 3, 4):
            stages = epoch_stages(epoch, repeats=2 if epoch < 4 else 1)
            feed.epoch(epoch, stages)
            for i in with_steps:
                assert_same(read(feed, i), reference(stages, epoch, i))
        # two kinds (batch 16 of 2 views, reshuffled passes; batch 8), then one pass per chunk (a third)
        assert len(feeds) == 3 and groups == [0, 4] * 3  # the three chunks (across the eager stage) together
        feed.epoch(5, stages := epoch_stages(5))
        assert_same(read(feed, 0, n=2), reference(stages, 5, 0)[:2])  # a stop mid-stage, then the next epoch
        feed.epoch(6, stages := epoch_stages(6))
        assert_same(read(feed, 0), reference(stages, 6, 0))
        assert_same(read(feed, 3), reference(stages, 6, 3))  # out of turn: chunk 2 (stage 1) not read
        feed.epoch(7, stages := epoch_stages(7))
        assert_same(read(feed, 0, n=3), reference(stages, 7, 0)[:3])
        assert_same(read(feed, 1), reference(stages, 7, 1))  # the stage before left mid-way
        assert len(feeds) == 6  # the next epoch reused the pipeline stage 3 (out of turn) had emptied
    feeds.clear(), groups.clear()
    stages = epoch_stages(2)
    with pipeline.StageBatches(source, pre, aug, seed=3) as feed:  # resumed in chunk 2 at its step 2
        feed.epoch(2, stages)
        assert_same(read(feed, 1, skip=2), reference(stages, 2, 1, skip=2))
        assert_same(read(feed, 3), reference(stages, 2, 3))
        assert groups == [1] and len(feeds) == 1
    groups.clear()
    monkeypatch.setattr(pipeline, "SHARED_PIPELINE_BYTES", 2 * 40 * 36)  # two chunks' images at most
    with pipeline.StageBatches(source, pre, aug, seed=3) as feed:
        feed.epoch(2, stages)
        for i in with_steps[:3]:
            assert_same(read(feed, i), reference(stages, 2, i))
        assert groups == [0, 3]
    groups.clear()
    with pipeline.StageBatches(source, pre, aug, seed=3, per_call=4) as feed:
        feed.epoch(2, stages)
        assert_same(read(feed, 0), reference(stages, 2, 0, block=4))
        assert [len(b["index"]) for b in read(feed, 1)] == [4, 1] and groups == []
    # GATCluster's large batches ("chunk" order: each sample transformed once, passes in new orders)
    monkeypatch.setattr(pipeline, "SHARED_PIPELINE_BYTES", 64 * 2**20)
    rounds = pipeline.chunk_order(130, 50, seed=3, epoch=2)
    stages = tuple(Stage(step=lambda b: {}, steps=3 * (50 // 16), batch_size=16, indices=idx, repeats=3, num_views=2,
                         order="chunk", chunk=r, name=f"large batch {r + 1}") for r, idx in enumerate(rounds))
    with pipeline.StageBatches(source, pre, aug, seed=3) as feed:
        feed.epoch(2, stages)
        for i in range(len(stages)):
            assert_same(read(feed, i), reference(stages, 2, i))
        assert groups == [0]
        feed.epoch(2, stages)
        assert_same(read(feed, 0, skip=4), reference(stages, 2, 0, skip=4))


@pytest.mark.parametrize("global_seed", [0, 7])
@pytest.mark.parametrize("passes", [1, 3])
def test_shuffled_batches_are_those_of_dataset_shuffle_and_random(global_seed, passes):
    """pipeline._shuffled_part builds Dataset.shuffle's and Dataset.random's ops with their seed pairs given
    (as tensors in the run's pipelines): the same batches and view seeds as those methods, whatever the
    global seed (0 included, where Dataset.shuffle cannot take a tensor seed)."""
    tf.random.set_seed(global_seed)
    rng = np.random.RandomState(1)
    source = make_source("t", rng.randint(0, 255, (50, 4, 4, 1)).astype(np.uint8), np.arange(50) % 5, num_classes=5)
    keep = rng.permutation(50)[:30]
    got = pipeline._shuffled_batches(source, 8, seed=3, epoch=2, keep=keep, passes=passes, chunk=1)
    seed = pipeline._stage_seed(3, 2, 1)
    ds = tf.data.Dataset.from_tensor_slices({"raw": source.x[keep], "label": source.y[keep],
                                             "index": keep.astype(np.int64)})
    ds = (ds.shuffle(30, seed=seed, reshuffle_each_iteration=False) if passes == 1 else
          ds.shuffle(30, seed=seed, reshuffle_each_iteration=True).repeat(passes))
    want = tf.data.Dataset.zip((ds.batch(8, drop_remainder=True), tf.data.Dataset.random(seed=seed + 1).batch(2)))
    got, want = list(got.as_numpy_iterator()), list(want.as_numpy_iterator())
    assert len(got) == len(want) == passes * 30 // 8
    for (g, g_pair), (w, w_pair) in zip(got, want):
        np.testing.assert_array_equal(g_pair, w_pair)
        for key in w:
            np.testing.assert_array_equal(g[key], w[key])


def test_a_pipeline_dropped_without_close_ends_its_generator():
    """A _Feed's generator waits for parts; deleting its iterator waits for the generator, so a _Feed
    dropped without close() must end it (else the process hangs at that point)."""
    import subprocess
    import sys

    code = (
        "import gc, numpy as np, tensorflow as tf\n"
        "from tfcluster.data import pipeline\n"
        "feed = pipeline._Feed({'a': tf.TensorSpec([None], tf.int64)},\n"
        "                      lambda p: tf.data.Dataset.from_tensor_slices(p['a']).batch(2), lambda b: b * 2)\n"
        "feed.put({'a': np.arange(6)}, 3)\n"
        "assert [b.numpy().tolist() for b in feed.take(2, 's')] == [[0, 2], [4, 6]]\n"
        "del feed\n"
        "gc.collect()\n"
        "print('ended')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ended" in out.stdout, out.stderr[-2000:]


def test_eval_images_are_eval_datasets_images_whether_in_one_batch_or_several():
    rng = np.random.RandomState(2)
    source = make_source("t", rng.randint(0, 255, (30, 5, 5, 1)).astype(np.uint8), np.arange(30) % 3, num_classes=3)
    pre = Preprocessor.fit(source.x)
    for batch_size in (30, 64, 8):  # one batch (directly), one batch, several (tf.data)
        got = [x.numpy() for x in pipeline.eval_images(source, pre, batch_size)]
        want = [b["image"].numpy() for b in pipeline.eval_dataset(source, pre, batch_size)]
        assert len(got) == len(want) == -(-30 // batch_size)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
