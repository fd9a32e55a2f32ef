"""Export: SavedModels that serve cluster assignments (saved_model), and code that uses them:
evaluation and prediction (use), transfer evaluation of their features (transfer)."""
from tfcluster.export.saved_model import ExportedModel, export, resolve

__all__ = ["ExportedModel", "export", "resolve"]
