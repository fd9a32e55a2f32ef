"""Choosing K: the label-free criteria, the vote, features from an auto-encoder, and `cluster --num_clusters=auto`."""

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from tfcluster.errors import InputError
from tfcluster.evaluation import choose_k


def _blobs(k, n_per=60, dim=5, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, dim))
    x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centres])
    return x, np.repeat(np.arange(k), n_per)


def test_parse_range():
    assert choose_k.parse_range("2:5") == [2, 3, 4, 5]
    assert choose_k.parse_range("10,5, 20") == [5, 10, 20]
    for bad in ("1:5", "5", "a:b", "7:3", "2,x"):
        with pytest.raises(InputError, match="K range"):
            choose_k.parse_range(bad)


def test_every_criterion_finds_well_separated_blobs():
    x, _ = _blobs(4)
    rows = choose_k.score_range(x, [2, 3, 4, 5, 6, 7], seed=0)
    assert [r["k"] for r in rows] == [2, 3, 4, 5, 6, 7]
    assert choose_k.votes(rows) == {"silhouette": 4, "calinski_harabasz": 4, "davies_bouldin": 4, "stability": 4}
    assert choose_k.suggest(rows) == 4
    four = rows[2]
    assert four["stability"] == pytest.approx(1.0) and four["smallest_cluster_share"] == pytest.approx(0.25)
    # splitting a true cluster is not reproducible from one half of the data to the other
    assert rows[3]["stability"] < 0.99 or rows[4]["stability"] < 0.99
    # two of the four blobs lie close: K=3 merges them and is as stable as K=4; the tie goes to K=4
    assert rows[1]["stability"] >= four["stability"] - choose_k.STABILITY_TIE


def test_stability_is_the_agreement_of_split_half_partitions():
    # One pair, recomputed by hand with the same random draws: k-means on each half, ARI of their labellings.
    from sklearn.cluster import KMeans

    x, _ = _blobs(3, n_per=40, spread=3.0, seed=1)
    (row,) = choose_k.score_range(x, [5], seed=3, n_init=4, stability_pairs=1)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(x))
    a, b = order[: len(x) // 2], order[len(x) // 2:]
    fit_a = KMeans(5, n_init=2, random_state=int(rng.integers(2**31))).fit(x[a])
    fit_b = KMeans(5, n_init=2, random_state=int(rng.integers(2**31))).fit(x[b])
    assert row["stability"] == pytest.approx(adjusted_rand_score(fit_a.predict(x), fit_b.predict(x)))


def test_suggest_takes_the_most_voted_k_and_breaks_ties_by_silhouette():
    rows = [{"k": 2, "silhouette": 0.5, "calinski_harabasz": 9.0, "davies_bouldin": 0.9, "stability": 0.9},
            {"k": 3, "silhouette": 0.6, "calinski_harabasz": 5.0, "davies_bouldin": 0.5, "stability": 0.8},
            {"k": 4, "silhouette": 0.4, "calinski_harabasz": 4.0, "davies_bouldin": 0.7, "stability": 0.7}]
    assert choose_k.votes(rows) == {"silhouette": 3, "calinski_harabasz": 2, "davies_bouldin": 3, "stability": 2}
    assert choose_k.suggest(rows) == 3  # 2 votes each for K=2 and K=3; K=3 has the better silhouette
    rows[1]["davies_bouldin"] = 1.0
    assert choose_k.suggest(rows) == 2  # three votes now
    rows[1]["stability"] = 0.898
    assert choose_k.votes(rows)["stability"] == 3  # as stable as K=2 within STABILITY_TIE: the larger K


def test_score_range_refuses_bad_features_and_too_large_k():
    x, _ = _blobs(3)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        choose_k.score_range(bad, [2, 3])
    with pytest.raises(InputError, match="more than"):
        choose_k.score_range(x[:20], [2, 12])


def test_choose_k_on_pixels_writes_its_report_and_reads_it_back(tmp_path):
    from tfcluster import choose
    from tfcluster.data import sources

    rng = np.random.default_rng(0)
    x = np.zeros((120, 8, 8, 1), np.uint8)
    for i in range(120):  # three kinds: a bright left, middle or right band
        x[i] = rng.integers(0, 30, (8, 8, 1))
        x[i, :, (i % 3) * 3:(i % 3) * 3 + 2] = 230
    source = sources.make_source("bands", x, np.arange(120) % 3)
    heard = []
    result = choose.choose_k(source, [2, 3, 4, 5], str(tmp_path), features="pixels", log=heard.append)
    assert result["suggested_k"] == 3 and result["num_classes"] == 3 and result["feature_dim"] == 64
    saved = json.load(open(tmp_path / "choose_k.json"))
    assert saved["suggested_k"] == 3 and [r["k"] for r in saved["scores"]] == [2, 3, 4, 5]
    assert (tmp_path / "choose_k.png").stat().st_size > 0
    again = choose.choose_k(source, [2, 3, 4, 5], str(tmp_path), features="pixels", log=heard.append)
    assert again == saved and "read the finished result" in heard[-1]
    with pytest.raises(InputError, match="features must be"):
        choose.choose_k(source, [2, 3], str(tmp_path / "other"), features="pixel")


def test_fcae_features_come_from_an_auto_encoder_trained_without_k(tmp_path):
    from tfcluster import choose
    from tfcluster.data import sources

    digits = sources.load("digits")  # 8x8: resized to the FCAE's 28x28
    source = sources.make_source("digits", digits.x[:300], digits.y[:300])
    feats = choose.features_of(source, "fcae", str(tmp_path), progress=False, log=lambda s: None,
                               fcae_overrides=("ae_epochs=1", "batch_size=100"))
    assert feats.shape == (300, 120) and np.all(np.isfinite(feats))
    assert json.load(open(tmp_path / "fcae" / "config.json"))["config"]["ae_epochs"] == 1
    assert choose.fcae_source(source).x.shape == (300, 28, 28, 1)
    vectors = sources.make_source("v", np.zeros((10, 3), np.float32), modality="vector")
    with pytest.raises(InputError, match="vectors"):
        choose.fcae_source(vectors)
