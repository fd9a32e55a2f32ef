"""Evaluation: clustering metrics (reporting only; never used for model selection)."""
from tfcluster.evaluation.metrics import (ari, bcubed, cluster_acc, cluster_size_stats, evaluate, nmi,
                                          uniformity_index)

__all__ = ["ari", "bcubed", "cluster_acc", "cluster_size_stats", "evaluate", "nmi", "uniformity_index"]
