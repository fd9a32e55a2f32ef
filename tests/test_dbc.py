"""DBC: unpooling, eqs. (1)-(5) against NumPy, Property 2, stop rule, stages, distribution."""

import collections
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tfcluster import run
from tfcluster.data.sources import DatasetInfo
from tfcluster.errors import InputError
from tfcluster.export import ExportedModel
from tfcluster.losses import dbc as dbc_loss
from tfcluster.configs.dbc import DBCConfig
from tfcluster.methods.dbc import DBC
from tfcluster.nets.fcae import MaxPoolWithArgmax, MaxUnpool, build_fcae
from tfcluster.training.loop import Trainer
from tfcluster.training.strategy import make_strategy

from stepping import global_step


def test_unpooling_restores_values_at_argmax_positions_and_passes_gradients():
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(2, 4, 6, 3).astype(np.float32))
    pooled, argmax = MaxPoolWithArgmax()(x)
    assert pooled.shape == (2, 2, 3, 3)
    xn = x.numpy()
    weights = rng.randn(2, 4, 6, 3).astype(np.float32)
    expected = np.zeros_like(xn)
    expected_pooled, expected_grad = np.zeros((2, 2, 3, 3), np.float32), np.zeros((2, 2, 3, 3), np.float32)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                for c in range(3):
                    window = xn[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c]
                    di, dj = np.unravel_index(window.argmax(), (2, 2))
                    expected[b, 2 * i + di, 2 * j + dj, c] = expected_pooled[b, i, j, c] = window.max()
                    expected_grad[b, i, j, c] = weights[b, 2 * i + di, 2 * j + dj, c]
    np.testing.assert_array_equal(pooled.numpy(), expected_pooled)
    values = tf.Variable(pooled)
    with tf.GradientTape() as tape:
        out = MaxUnpool()([values, argmax])
        loss = tf.reduce_sum(out * weights)
    np.testing.assert_array_equal(out.numpy(), expected)
    # d loss / d values = the weights at the arg-max positions
    grad = tape.gradient(loss, values).numpy()
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6)


@pytest.mark.parametrize("shape,dim", [((28, 28, 1), 120), ((16, 16, 1), 160), ((128, 128, 3), 320)])
def test_fcae_table2_shapes_are_symmetric(shape, dim):
    ae, enc = build_fcae(shape)
    x = np.random.rand(2, *shape).astype(np.float32)
    recon, feats = ae(x, training=False)
    assert recon.shape == (2,) + shape and feats.shape == (2, dim)
    np.testing.assert_allclose(enc(x, training=False).numpy(), feats.numpy(), rtol=1e-5)
    names = [l.name for l in ae.layers]
    assert sum(n.endswith("_pool") for n in names) == sum(n.endswith("_unpool") for n in names) >= 2
    assert not any(isinstance(l, tf.keras.layers.Dense) for l in ae.layers)
    last = ae.get_layer("dec1_deconv")
    assert "dec1_bn" not in names and last.filters == shape[-1]  # linear output, no BN
    with pytest.raises(ValueError, match="configurations"):
        build_fcae((32, 32, 3))


def _np_soft(z, mu, v):
    d2 = ((z[:, None] - mu[None]) ** 2).sum(-1)
    q = (1 + d2 / v) ** (-(v + 1) / 2)
    return q / q.sum(1, keepdims=True)


@pytest.mark.parametrize("v", [1.0, 2.5])
def test_soft_assignment_is_eq1(v):
    rng = np.random.RandomState(1)
    z, mu = rng.randn(7, 4), rng.randn(3, 4)
    s = dbc_loss.soft_assign(tf.constant(z), tf.constant(mu), v).numpy()
    np.testing.assert_allclose(s, _np_soft(z, mu, v), rtol=1e-10)
    np.testing.assert_allclose(s.sum(1), 1.0)


