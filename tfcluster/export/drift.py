"""Do new inputs look like the training data? Statistics kept in an export, checked at `predict`.

A clustering model assigns every input to some cluster, confidently or not,
however unlike its training images the input is (8x8 digits upsampled into an
MNIST model: 160 of 200 in one cluster at confidence 0.81). So the export keeps,
per raw training input, three numbers and their 0.5% / 99.5% quantiles:
  brightness  the mean of its values,
  contrast    their standard deviation,
  layout      the RMS difference from the mean training input (where the ink is),
and the share of the largest cluster. `compare` warns when many more new inputs
than the expected ~1% fall outside a range, or when one cluster takes far more
of them than the largest training cluster did. A heuristic, not a test: it
says "look at these", it refuses nothing.
"""

from __future__ import annotations

import numpy as np

STATISTICS = ("brightness", "contrast", "layout")
LOW, HIGH = 0.5, 99.5  # percentiles of the training range
# Warn when more than this share of the inputs falls outside a statistic's range (1% expected).
OUTSIDE_WARNING = 0.10
MIN_INPUTS = 20  # fewer inputs say too little


def per_input(x: np.ndarray, mean_input: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Raw inputs [N, ...] (uint8 pixels or float vectors) -> statistics [N, 3] in STATISTICS order;
    pixels are scaled to [0, 1] first."""
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    flat_mean = np.asarray(mean_input, np.float32).reshape(-1)
    out = np.empty((len(x), len(STATISTICS)), np.float32)
    for i in range(0, len(x), chunk):
        v = x[i:i + chunk].reshape(min(chunk, len(x) - i), -1).astype(np.float32) * scale
        out[i:i + chunk, 0] = v.mean(1)
        out[i:i + chunk, 1] = v.std(1)
        out[i:i + chunk, 2] = np.sqrt(np.mean((v - flat_mean) ** 2, axis=1))
    return out


def summarize(x: np.ndarray, clusters: np.ndarray, num_clusters: int) -> dict:
    """What an export keeps about its training inputs [N, ...] and their clusters [N] (JSON-able)."""
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    mean_input = np.zeros(x.shape[1:], np.float64)
    for i in range(0, len(x), 4096):
        mean_input += x[i:i + 4096].astype(np.float64).sum(0)
    mean_input = (mean_input * scale / len(x)).astype(np.float32)
    stats = per_input(x, mean_input)
    sizes = np.bincount(np.asarray(clusters, np.int64), minlength=num_clusters)
    return {
        "statistics": list(STATISTICS),
        "low": np.percentile(stats, LOW, axis=0).round(6).tolist(),
        "high": np.percentile(stats, HIGH, axis=0).round(6).tolist(),
        "mean_input": mean_input.round(5).reshape(-1).tolist(),
        "largest_cluster_share": round(float(sizes.max() / max(len(x), 1)), 6),
        "num_samples": int(len(x)),
    }


def compare(summary: dict | None, x: np.ndarray, clusters: np.ndarray) -> list[str]:
    """Warnings (possibly none) about inputs [N, ...] and their predicted clusters [N] against `summary`."""
    if not summary or len(x) < MIN_INPUTS:
        return []
    mean_input = np.asarray(summary["mean_input"], np.float32)
    if mean_input.size != int(np.prod(x.shape[1:])):
        return []
    stats = per_input(x, mean_input)
    low, high = np.asarray(summary["low"]), np.asarray(summary["high"])
    warnings = []
    for j, name in enumerate(summary["statistics"]):
        below, above = float(np.mean(stats[:, j] < low[j])), float(np.mean(stats[:, j] > high[j]))
        if below + above > OUTSIDE_WARNING:
            side = "below" if below > above else "above"
            warnings.append(
                f"{100 * (below + above):.0f}% of the {len(x)} inputs have a {name} outside the training "
                f"inputs' range ({low[j]:.3g} to {high[j]:.3g}; 1% expected), most of them {side} it "
                f"(median {np.median(stats[:, j]):.3g}): they look unlike the training data, and their "
                "clusters may mean little")
    share = float(np.bincount(np.asarray(clusters, np.int64)).max() / len(x))
    trained = float(summary["largest_cluster_share"])
    if share > max(2.0 * trained, 0.5):
        warnings.append(f"one cluster took {100 * share:.0f}% of the {len(x)} inputs (the largest training "
                        f"cluster held {100 * trained:.0f}%): the inputs may be unlike the training data")
    return warnings
