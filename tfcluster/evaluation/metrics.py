"""Clustering metrics, computed on the host with NumPy / SciPy / scikit-learn.

Labels are used here only for reporting; training never sees them.

NMI normalisation: `average_method` is passed to scikit-learn. The default
here is "geometric", I(Y;C) / sqrt(H(Y) H(C)), which DAC, DCCM and GATCluster
report; "max" and "arithmetic" (scikit-learn's default) are also available.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

DEFAULT_NMI_AVERAGE = "geometric"


def _check(y_true, y_pred):
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.shape[0]} labels but {y_pred.shape[0]} predictions")
    if y_true.size == 0:
        raise ValueError("no samples to evaluate")
    return y_true, y_pred


def contingency(y_true, y_pred) -> np.ndarray:
    """Counts [num_classes, num_clusters] over the values present."""
    _, ti = np.unique(y_true, return_inverse=True)
    _, pi = np.unique(y_pred, return_inverse=True)
    table = np.zeros((ti.max() + 1, pi.max() + 1), np.int64)
    np.add.at(table, (ti, pi), 1)
    return table


def cluster_acc(y_true, y_pred) -> float:
    """Accuracy under the best one-to-one cluster->class map (Hungarian algorithm).

    With more clusters than classes, unmatched clusters count as errors.
    """
    y_true, y_pred = _check(y_true, y_pred)
    table = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum()) / y_true.size


def nmi(y_true, y_pred, average_method: str = DEFAULT_NMI_AVERAGE) -> float:
    y_true, y_pred = _check(y_true, y_pred)
    return float(skm.normalized_mutual_info_score(y_true, y_pred, average_method=average_method))


def ari(y_true, y_pred) -> float:
    y_true, y_pred = _check(y_true, y_pred)
    return float(skm.adjusted_rand_score(y_true, y_pred))


def bcubed(y_true, y_pred) -> tuple[float, float]:
    """BCubed (precision, recall), averaged over items (Amigo et al. 2009).

    precision_i = |same cluster and same class| / |same cluster|,
    recall_i = |same cluster and same class| / |same class|.
    """
    y_true, y_pred = _check(y_true, y_pred)
    table = contingency(y_true, y_pred).astype(np.float64)
    n = table.sum()
    sq = table ** 2
    precision = (sq / np.maximum(table.sum(0, keepdims=True), 1)).sum() / n
    recall = (sq / np.maximum(table.sum(1, keepdims=True), 1)).sum() / n
    return float(precision), float(recall)


def graph_bcubed(y_true, graph) -> tuple[float, float]:
    """BCubed (precision, recall) of a similarity graph, e.g. DCCM's pseudo-graph (its Fig. 5).

    With N(i) = {j : W_ij = 1} (the item itself included),
    precision_i = |N(i) and same class| / |N(i)|, recall_i = |N(i) and same class| / |same class|,
    averaged over items. For a graph that is an equivalence relation these are
    the partition's BCubed scores (`bcubed`).

    Args:
      y_true: [n] class labels.
      graph: [n, n] 0/1 adjacency (symmetric; the diagonal is set to 1).
    """
    y = np.asarray(y_true).reshape(-1)
    w = np.asarray(graph).astype(bool)
    if w.shape != (len(y), len(y)):
        raise ValueError(f"graph must be [n, n] for n = {len(y)} labels, got {w.shape}")
    w = w | np.eye(len(y), dtype=bool)
    same = y[:, None] == y[None, :]
    hits = (w & same).sum(1).astype(np.float64)
    return float((hits / w.sum(1)).mean()), float((hits / same.sum(1)).mean())


def purity(y_true, y_pred) -> float:
    """Share of samples in their cluster's most frequent class (each cluster its majority label)."""
    y_true, y_pred = _check(y_true, y_pred)
    return float(contingency(y_true, y_pred).max(0).sum() / y_true.size)


def batch_purity(y_true, y_pred, batch_size: int = 100, seed: int = 0) -> float:
    """The precise-feature paper's official code's accuracy: purity within batches, averaged.

    The samples are split, in a fixed random order (`seed`), into consecutive
    batches of `batch_size` (the last, smaller one dropped unless it is the only
    one); each batch's purity counts its own majority label per cluster. Higher
    than whole-set purity and than ACC: in a batch of 100, a cluster's majority
    is easier to win, and two clusters may share one label (no one-to-one
    matching). Reported beside ACC for comparison with that paper's tables only.
    """
    y_true, y_pred = _check(y_true, y_pred)
    order = np.random.RandomState(seed).permutation(y_true.size)
    starts = range(0, max(y_true.size - batch_size + 1, 1), batch_size)
    return float(np.mean([purity(y_true[order[i:i + batch_size]], y_pred[order[i:i + batch_size]])
                          for i in starts]))


def uniformity_index(labels, num_classes: int | None = None) -> float:
    """UI(X) = -sum_i p_i ln p_i / ln n of the class distribution (precise-feature paper, eq. 9)."""
    labels = np.asarray(labels).reshape(-1)
    n = int(num_classes) if num_classes is not None else len(np.unique(labels))
    if n < 2:
        raise ValueError("the uniformity index needs at least two classes")
    counts = np.bincount(labels, minlength=n) if labels.dtype.kind in "iu" else np.unique(labels, return_counts=True)[1]
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(n))


def cluster_size_stats(y_pred, num_clusters: int) -> dict:
    """Entropy of the cluster-size distribution (nats) and number of non-empty clusters."""
    counts = np.bincount(np.asarray(y_pred).reshape(-1), minlength=num_clusters)
    p = counts[counts > 0] / max(counts.sum(), 1)
    return {"cluster_entropy": float(-(p * np.log(p)).sum()), "nonempty_clusters": int((counts > 0).sum())}


def evaluate(y_true, y_pred, average_method: str = DEFAULT_NMI_AVERAGE) -> dict:
    """ACC, NMI, ARI, BCubed precision/recall as a dict of floats."""
    precision, recall = bcubed(y_true, y_pred)
    return {"acc": cluster_acc(y_true, y_pred), "nmi": nmi(y_true, y_pred, average_method),
            "ari": ari(y_true, y_pred), "bcubed_precision": precision, "bcubed_recall": recall}
