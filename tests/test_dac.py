import numpy as np
import pytest
import tensorflow as tf

from tfcluster.data.sources import DatasetInfo
from tfcluster.losses import dac as dac_loss
from tfcluster.configs.dac import DACConfig, ThresholdSchedule, official_cpu_preset, official_preset
from tfcluster.errors import InputError
from tfcluster.methods.dac import DAC
from tfcluster.nets import build_allconvnet
from tfcluster.nets.allconv import build_official_mnist_net
from tfcluster.training.strategy import make_strategy
from tfcluster.nets.batchnorm import BatchNormCalibrator
from tfcluster.nets.layers import RestraintLayer
from tfcluster.visualize import circle_mapping

from stepping import global_step


def test_restraint_layer_matches_numpy_and_outputs_nonnegative_unit_vectors():
    x = np.random.RandomState(0).randn(6, 5).astype(np.float32) * 3
    out = RestraintLayer()(x).numpy()
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(out, e / np.linalg.norm(e, axis=1, keepdims=True), rtol=1e-6)
    assert np.all(out > 0) and np.all(out <= 1)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    big = RestraintLayer()(np.array([[1000.0, 0.0, -1000.0]], np.float32)).numpy()
    assert np.all(np.isfinite(big)) and big[0, 0] == pytest.approx(1.0)


def test_threshold_schedule_is_the_papers():
    s = ThresholdSchedule()
    assert s.thresholds(0.0) == pytest.approx((0.95, 0.455))
    u, l = s.thresholds(s.lambda_at(10))
    assert u == pytest.approx(0.95 - 10 * 0.0099) and l == pytest.approx(0.455 + 0.1 * 10 * 0.0099)
    last = s.last_epoch()
    assert not s.finished(s.lambda_at(last - 1)) and s.finished(s.lambda_at(last))
    assert last == int(np.ceil((0.95 - 0.455) / 1.1 / 0.0099))  # lambda >= 0.45 closes the gap


def _numpy_dac_loss(f, u, l):
    s = f @ f.T
    r = (s > u).astype(np.float64)
    v = ((s > u) | (s < l)).astype(np.float64)
    np.fill_diagonal(v, 0)
    sc = np.clip(s, 1e-7, 1 - 1e-7)
    bce = -(r * np.log(sc) + (1 - r) * np.log(1 - sc))
    return (bce * v).sum() / v.sum(), v.sum()


def test_dac_loss_matches_numpy():
    rng = np.random.RandomState(1)
    logits = rng.randn(12, 4) * 2
    f = RestraintLayer()(logits.astype(np.float32)).numpy().astype(np.float64)
    for u, l in ((0.95, 0.455), (0.8, 0.6)):
        loss_sum, selected, positive = dac_loss.dac_loss_terms(tf.constant(f), tf.constant(f), u, l)
        expected, count = _numpy_dac_loss(f, u, l)
        assert float(selected) == count > 0
        assert float(loss_sum) / float(selected) == pytest.approx(expected, rel=1e-6)
    # split into two "replicas": their sums add up to the whole
    parts = [dac_loss.dac_loss_terms(tf.constant(f[i:i + 6]), tf.constant(f), 0.8, 0.6, local_offset=i)
             for i in (0, 6)]
    whole = dac_loss.dac_loss_terms(tf.constant(f), tf.constant(f), 0.8, 0.6)
    assert sum(float(p[0]) for p in parts) == pytest.approx(float(whole[0]))
    assert sum(float(p[1]) for p in parts) == float(whole[1])


def test_pairs_selected_from_clean_features_when_given():
    view = tf.constant([[1.0, 0.0], [0.0, 1.0]], tf.float64)
    clean = tf.constant([[1.0, 0.0], [1.0, 0.0]], tf.float64)  # clean images say: same cluster
    loss_sum, selected, positive = dac_loss.dac_loss_terms(view, view, 0.9, 0.1, 0, clean, clean)
    assert float(selected) == 2 and float(positive) == 2
    assert float(loss_sum) == pytest.approx(2 * -np.log(1e-7), rel=1e-4)  # views disagree: large loss


def test_cross_view_pairs_keep_each_images_two_views_as_a_positive():
    rng = np.random.RandomState(3)
    first = RestraintLayer()(rng.randn(6, 3).astype(np.float32) * 2).numpy().astype(np.float64)
    second = RestraintLayer()(rng.randn(6, 3).astype(np.float32) * 2).numpy().astype(np.float64)
    clean = RestraintLayer()(rng.randn(6, 3).astype(np.float32) * 2).numpy().astype(np.float64)
    u, l = 0.9, 0.5
    loss_sum, selected, positive = dac_loss.dac_loss_terms(
        tf.constant(first), tf.constant(second), u, l, 0, tf.constant(clean), tf.constant(clean), exclude_self=False)
    t = clean @ clean.T
    r, v = (t > u).astype(float), ((t > u) | (t < l)).astype(float)
    assert np.all(np.diag(r) == 1)  # clean self-similarity is 1: every image's views are a positive pair
    s = np.clip(first @ second.T, 1e-7, 1 - 1e-7)
    expected = (-(r * np.log(s) + (1 - r) * np.log(1 - s)) * v).sum()
    assert float(selected) == v.sum() and float(positive) == r.sum()
    assert float(loss_sum) == pytest.approx(expected, rel=1e-6)


