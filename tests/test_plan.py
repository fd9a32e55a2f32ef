"""Epoch plans, frozen configs and the Trainer running exactly a method's stages."""

import dataclasses

import numpy as np
import pytest

from tfcluster import run
from tfcluster.data.sources import DatasetInfo
from tfcluster.errors import InputError
from tfcluster.configs.dac import DACConfig
from tfcluster.methods.dac import DAC
from tfcluster.plan import EpochPlan, Stage, eager, one_pass
from tfcluster.training.loop import Trainer
from tfcluster.training.strategy import make_strategy


def test_a_stage_with_steps_needs_a_step_function_and_a_batch_size():
    with pytest.raises(ValueError, match="no step function"):
        Stage(steps=3, batch_size=8)
    with pytest.raises(ValueError, match="order"):
        Stage(order="random")
    plan = one_pass(lambda b: {}, num_samples=100, batch_size=32, end=lambda: {})
    assert [s.steps for s in plan.stages] == [3, 0] and plan.steps == 3 and plan.images == 96


def test_configs_are_frozen_and_validated_when_the_method_is_made():
    cfg = DACConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width = 2.0
    info = DatasetInfo("t", 10, (28, 28, 1), num_samples=100)
    with pytest.raises(InputError, match="select_on"):
        DAC(DACConfig(select_on="pairs"), info, 10, make_strategy("one_device"), (28, 28, 1))
    with pytest.raises(InputError, match="batch_size must be positive"):
        DAC(DACConfig(batch_size=0), info, 10, make_strategy("one_device"), (28, 28, 1))


def test_an_override_holds_in_the_method_and_in_config_json(tmp_path):
    """precise_gan once rewrote eval_every/checkpoint_every in build(); an override now holds."""
    options = run.RunOptions(method="precise_gan", dataset="gaussians8?n=400", preset="cpu",
                             workdir=str(tmp_path), overrides=("eval_every=3", "checkpoint_every=2"))
    method, _, _, resolved = run.build(options)
    assert (method.config.eval_every, method.config.checkpoint_every) == (3, 2)
    assert (resolved["config"]["eval_every"], resolved["config"]["checkpoint_every"]) == (3, 2)


class _Planned(DAC):
    """DAC with a scripted plan: two stages of 2 and 3 steps over given samples, and an eager end."""

    def epoch_plan(self, epoch, predict_all):
        self.calls.append(("plan", epoch))
        record = self.calls.append
        return EpochPlan((
            Stage(step=self.train_step, steps=2, batch_size=16, indices=np.arange(40), num_views=2,
                  begin=lambda: record(("first", epoch)) or {"t/first": 1.0}),
            Stage(step=self.train_step, steps=3, batch_size=16, indices=np.arange(40, 100), num_views=2,
                  order="chunk", chunk=1, begin=lambda: record(("second", epoch)) or {}),
            eager(lambda: record(("end", epoch)) or {}, "end")))


def test_the_trainer_runs_the_plan_and_nothing_else(tmp_path, monkeypatch):
    options = run.RunOptions(method="dac", dataset="digits", workdir=str(tmp_path), preset="cpu", seed=1,
                             overrides=("width=0.125", "epochs=2", "select_on=view"), progress=False, export=False)
    monkeypatch.setattr(run.methods, "get", lambda name: _Planned)
    method, source, _, _ = run.build(options)
    method.calls = []
    trainer = Trainer(method, source, str(tmp_path), progress=False, log=lambda m: None)
    result = trainer.run()
    assert method.calls == [("plan", 0), ("first", 0), ("second", 0), ("end", 0),
                            ("plan", 1), ("first", 1), ("second", 1), ("end", 1)]
    assert result.steps == 2 * (2 + 3) and int(method.optimizer.iterations.numpy()) == 10
    assert result.train_images_per_second > 0
