"""Data: dataset registry (sources), augmentation ops, preprocessing, pipelines."""
from tfcluster.data.augment import AugmentConfig
from tfcluster.data.preprocess import Preprocessor
from tfcluster.data.sources import DatasetInfo, Source, load

__all__ = ["AugmentConfig", "Preprocessor", "DatasetInfo", "Source", "load"]
