"""DCCM: networks, eqs. (2)-(3), (7)-(9), (14) against NumPy, pair sampling, distribution, a real run."""

import numpy as np
import pytest
import tensorflow as tf

from tfcluster import run
from tfcluster.data.sources import DatasetInfo
from tfcluster.errors import InputError
from tfcluster.evaluation import metrics
from tfcluster.losses import common
from tfcluster.export import transfer
from tfcluster.export import ExportedModel
from tfcluster.losses import dccm as dccm_loss
from tfcluster.configs.dccm import DCCMConfig
from tfcluster.methods.dccm import DCCM
from tfcluster.nets.dccm import MIDiscriminator, build_dccm_net
from tfcluster.training.strategy import make_strategy

from stepping import global_step


@pytest.mark.parametrize("shape,shallow,deep_dim,pool1", [
    ((28, 28, 1), (24, 24, 64), 64, 12), ((32, 32, 3), (28, 28, 64), 64, 14),
    ((64, 64, 3), (12, 12, 128), 256, 14), ((96, 96, 3), (20, 20, 128), 64, 22)])
def test_table4_networks(shape, shallow, deep_dim, pool1):
    net = build_dccm_net(shape, 7)
    out = net(np.random.RandomState(0).rand(3, *shape).astype(np.float32), training=False)
    z = out["probabilities"].numpy()
    assert z.shape == (3, 7) and np.all(z >= 0)
    np.testing.assert_allclose(z.sum(1), 1.0, rtol=1e-5)  # eq. (1)
    assert out["shallow"].shape[1:] == shallow and out["deep"].shape == (3, deep_dim)
    assert out["conv"].shape == (3, 256)
    pooled = build_dccm_net(shape, 7, shallow="pool1", deep="logits")(np.zeros((1, *shape), np.float32))
    assert pooled["shallow"].shape[1:] == (pool1, pool1, 64) and pooled["deep"].shape == (1, 7)


def test_discriminator_split_first_layer_equals_a_1x1_conv_on_the_concatenation():
    rng = np.random.RandomState(0)
    s, d = rng.randn(2, 3, 4, 5).astype(np.float32), rng.randn(2, 6).astype(np.float32)
    disc = MIDiscriminator(8)
    scores = disc([s, d]).numpy()
    assert scores.shape == (2, 3, 4)
    w = np.concatenate([disc.c0_shallow.kernel.numpy(), disc.c0_deep.kernel.numpy()], 0)  # [Cs + Dd, units]
    x = np.concatenate([s, np.broadcast_to(d[:, None, None, :], (2, 3, 4, 6))], -1)
    h = np.maximum(x @ w + disc.c0_shallow.bias.numpy(), 0)
    h = np.maximum(h @ disc.c1.kernel.numpy() + disc.c1.bias.numpy(), 0)
    np.testing.assert_allclose(scores, (h @ disc.c2.kernel.numpy() + disc.c2.bias.numpy())[..., 0], rtol=1e-4,
                               atol=1e-5)


