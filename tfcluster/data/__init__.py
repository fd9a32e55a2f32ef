"""Data: dataset registry (sources), augmentation ops, preprocessing, pipelines.

`sources` imports no TensorFlow (binaries check a dataset spec before it starts);
`augment`, `preprocess` and `pipeline` do.
"""