def test_official_loss_is_the_squared_error_over_all_pairs_of_one_view():
    rng = np.random.RandomState(7)
    f = RestraintLayer()(rng.randn(10, 4).astype(np.float32) * 2).numpy().astype(np.float64)
    t = RestraintLayer()(rng.randn(10, 4).astype(np.float32) * 2).numpy().astype(np.float64)
    th = 0.7
    r = (t @ t.T > th).astype(float)
    assert np.all(np.diag(r) == 1) and 0 < r.sum() < 100  # self-pairs are kept: target similarity 1
    expected = ((f @ f.T - r) ** 2).sum()
    parts = [dac_loss.official_loss_terms(tf.constant(f[i:i + 5]), tf.constant(f), th, tf.constant(t[i:i + 5]),
                                          tf.constant(t)) for i in (0, 5)]
    assert sum(float(p[0]) for p in parts) == pytest.approx(expected, rel=1e-9)
    assert sum(float(p[1]) for p in parts) == r.sum()


def test_official_mnist_network_is_the_scripts():
    model = build_official_mnist_net((28, 28, 1), 10)
    convs = [l for l in model.layers if l.name.endswith("conv")]
    assert [c.filters for c in convs] == [64, 64, 64, 128, 128, 128, 10]
    assert [c.padding for c in convs[:6]] == ["valid"] * 6
    assert model.get_layer("block1_pool").output.shape[1:3] == (11, 11)
    assert model.get_layer("block2_pool").output.shape[1:3] == (2, 2)
    for name in ("dense1", "dense2"):  # K -> K, initialised to the identity
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), np.eye(10))
    out = model(np.random.rand(3, 28, 28, 1).astype(np.float32), training=False).numpy()
    assert np.all(out >= 0)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    for side in (16, 21):  # 21 -> 15 -> 7 -> 1: nothing left to pool
        with pytest.raises(ValueError, match="side >= 22"):
            build_official_mnist_net((side, side, 1), 10)
    assert build_official_mnist_net((22, 30, 1), 10).get_layer("block2_pool").output.shape[1:3] == (1, 3)


def test_official_presets_follow_the_script():
    info = DatasetInfo("t", 10, (28, 28, 1), num_samples=5000)
    cfg = official_preset(info)
    s = cfg.schedule
    assert s.last_epoch() == 20  # th = 0.9 lowered by 0.02 per epoch until 0.5
    assert [round(s.thresholds(s.lambda_at(e))[0], 6) for e in (0, 1, 19)] == [0.9, 0.88, 0.52]
    assert (cfg.network, cfg.loss, cfg.select_on, cfg.chunk_size, cfg.chunk_repeats, cfg.batch_size) == \
        ("official", "official", "chunk", 1000, 5, 128)
    small = official_cpu_preset(info)
    assert small.width == 0.5 and small.schedule.last_epoch() == 20
    big = official_cpu_preset(DatasetInfo("t", 10, (28, 28, 1), num_samples=70000)).schedule
    assert big.last_epoch() == 2 and big.thresholds(big.lambda_at(1))[0] == pytest.approx(0.7)
    with pytest.raises(InputError, match="select_on must be"):
        DAC(DACConfig(loss="official"), info, 10, make_strategy("one_device"), (28, 28, 1))


def test_cpu_preset_trains_per_chunk_for_its_image_budget_within_the_papers_schedule():
    from tfcluster.configs.dac import cpu_preset

    def resolved(n):
        return cpu_preset(DatasetInfo("t", 10, (28, 28, 1), num_samples=n))

    cfg = resolved(5000)
    assert (cfg.select_on, cfg.chunk_size, cfg.chunk_repeats, cfg.epochs, cfg.eval_every) == ("chunk", 1000, 1, 36, 6)
    assert cfg.schedule.last_epoch() == 46  # the paper's schedule, not squeezed
    assert resolved(70000).epochs == 3 and resolved(70000).eval_every == 1
    assert resolved(300).epochs == 46  # the budget would be 600 epochs: the schedule closes first


@pytest.mark.parametrize("shape,variant,out_hw", [((28, 28, 1), "mnist", 7), ((32, 32, 3), "cifar", 8),
                                                  ((96, 96, 3), "stl", 6)])
