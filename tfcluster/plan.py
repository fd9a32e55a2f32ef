"""Epoch plans: what one epoch of a method is made of.

A method returns, for each epoch, an `EpochPlan`: a list of `Stage`s that the
Trainer runs in order, and nothing else decides the shape of an epoch. A stage
is an optional eager `begin` (targets, k-means, BatchNorm calibration,
schedules: no gradients, on the host) followed by `steps` graph steps of its
replica `step` function over mini-batches of the samples it names. Examples:
  DAC, DCCM    [targets for the epoch + steps over all samples, end-of-epoch calibration]
  GATCluster   [large batch 1: targets + repeats x steps over it, large batch 2: ..., calibration]
  precise_gan  [steps over the non-held-out samples, several passes, cut at N iterations; curves]
  DBC          stage I epochs [auto-encoder steps, previews (+ k-means)]; stage II [targets + KL steps, convergence]
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

ORDERS = ("shuffle", "chunk")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One part of an epoch: `begin()`, then `steps` global steps of `step`.

    Attributes:
      step: the method's replica step, fn(batch) -> dict of scalars summed over
        replicas (run by `strategy.run` in a tf.function; one trace per step
        function). None for a stage of eager work only (steps = 0).
      steps: global steps of the stage.
      batch_size: samples per global step.
      indices: int64 [M] the source samples trained on (None: all of them).
      repeats: passes over them.
      num_views: augmented views per element ("views" [B, V, ...]).
      order: how mini-batches are drawn (data.pipeline.stage_dataset):
        "shuffle"  each pass a new shuffle and new augmentations, batches run on
                   across passes; "index" is the position in the source; a pure
                   function of (seed, epoch).
        "chunk"    each sample is transformed once for the whole stage; each pass
                   yields floor(M / batch) full batches in a new order; "index" is
                   the position in `indices` (where a chunk's targets are stored);
                   a pure function of (seed, epoch, chunk).
      chunk: the stage's number among the epoch's chunks (seeds "chunk" order).
      begin: eager work before the steps, fn() -> logs (numbers, 1-D arrays,
        [N, H, W, C] images), written to TensorBoard at the current step.
      name: what the progress line calls the stage.
    """

    step: Callable[[dict], dict] | None = None
    steps: int = 0
    batch_size: int = 0
    indices: np.ndarray | None = None
    repeats: int = 1
    num_views: int = 0
    order: str = "shuffle"
    chunk: int = 0
    begin: Callable[[], dict] | None = None
    name: str = "train"

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"stage order must be one of {ORDERS}, got {self.order!r}")
        if self.steps and (self.step is None or self.batch_size < 1):
            raise ValueError(f"stage {self.name!r} has {self.steps} steps but no step function or batch size")

    @property
    def images(self) -> int:
        """Samples the stage's steps take."""
        return int(self.steps) * int(self.batch_size)


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """The stages of one epoch.

    Attributes:
      stages: run in order.
      evaluate: whether cluster metrics mean anything after this epoch (DBC's
        stage I has no centres yet); the run's last epoch is always evaluated.
    """

    stages: tuple
    evaluate: bool = True

    @property
    def steps(self) -> int:
        return sum(int(s.steps) for s in self.stages)

    @property
    def images(self) -> int:
        return sum(s.images for s in self.stages)


def eager(begin: Callable[[], dict], name: str) -> Stage:
    """A stage of eager work only (no steps), e.g. the end-of-epoch calibration."""
    return Stage(begin=begin, name=name)


def one_pass(step: Callable[[dict], dict], num_samples: int, batch_size: int, num_views: int = 0,
             begin: Callable[[], dict] | None = None, end: Callable[[], dict] | None = None,
             name: str = "train", end_name: str = "end", evaluate: bool = True) -> EpochPlan:
    """The plain epoch: [begin + floor(N / batch) steps over all samples, shuffled; then `end`]."""
    stages = [Stage(step=step, steps=int(num_samples) // int(batch_size), batch_size=int(batch_size),
                    num_views=num_views, begin=begin, name=name)]
    if end is not None:
        stages.append(eager(end, end_name))
    return EpochPlan(tuple(stages), evaluate=evaluate)
