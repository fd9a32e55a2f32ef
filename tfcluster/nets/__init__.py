"""Networks and layers."""
from tfcluster.nets.allconv import build_allconvnet
from tfcluster.nets.layers import RestraintLayer

__all__ = ["build_allconvnet", "RestraintLayer"]
