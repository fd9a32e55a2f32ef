"""tfcluster: deep image clustering on TensorFlow 2 and Keras 3.

Modules:
  data        dataset registry, augmentation ops, input pipelines
  nets        networks and layers (ALL-ConvNet, restraint layer)
  losses      per-method losses
  methods     one module per clustering method, plus the registry
  training    strategy, loop, checkpoints, summaries
  evaluation  ACC / NMI / ARI / BCubed / UI
  export      SavedModel export for serving
"""

__version__ = "0.1.0"