def _softmax(a):
    e = np.exp(a - a.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_graph_and_label_losses_are_eqs_2_3_7_8_9():
    rng = np.random.RandomState(1)
    z = _softmax(rng.randn(6, 4) * 3).astype(np.float32)
    z[0], z[1] = [0.97, 0.01, 0.01, 0.01], [0.95, 0.03, 0.01, 0.01]  # a confident, similar pair
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = zn @ zn.T
    np.testing.assert_allclose(common.cosine_similarity(z, z).numpy(), s, rtol=1e-5)
    w = (s >= 0.95).astype(np.float32)
    np.testing.assert_array_equal(dccm_loss.pseudo_graph(tf.constant(s), 0.95).numpy(), w)
    assert w[0, 1] == 1 and w.sum() > 6  # at least one off-diagonal edge
    mask = 1 - np.eye(6, dtype=np.float32)
    sc = np.clip(s, 1e-7, 1 - 1e-7)
    bce = -(w * np.log(sc) + (1 - w) * np.log(1 - sc))
    got = common.bce_sum(tf.constant(s), tf.constant(w), tf.constant(mask)).numpy()
    np.testing.assert_allclose(got, (bce * mask).sum(), rtol=1e-4)
    y, v = dccm_loss.pseudo_labels(tf.constant(z), 0.9)
    np.testing.assert_array_equal(y.numpy(), z.argmax(1))
    np.testing.assert_array_equal(v.numpy(), (z.max(1) >= 0.9).astype(np.float32))
    assert v.numpy()[:2].tolist() == [1.0, 1.0] and v.numpy().sum() < 6
    ce = -(np.log(z[np.arange(6), z.argmax(1)]) * (z.max(1) >= 0.9)).sum()
    np.testing.assert_allclose(dccm_loss.label_ce_sum(tf.constant(z), y, v).numpy(), ce, rtol=1e-5)


def test_jsd_mi_estimator_value_and_sign():
    rng = np.random.RandomState(2)
    pos, neg = rng.randn(4, 3, 3).astype(np.float32), rng.randn(6, 3, 3).astype(np.float32)
    pv, nv = np.array([1, 1, 0, 1], np.float32), np.array([1, 0, 1, 1, 1, 1], np.float32)
    j, jc, m, mc = (t.numpy() for t in dccm_loss.jsd_mi_terms(pos, pv, neg, nv))
    softplus = lambda a: np.log1p(np.exp(a))  # noqa: E731
    np.testing.assert_allclose(j, (softplus(-pos).sum((1, 2)) * pv).sum(), rtol=1e-5)
    np.testing.assert_allclose(m, (softplus(neg).sum((1, 2)) * nv).sum(), rtol=1e-5)
    assert (jc, mc) == (3 * 9, 5 * 9)

    def loss(p, n):  # L_MI = -MI_JSD
        j, jc, m, mc = dccm_loss.jsd_mi_terms(p, np.ones(len(p), np.float32), n, np.ones(len(n), np.float32))
        return float(j / jc + m / mc)

    zeros = np.zeros((2, 3, 3), np.float32)
    assert loss(zeros, zeros) == pytest.approx(2 * np.log(2), rel=1e-6)  # an uninformed critic: MI_JSD = -2 log 2
    assert loss(zeros + 8, zeros - 8) < 1e-3  # a perfect critic: MI_JSD -> 0 from below
    assert loss(zeros - 8, zeros + 8) > 15  # a wrong one is penalised


def test_pair_sampling_respects_the_graph_and_is_split_invariant():
    rng = np.random.RandomState(3)
    big_b = 12
    labels = rng.randint(0, 3, big_b)
    labels[5] = 7  # an isolated sample: no neighbour
    sim = np.where(labels[:, None] == labels[None, :], 0.96 + 0.03 * rng.rand(big_b, big_b), 0.2).astype(np.float32)
    sim = np.minimum(sim, sim.T)
    np.fill_diagonal(sim, 1.0)
    graph = (sim >= 0.95).astype(np.float32)
    seed = tf.constant([4, 11], tf.int64)
    full = [t.numpy() for t in dccm_loss.sample_pairs(graph, sim, 0, 3, seed)]
    pos, pos_valid, neg, neg_valid = full
    for i in range(big_b):
        if pos_valid[i]:
            assert pos[i] != i and graph[i, pos[i]] == 1  # never a non-neighbour, never itself
            others = [j for j in range(big_b) if j != i and graph[i, j]]
            assert sim[i, pos[i]] == max(sim[i, j] for j in others)  # the nearest one
        else:
            assert graph[i].sum() == 1  # only itself
        for j, ok in zip(neg[i], neg_valid[i]):
            if ok:
                assert graph[i, j] == 0 and j != i
        assert neg_valid[i].sum() == min(3, (graph[i] == 0).sum())
        assert len(set(neg[i][neg_valid[i] > 0])) == neg_valid[i].sum()  # without replacement
    assert pos_valid[5] == 0
    # The second half of the rows, sampled as a second replica would, gives the same pairs.
    half = [t.numpy() for t in dccm_loss.sample_pairs(graph[6:], sim[6:], 6, 3, seed)]
    for a, b in zip(full, half):
        np.testing.assert_array_equal(a[6:], b)


def test_a_batch_without_neighbours_or_negatives_does_not_crash():
    graph = np.eye(4, dtype=np.float32)
    pos, pos_valid, _, neg_valid = dccm_loss.sample_pairs(graph, graph, 0, 2, tf.constant([0, 0], tf.int64))
    assert pos_valid.numpy().sum() == 0 and neg_valid.numpy().sum() == 8
    graph = np.ones((4, 4), np.float32)
    _, pos_valid, _, neg_valid = dccm_loss.sample_pairs(graph, graph, 0, 2, tf.constant([0, 0], tf.int64))
    assert pos_valid.numpy().sum() == 4 and neg_valid.numpy().sum() == 0
    j, jc, m, mc = dccm_loss.jsd_mi_terms(tf.zeros([4, 2, 2]), pos_valid, tf.zeros([8, 2, 2]),
                                          tf.reshape(neg_valid, [-1]))
    assert float(m) == 0.0 and float(mc) == 0.0


def test_graph_bcubed_against_a_partition():
    y = np.array([0, 0, 1, 1, 1, 2])
    clusters = np.array([0, 0, 0, 1, 1, 2])
    graph = clusters[:, None] == clusters[None, :]
    assert metrics.graph_bcubed(y, graph) == pytest.approx(metrics.bcubed(y, clusters))
    p, r = metrics.graph_bcubed(y, np.eye(6))
    assert p == 1.0 and r == pytest.approx(np.mean([1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 3, 1]))


def test_bad_settings_are_clear_errors():
    info = DatasetInfo("t", 3, (28, 28, 1))
    one = make_strategy("one_device")
    with pytest.raises(InputError, match="28x28"):
        DCCM(DCCMConfig(), DatasetInfo("t", 3, (20, 20, 1)), 3, one, (20, 20, 1))
    with pytest.raises(InputError, match="targets"):
        DCCM(DCCMConfig(targets="later"), info, 3, one, (28, 28, 1))
    with pytest.raises(InputError, match="thres"):
        DCCM(DCCMConfig(thres1=1.5), info, 3, one, (28, 28, 1))


def _one_step(strategy, batch, targets):
    tf.keras.utils.set_random_seed(0)
    info = DatasetInfo("t", 3, (28, 28, 1), num_samples=8)
    cfg = DCCMConfig(width=0.125, disc_units=16, batch_size=8, targets=targets, thres1=0.8, thres2=0.4,
                     learning_rate=1e-3, calibration_samples=0, shallow="pool1")
    method = DCCM(cfg, info, 3, strategy, (28, 28, 1))
    method.build()
    images = tf.constant(batch["image"])
    if targets == "epoch":
        method.begin_epoch(0, lambda fn=None, **_: (fn or tf.function(method.predict))(images).numpy())
    logs = global_step(strategy, method, batch)
    return logs, [w.numpy() for w in method.model.weights + method.discriminator.weights]


@pytest.mark.parametrize("targets", ["batch", "epoch"])
def test_two_replica_step_equals_one_device_step(targets):
    rng = np.random.RandomState(0)
    base = rng.rand(4, 28, 28, 1).astype(np.float32)
    image = np.concatenate([base, base + 0.01 * rng.rand(4, 28, 28, 1).astype(np.float32)])  # near-duplicates
    batch = {"image": image, "views": (image + 0.05 * rng.rand(*image.shape).astype(np.float32))[:, None],
             "index": np.arange(8, dtype=np.int64)}
    mirrored = make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    logs1, w1 = _one_step(make_strategy("one_device"), batch, targets)
    logs2, w2 = _one_step(mirrored, batch, targets)
    for key in ("loss", "dccm/graph", "dccm/label", "dccm/graph_transformed", "dccm/mi", "dccm/edge_fraction",
                "dccm/graph_edges", "dccm/mi_neighbour_fraction"):
        assert logs1[key] == pytest.approx(logs2[key], rel=1e-4, abs=1e-6), key
    assert logs1["dccm/mi"] > 0 and logs1["dccm/graph"] > 0
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(w1, w2)])
    assert np.median(diffs) < 1e-7