@pytest.mark.parametrize("normalization", ["none", "soft", "boosted"])
@pytest.mark.parametrize("alpha", [1.5, 2.0, 4.0])
def test_boosted_target_is_eq2(normalization, alpha):
    s = _np_soft(np.random.RandomState(2).randn(9, 3), np.random.RandomState(3).randn(4, 3), 1.0)
    r = dbc_loss.boosted_target(s, alpha, normalization)
    n = {"none": np.ones(4), "soft": s.sum(0), "boosted": (s ** alpha).sum(0)}[normalization]
    expected = np.empty_like(s)
    for i in range(9):
        for j in range(4):
            expected[i, j] = (s[i, j] ** alpha / n[j]) / sum(s[i, k] ** alpha / n[k] for k in range(4))
    np.testing.assert_allclose(r, expected, rtol=1e-12)
    if normalization == "none":  # boosting sharpens every row and keeps its arg-max
        assert np.all(r.max(1) > s.max(1)) and np.all(r.argmax(1) == s.argmax(1))
    with pytest.raises(ValueError, match="normalization"):
        dbc_loss.boosted_target(s, alpha, "dec")


@pytest.mark.parametrize("v", [1.0, 3.0])
def test_kl_gradients_are_eqs_4_and_5(v):
    rng = np.random.RandomState(4)
    z = tf.Variable(rng.randn(5, 3))
    mu = tf.Variable(rng.randn(4, 3))
    r = dbc_loss.boosted_target(_np_soft(z.numpy(), mu.numpy(), v), 2.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(dbc_loss.kl_rows(tf.constant(r), dbc_loss.soft_assign(z, mu, v)))
    gz, gmu = tape.gradient(loss, [z, mu])
    zn, mun = z.numpy(), mu.numpy()
    s = _np_soft(zn, mun, v)
    diff = zn[:, None] - mun[None]  # [i, j, d] = z_i - mu_j
    w = (r - s) / (1 + (diff ** 2).sum(-1) / v)  # [i, j]
    eq4 = (1 + v) / v * (w[:, :, None] * diff).sum(1)
    eq5 = (1 + v) / v * (w[:, :, None] * -diff).sum(0)
    np.testing.assert_allclose(gz.numpy(), eq4, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(gmu.numpy(), eq5, rtol=1e-8, atol=1e-12)
    # the loss itself is KL(R || S)
    assert float(loss) == pytest.approx(float((r * np.log(r / s)).sum()), rel=1e-10)


def test_property_2_repeated_boosting_drives_rows_to_one_hot():
    s = np.array([[0.3, 0.29, 0.21, 0.2], [0.25, 0.25, 0.25, 0.25]])
    r = s
    for _ in range(12):
        r = dbc_loss.boosted_target(r, 2.0, "none")
    np.testing.assert_allclose(r[0], [1, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(r[1], 0.25)  # Property 1: the hardest sample stays uniform


def test_changed_fraction():
    assert dbc_loss.changed_fraction([0, 1, 2, 3], [0, 1, 3, 2]) == 0.5
    assert dbc_loss.changed_fraction([1, 1], [1, 1]) == 0.0


def test_bad_settings_are_clear_errors():
    info = DatasetInfo("t", 4, (28, 28, 1))
    with pytest.raises(InputError, match="normalization"):
        DBC(DBCConfig(normalization="x"), info, 4, make_strategy("one_device"), (28, 28, 1))
    with pytest.raises(InputError, match="alpha"):
        DBC(DBCConfig(alpha=1.0), info, 4, make_strategy("one_device"), (28, 28, 1))
    with pytest.raises(InputError, match="configurations"):
        DBC(DBCConfig(), DatasetInfo("t", 4, (32, 32, 3)), 4, make_strategy("one_device"), (32, 32, 3))


def _one_step(strategy, batch_np, phase):
    tf.keras.utils.set_random_seed(0)
    info = DatasetInfo("t", 3, (16, 16, 1))
    method = DBC(DBCConfig(width=0.25, bn_momentum=0.9, batch_size=8, ae_epochs=1, kmeans_n_init=2), info, 3,
                 strategy, (16, 16, 1))
    method.build()
    images = tf.constant(batch_np["image"])

    def predict_all(fn=None, **_):
        return (fn or tf.function(method.predict))(images).numpy()

    stages = method.epoch_plan(1 if phase == "cluster" else 0, predict_all).stages
    assert stages[0].name == phase
    if phase == "cluster":
        method.init_centres(predict_all, seed=0)
        stages[0].begin()
    logs = global_step(strategy, method, batch_np, step=stages[0].step)
    return logs, [w.numpy() for w in method.autoencoder.weights] + [method.centres.numpy()]


@pytest.mark.parametrize("phase", ["autoencoder", "cluster"])
def test_two_replica_step_equals_one_device_step(phase):
    rng = np.random.RandomState(0)
    batch = {"image": rng.rand(8, 16, 16, 1).astype(np.float32), "index": np.arange(8, dtype=np.int64)}
    mirrored = make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    logs1, w1 = _one_step(make_strategy("one_device"), batch, phase)
    logs2, w2 = _one_step(mirrored, batch, phase)
    assert logs1["loss"] > 0
    assert logs1["loss"] == pytest.approx(logs2["loss"], rel=1e-5)
    # Adam's first step moves each weight by about lr = 1e-3 whatever its gradient's
    # size, so a near-zero gradient's summation-order noise can show in an isolated
    # weight: bound the worst case at 10% of a step, the typical one at round-off.
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(w1, w2)])
    assert np.median(diffs) < 1e-7
    assert sum(not np.allclose(a, b) for a, b in zip(w1, _fresh_weights())) > 0  # the step changed weights


@pytest.mark.parametrize("augmenting,augment_autoencoder", [(False, True), (True, True), (True, False)])
def test_steps_train_on_the_augmented_view_when_the_config_augments(augmenting, augment_autoencoder):
    """Stage I reconstructs, and stage II assigns, the view when `augment` is set (stage I only with
    `augment_autoencoder`), else the clean image."""
    from tfcluster.configs.base import AugmentConfig

    tf.keras.utils.set_random_seed(0)
    info = DatasetInfo("t", 3, (16, 16, 1))
    augment = AugmentConfig(rotation=10.0) if augmenting else AugmentConfig()
    method = DBC(DBCConfig(width=0.25, bn_momentum=0.9, batch_size=4, ae_epochs=1, kmeans_n_init=2,
                           augment=augment, augment_autoencoder=augment_autoencoder),
                 info, 3, make_strategy("one_device"), (16, 16, 1))
    method.build()
    rng = np.random.RandomState(0)
    image = rng.rand(4, 16, 16, 1).astype(np.float32)
    view = rng.rand(4, 16, 16, 1).astype(np.float32)

    def batch(views):
        return {"image": image, "views": view[:, None] if views else np.zeros((4, 0, 16, 16, 1), np.float32),
                "index": np.arange(4, dtype=np.int64)}

    ae_views = augmenting and augment_autoencoder
    stage = method.epoch_plan(0, None).stages[0]
    assert stage.name == "autoencoder" and stage.num_views == int(ae_views)
    x = view if ae_views else image
    recon, _ = method.autoencoder(x, training=True)
    expected = np.sum((recon.numpy() - x) ** 2) / 4
    logs = global_step(make_strategy("one_device"), method, batch(ae_views), step=stage.step)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)

    def predict_all(fn=None, **_):
        return (fn or tf.function(method.predict))(tf.constant(image)).numpy()

    method.init_centres(predict_all, 0)
    stage = method.epoch_plan(1, predict_all).stages[0]
    assert stage.name == "cluster" and stage.num_views == int(augmenting)
    r = rng.dirichlet(np.ones(3), 4).astype(np.float32)
    method.keep_targets("targets", r)
    x = view if augmenting else image
    s = dbc_loss.soft_assign(method.encoder(x, training=False), method.centres, 1.0).numpy()
    expected = np.sum(r * np.log(r / s)) / 4
    logs = global_step(make_strategy("one_device"), method, batch(augmenting), step=method._cluster_step)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)


