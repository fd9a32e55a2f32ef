"""Export: SavedModels that serve cluster assignments (saved_model), and code that uses them:
evaluation and prediction (use), transfer evaluation of their features (transfer), what a person
opens (report) in output directories tfcluster owns (output_dir).

`ExportedModel`, `export` and `resolve` (saved_model) are imported on first use, so that the
TensorFlow-free modules here (output_dir, report) load without TensorFlow.
"""

__all__ = ["ExportedModel", "export", "resolve"]


def __getattr__(name):
    if name in __all__:
        from tfcluster.export import saved_model

        return getattr(saved_model, name)
    raise AttributeError(f"module 'tfcluster.export' has no attribute {name!r}")