@pytest.mark.slow
def test_short_run_beats_kmeans_on_pixels(tmp_path):
    """5 epochs of MNIST-5k (25 chunk refreshes of the targets), one device (the replica tests check
    two), deterministic (the same ACC on every run of this test: 0.741 in development, k-means 0.519)."""
    kmeans = run.train(run.RunOptions(method="kmeans", dataset="mnist5k", workdir=str(tmp_path / "km"),
                                      preset="cpu", seed=0, progress=False), log=lambda m: None)
    out = run.train(run.RunOptions(method="dccm", dataset="mnist5k", workdir=str(tmp_path / "dccm"), preset="cpu",
                                   seed=0, progress=False, overrides=("epochs=5",), strategy="one_device",
                                   deterministic=True),
                    log=lambda m: None)
    assert out["acc"] > kmeans["acc"] + 0.03, (out["acc"], kmeans["acc"])
    # Fig. 5's report: BCubed of the pseudo-graph against the labels (reporting only).
    precision, recall = out["extra"]["pseudo_graph_bcubed_precision"], out["extra"]["pseudo_graph_bcubed_recall"]
    assert 0.1 < precision <= 1.0 and 0.0 < recall <= 1.0
    outputs = ExportedModel(out["export"]).signature.structured_outputs
    assert {"cluster", "probabilities", "conv_features", "fc_features"} <= set(outputs)
    # Transfer evaluation (section 4.1): an MLP on the frozen features, held-out split.
    result = transfer.transfer(out["export"], "mnist5k?split=train", "mnist5k?split=test", max_iter=50)
    assert result["train_samples"] == 4000 and result["test_samples"] == 1000
    assert result["conv_features_test_accuracy"] > 0.8 and result["fc_features_test_accuracy"] > 0.5, result
    with pytest.raises(InputError, match="serves no features"):
        transfer.transfer(kmeans["export"], "mnist5k?split=train", "mnist5k?split=test")


def test_cpu_preset_fills_the_wall_budgets():
    """~100,000 training images on MNIST-5k (20 epochs, evaluated every 5); 8 epochs, each evaluated, on
    datasets of 20,000 images or more (Fashion-MNIST's 30 minutes)."""
    from tfcluster.configs.dccm import cpu_preset

    small = cpu_preset(DatasetInfo("t", 10, (28, 28, 1), num_samples=5_000))
    large = cpu_preset(DatasetInfo("t", 10, (28, 28, 1), num_samples=70_000))
    assert (small.epochs, small.eval_every) == (20, 5) and (large.epochs, large.eval_every) == (8, 1)
    assert cpu_preset(DatasetInfo("t", 10, (28, 28, 1), num_samples=19_999)).epochs == 5
