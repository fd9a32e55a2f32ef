"""Help choosing the number of clusters K: k-means over a range of K on features, ranked by label-free criteria.

A heuristic, not a measurement of the "true" K: the criteria reward compact,
well separated or reproducible k-means partitions of the features given, and
each has known biases (docs/RESULTS.md measures them on MNIST-5k and
Fashion-MNIST, both with 10 classes). For every K of the range:

  silhouette         mean silhouette coefficient (Rousseeuw 1987) on a sample;
                     higher is better;
  calinski_harabasz  between- / within-cluster dispersion ratio (Calinski and
                     Harabasz 1974); higher is better;
  davies_bouldin     mean worst-case ratio of within-cluster scatter to centre
                     distance (Davies and Bouldin 1979); lower is better;
  stability          agreement (ARI) between the partitions of all points by
                     k-means fitted on two disjoint random halves, averaged over
                     `stability_pairs` splits (after Ben-Hur et al. 2002; Lange
                     et al. 2004); higher is better.

`suggest` lets each criterion vote for its best K; the K with most votes wins,
ties going to the best silhouette among them. Stability votes for the largest K
within STABILITY_TIE of its best: merging true clusters gives reproducible
partitions too, so several K can be perfectly stable. TF-free (NumPy, scikit-learn).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score, silhouette_score

from tfcluster.errors import InputError

# criterion -> +1 where higher is better, -1 where lower is better.
CRITERIA = {"silhouette": 1, "calinski_harabasz": 1, "davies_bouldin": -1, "stability": 1}
STABILITY_TIE = 0.005


def parse_range(text: str) -> list[int]:
    """"2:15" -> [2, ..., 15]; "5,10,20" -> [5, 10, 20]. Every K >= 2, at least two of them."""
    try:
        if ":" in text:
            lo, hi = (int(t) for t in text.split(":"))
            ks = list(range(lo, hi + 1))
        else:
            ks = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise InputError(f"a K range is LO:HI or K1,K2,...; got {text!r}") from None
    if len(ks) < 2 or ks[0] < 2:
        raise InputError(f"a K range needs at least two values of K, all >= 2; got {text!r}")
    return ks


def score_range(features, ks, seed: int = 0, n_init: int = 10, max_samples: int = 10_000,
                silhouette_samples: int = 5_000, stability_pairs: int = 3) -> list[dict]:
    """Fits k-means for each K and scores the partition.

    Args:
      features: [N, D] float array (e.g. an auto-encoder's embedding or pixels).
      ks: the values of K (each < the number of points used).
      max_samples: k-means and the criteria run on a random subset of this many
        points (all if N is smaller).
      silhouette_samples: the silhouette's sample (it costs O(n^2)).
      stability_pairs: random half-splits averaged in `stability` (0 skips it).
    Returns:
      one dict per K: k, the four criteria, inertia and the smallest cluster's share.
    """
    x = np.asarray(features, np.float64).reshape(len(features), -1)
    if not np.all(np.isfinite(x)):
        raise InputError("the features hold NaN or infinite values")
    rng = np.random.default_rng(seed)
    if len(x) > max_samples:
        x = x[rng.choice(len(x), max_samples, replace=False)]
    n = len(x)
    if max(ks) >= n // 2:
        raise InputError(f"K up to {max(ks)} needs more than {2 * max(ks)} points; got {n}")
    rows = []
    for k in ks:
        km = KMeans(k, n_init=n_init, random_state=seed).fit(x)
        labels = km.labels_
        row = {"k": int(k),
               "silhouette": float(silhouette_score(x, labels, sample_size=min(silhouette_samples, n),
                                                    random_state=seed)),
               "calinski_harabasz": float(calinski_harabasz_score(x, labels)),
               "davies_bouldin": float(davies_bouldin_score(x, labels)),
               "inertia": float(km.inertia_),
               "smallest_cluster_share": float(np.bincount(labels, minlength=k).min() / n)}
        if stability_pairs:
            agreements = []
            for _ in range(stability_pairs):
                order = rng.permutation(n)
                a, b = order[: n // 2], order[n // 2:]
                fit_a = KMeans(k, n_init=max(1, n_init // 2), random_state=int(rng.integers(2**31))).fit(x[a])
                fit_b = KMeans(k, n_init=max(1, n_init // 2), random_state=int(rng.integers(2**31))).fit(x[b])
                agreements.append(adjusted_rand_score(fit_a.predict(x), fit_b.predict(x)))
            row["stability"] = float(np.mean(agreements))
        rows.append(row)
    return rows


def votes(rows: list[dict]) -> dict:
    """criterion -> the K it ranks best (criteria missing from the rows are left out)."""
    out = {}
    for name, sign in CRITERIA.items():
        if not all(name in r for r in rows):
            continue
        best = max(rows, key=lambda r: sign * r[name])
        if name == "stability":
            best = max((r for r in rows if r[name] >= best[name] - STABILITY_TIE), key=lambda r: r["k"])
        out[name] = best["k"]
    return out


def suggest(rows: list[dict]) -> int:
    """The K most criteria vote for; ties go to the best silhouette among the tied."""
    if not rows:
        raise InputError("no K was scored")
    tally = {}
    for k in votes(rows).values():
        tally[k] = tally.get(k, 0) + 1
    top = max(tally.values())
    tied = [r for r in rows if tally.get(r["k"]) == top]
    return int(max(tied, key=lambda r: r["silhouette"])["k"])


def plot(rows: list[dict], path: str, title: str = "") -> str:
    """One panel per criterion against K (the suggested K marked); writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in CRITERIA if all(n in r for r in rows)]
    ks = [r["k"] for r in rows]
    best = suggest(rows)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot(ks, [r[name] for r in rows], marker="o", ms=3)
        ax.axvline(best, color="tab:red", lw=0.8, ls="--")
        ax.set_title(f"{name} ({'higher' if CRITERIA[name] > 0 else 'lower'} is better)", fontsize=8)
        ax.set_xlabel("K", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title or f"suggested K = {best}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
