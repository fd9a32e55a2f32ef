import numpy as np
import pytest
from sklearn import metrics as skm

from tfcluster.evaluation import metrics


def test_acc_is_permutation_invariant_and_hand_case():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert metrics.cluster_acc(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0
    pred = np.array([1, 1, 0, 1, 2, 0])
    # table rows=classes, cols=clusters: c0:[0,2,0] c1:[1,1,0] c2:[1,0,1] -> best 2+1+1 = 4
    assert metrics.cluster_acc(y, pred) == pytest.approx(4 / 6)


def test_acc_with_more_clusters_than_classes_counts_unmatched_as_errors():
    y = np.array([0, 0, 0, 1])
    pred = np.array([0, 1, 2, 3])
    assert metrics.cluster_acc(y, pred) == pytest.approx(2 / 4)


def test_nmi_ari_match_sklearn_and_expose_normalisation():
    rng = np.random.RandomState(0)
    y, p = rng.randint(0, 5, 200), rng.randint(0, 4, 200)
    for avg in ("geometric", "arithmetic", "max"):
        assert metrics.nmi(y, p, avg) == pytest.approx(skm.normalized_mutual_info_score(y, p, average_method=avg))
    assert metrics.nmi(y, p) == pytest.approx(skm.normalized_mutual_info_score(y, p, average_method="geometric"))
    assert metrics.nmi(y, p, "max") != pytest.approx(metrics.nmi(y, p, "arithmetic"))
    assert metrics.ari(y, p) == pytest.approx(skm.adjusted_rand_score(y, p))


def test_bcubed_hand_case():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([1, 1, 0, 0, 0])
    precision, recall = metrics.bcubed(y, p)
    # cluster 0 = {c1, c1, c2}: items of class 1 have precision 2/3, the class-2 item 1/3
    assert precision == pytest.approx((1 + 1 + 2 / 3 + 2 / 3 + 1 / 3) / 5)
    assert recall == pytest.approx(1.0)


def test_bcubed_matches_pairwise_definition():
    rng = np.random.RandomState(1)
    y, p = rng.randint(0, 3, 30), rng.randint(0, 4, 30)
    same_c = p[:, None] == p[None, :]
    same_l = y[:, None] == y[None, :]
    both = (same_c & same_l).sum(1)
    precision, recall = metrics.bcubed(y, p)
    assert precision == pytest.approx(np.mean(both / same_c.sum(1)))
    assert recall == pytest.approx(np.mean(both / same_l.sum(1)))


def test_uniformity_index():
    assert metrics.uniformity_index([0, 1, 2, 3] * 5, 4) == pytest.approx(1.0)
    assert metrics.uniformity_index([0] * 10, 4) == pytest.approx(0.0)
    p = np.array([0.5, 0.25, 0.25])
    labels = [0, 0, 1, 2]
    assert metrics.uniformity_index(labels, 3) == pytest.approx(-(p * np.log(p)).sum() / np.log(3))


def test_cluster_size_stats_and_errors():
    stats = metrics.cluster_size_stats(np.array([0, 0, 2, 2]), 4)
    assert stats["nonempty_clusters"] == 2
    assert stats["cluster_entropy"] == pytest.approx(np.log(2))
    with pytest.raises(ValueError, match="labels but"):
        metrics.cluster_acc([0, 1], [0])


def test_purity_and_the_precise_gan_codes_batch_purity():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([5, 5, 5, 5, 7, 7])  # clusters 5 = {0, 0, 1, 1}, 7 = {2, 2}: majorities 2 + 2 of 6
    assert metrics.purity(y, p) == pytest.approx(4 / 6)
    rng = np.random.RandomState(0)
    y, p = rng.randint(0, 10, 1050), rng.randint(0, 10, 1050)
    order = np.random.RandomState(3).permutation(1050)
    expected = []
    for b in range(10):  # 10 full batches of 100; the last 50 dropped
        idx = order[b * 100:(b + 1) * 100]
        counts = np.zeros((10, 10))
        np.add.at(counts, (p[idx], y[idx]), 1)  # the official code's counts[pred][label]
        expected.append(counts.max(1).sum() / 100)
    assert metrics.batch_purity(y, p, batch_size=100, seed=3) == pytest.approx(np.mean(expected))
    # random assignments: batches of 100 make purity look better than on the whole set
    assert metrics.batch_purity(y, p, seed=3) > metrics.purity(y, p) + 0.05
    assert metrics.batch_purity(y[:40], p[:40]) == pytest.approx(metrics.purity(y[:40], p[:40]))  # one batch