def _fresh_weights():
    tf.keras.utils.set_random_seed(0)
    method = DBC(DBCConfig(width=0.25, bn_momentum=0.9, batch_size=8, ae_epochs=1, kmeans_n_init=2),
                 DatasetInfo("t", 3, (16, 16, 1)), 3, make_strategy("one_device"), (16, 16, 1))
    method.build()
    return [w.numpy() for w in method.autoencoder.weights] + [method.centres.numpy()]


def _dbc_options(workdir, *overrides, method="dbc"):
    """Short DBC runs on one device (the replica tests check two)."""
    return run.RunOptions(method=method, dataset="mnist1k", workdir=str(workdir), preset="cpu", seed=0,
                          overrides=("batch_size=100", "kmeans_n_init=4") + overrides, progress=False,
                          strategy="one_device")


def test_stop_rule_ends_stage_two_and_a_finished_run_stays_finished(tmp_path, mnist_small):
    messages = []
    out = run.train(_dbc_options(tmp_path, "ae_epochs=1", "epochs=5", "tol=1.0"), log=messages.append,
                    source=mnist_small)
    assert out["epochs_run"] == 2  # one stage I epoch, then stage II stops after its first
    assert any("stopping rule" in m for m in messages)
    messages = []
    again = run.train(_dbc_options(tmp_path, "ae_epochs=1", "epochs=5", "tol=1.0"), log=messages.append,
                      source=mnist_small)
    assert again["epochs_run"] == 0 and again["steps"] == out["steps"]