def test_allconvnet_table1_shapes(shape, variant, out_hw):
    model = build_allconvnet(shape, 10)
    convs = [l for l in model.layers if l.name.endswith("conv")]
    kernel = 5 if variant == "stl" else 3
    assert [c.filters for c in convs] == [64, 64, 64, 128, 128, 128, 10]
    assert [c.kernel_size[0] for c in convs] == [kernel] * 6 + [1]
    assert convs[2].strides[0] == convs[5].strides[0] == (4 if variant == "stl" else 2)
    assert model.get_layer("block7_relu").output.shape[1] == out_hw
    assert all(type(c.kernel_initializer).__name__ == "HeNormal" for c in convs)
    out = model(np.random.rand(3, *shape).astype(np.float32), training=False).numpy()
    assert out.shape == (3, 10) and np.all(out >= 0)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_batchnorm_calibration_gives_population_statistics():
    model = build_allconvnet((12, 12, 1), 4, width=0.125)
    x = np.random.RandomState(5).rand(40, 12, 12, 1).astype(np.float32)
    batches = [x[i:i + 16] for i in range(0, 40, 16)]  # uneven batches: 16, 16, 8
    BatchNormCalibrator(model)(lambda fn: np.concatenate([fn(b).numpy() for b in batches]))
    # Inference with the population statistics == training mode with the whole data as one batch.
    np.testing.assert_allclose(model(x, training=False).numpy(), model(x, training=True).numpy(),
                               rtol=1e-3, atol=1e-4)
    first = model.get_layer("block1_bn")
    h = model.get_layer("block1_conv")(x).numpy()
    np.testing.assert_allclose(first.moving_mean.numpy(), h.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(first.moving_variance.numpy(), h.var((0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_circle_mapping_puts_one_hot_on_polygon_vertices():
    pts = circle_mapping(np.eye(4))
    np.testing.assert_allclose(pts, [[1, 0], [0, -1], [-1, 0], [0, 1]], atol=1e-12)
    np.testing.assert_allclose(circle_mapping(np.ones((1, 6))), [[0, 0]], atol=1e-12)


def _one_step(strategy, batch_np, select_on):
    tf.keras.utils.set_random_seed(0)
    info = DatasetInfo("t", 4, (12, 12, 1))
    official = select_on == "official"
    cfg = DACConfig(width=0.125, bn_momentum=0.9, batch_size=8, select_on="epoch" if official else select_on,
                    schedule=ThresholdSchedule(upper0=0.8, lower0=0.6), loss="official" if official else "bce")
    method = DAC(cfg, info, 4, strategy, (12, 12, 1))
    method.build()
    if select_on in ("epoch", "official"):
        # The eager stage: targets from the clean images (batch-statistics BN).
        images = tf.constant(batch_np["image"])
        method.begin_epoch(0, lambda fn=None, **_: (fn or tf.function(method.predict))(images).numpy())
    logs = global_step(strategy, method, batch_np)
    return logs, [w.numpy() for w in method.model.weights]


@pytest.mark.parametrize("select_on", ["view", "clean", "epoch", "official"])
def test_two_replica_step_equals_one_device_step(select_on):
    rng = np.random.RandomState(0)
    views = 2 if select_on == "epoch" else 1
    batch = {"image": rng.randn(8, 12, 12, 1).astype(np.float32),
             "views": rng.randn(8, views, 12, 12, 1).astype(np.float32),
             "index": np.arange(8, dtype=np.int64)}
    # The process-wide cached strategies: several MirroredStrategy objects in one
    # process allocate clashing collective keys.
    mirrored = make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    logs1, w1 = _one_step(make_strategy("one_device"), batch, select_on)
    logs2, w2 = _one_step(mirrored, batch, select_on)
    assert logs1["loss"] > 0
    assert logs1["loss"] == pytest.approx(logs2["loss"], rel=1e-5)
    key = "dac/positive_fraction" if select_on == "official" else "dac/selected_fraction"
    assert logs1[key] == pytest.approx(logs2[key])
    # RMSProp's first step moves every weight by about lr / sqrt(1 - rho) = 3e-3
    # whatever the gradient's size, so a near-zero gradient's summation-order noise
    # can show up as ~1e-5 in an isolated weight: bound the worst case at 3% of a
    # step and require the typical difference to be float32 noise.
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(w1, w2)])
    assert np.median(diffs) < 1e-7
    init = _fresh_weights()
    changed = sum(not np.allclose(a, b) for a, b in zip(w1, init))
    assert changed > 0  # the step really updated weights


def _fresh_weights():
    tf.keras.utils.set_random_seed(0)
    info = DatasetInfo("t", 4, (12, 12, 1))
    method = DAC(DACConfig(width=0.125), info, 4, make_strategy("one_device"), (12, 12, 1))
    method.build()
    return [w.numpy() for w in method.model.weights]
