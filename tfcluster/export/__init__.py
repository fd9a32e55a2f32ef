"""Export: SavedModels that serve cluster assignments."""
from tfcluster.export.saved_model import ExportedModel, export, resolve

__all__ = ["ExportedModel", "export", "resolve"]