class _Interrupt(Exception):
    pass


def test_a_run_killed_in_stage_two_resumes_in_stage_two(tmp_path, mnist_small):
    opts = _dbc_options(tmp_path, "ae_epochs=2", "epochs=3", "tol=0", "checkpoint_every=1")

    def stop_in_stage_two(message):
        if message.startswith("epoch 3/"):
            raise _Interrupt()

    with pytest.raises(_Interrupt):
        run.train(opts, log=stop_in_stage_two, source=mnist_small)
    method, source, pre, _ = run.build(opts, mnist_small)
    trainer = Trainer(method, source, str(tmp_path), progress=False, log=lambda m: None)
    trainer.restore()
    assert int(trainer.epoch.numpy()) == 3 and bool(method.centres_ready.numpy())
    centres = method.centres.numpy()
    assert np.abs(centres).sum() > 0
    messages = []
    out = run.train(opts, log=messages.append, source=mnist_small)
    assert any(m.startswith("resumed from") for m in messages)
    assert out["epochs_run"] == 2 and out["steps"] == 5 * 10


@pytest.mark.slow
def test_short_run_beats_kmeans_on_pixels(tmp_path, mnist_small):
    kmeans = run.train(run.RunOptions(method="kmeans", dataset="mnist1k", workdir=str(tmp_path / "km"),
                                      preset="cpu", seed=0, progress=False), log=lambda m: None,
                       source=mnist_small)
    # without the cpu preset's augmentation (the paper's DBC): on 1,000 images augmented training needs
    # more than this short run (40 + 40 epochs gave 0.546 against 0.63 unaugmented)
    dbc = run.train(_dbc_options(tmp_path / "dbc", "ae_epochs=40", "epochs=15", "augment.rotation=0",
                                 "augment.shift=0", "augment.scale=1,1"), log=lambda m: None, source=mnist_small)
    assert dbc["acc"] > kmeans["acc"] + 0.03, (dbc["acc"], kmeans["acc"])
    # summaries every 10 epochs of a stage and at its last: stage I's epochs 0, 10, 20, 30, 39, stage II's 40, 50, 54
    tags = collections.Counter()
    for path in glob.glob(os.path.join(str(tmp_path / "dbc"), "tensorboard", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert tags["dbc/reconstructions"] == 5 and tags["dbc_scores/cluster_0"] == 3
    outputs = ExportedModel(dbc["export"]).signature.structured_outputs
    assert {"cluster", "probabilities", "embedding"} <= set(outputs)


def test_cpu_preset_checkpoints_about_every_25000_images():
    from tfcluster.configs.dbc import cpu_preset

    every = {n: cpu_preset(DatasetInfo("t", 10, (28, 28, 1), num_samples=n)).checkpoint_every
             for n in (1_000, 5_000, 70_000)}
    assert every == {1_000: 25, 5_000: 5, 70_000: 1}
