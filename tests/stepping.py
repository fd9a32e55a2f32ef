"""Test helper: one global training step of a method under a strategy, as the loop runs it."""

import tensorflow as tf

from tfcluster.training.loop import distribute_batches


def global_step(strategy, method, batch, step=None) -> dict:
    """Runs `step` (default `method.train_step`) once on the global batch `batch` (dict of arrays)
    split by `strategy` as the loop splits it (`distribute_batches`).

    Returns the step's logs, each summed over replicas (as the loop reduces them), as floats.
    """
    dist = distribute_batches(strategy, tf.data.Dataset.from_tensors(batch))
    step_fn = step or method.train_step

    @tf.function
    def step(b):
        out = strategy.run(step_fn, args=(b,))
        return {k: strategy.reduce("SUM", v, axis=None) for k, v in out.items()}

    return {k: float(v) for k, v in [step(b) for b in dist][0].items()}
