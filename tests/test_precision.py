"""--precision: the choice of precision, float32 islands under mixed bfloat16, replicas, export, resume."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfcluster import run
from tfcluster.data.sources import DatasetInfo
from tfcluster.errors import InputError
from tfcluster.export import ExportedModel
from tfcluster.configs.dac import DACConfig, ThresholdSchedule
from tfcluster.methods.dac import DAC
from tfcluster import precision
from tfcluster.training.strategy import make_strategy

from stepping import global_step


def test_auto_picks_bfloat16_only_on_bf16_hardware_and_for_methods_measured_in_it(monkeypatch):
    monkeypatch.setattr(precision, "bf16_hardware", lambda: "cpu:amx_bf16")
    assert precision.resolve("auto", True) == "bfloat16"
    assert precision.resolve("auto", False) == "float32"
    monkeypatch.setattr(precision, "bf16_hardware", lambda: "")
    assert precision.resolve("auto", True) == "float32"
    assert precision.resolve("bfloat16", False) == "bfloat16"
    with pytest.raises(InputError, match="precision must be one of"):
        precision.resolve("float16")


def test_the_policy_holds_inside_the_block_only():
    import keras

    before = keras.mixed_precision.dtype_policy().name
    with precision.policy("bfloat16"):
        assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.dtype_policy().name == before


def _dac(strategy, prec):
    tf.keras.utils.set_random_seed(0)
    cfg = DACConfig(width=0.25, bn_momentum=0.9, batch_size=8, select_on="view",
                    schedule=ThresholdSchedule(upper0=0.8, lower0=0.6))
    method = DAC(cfg, DatasetInfo("t", 4, (12, 12, 1)), 4, strategy, (12, 12, 1), precision=prec)
    method.build_in_precision()
    return method


def test_bfloat16_computes_in_bfloat16_with_float32_variables_and_outputs():
    method = _dac(make_strategy("one_device"), "bfloat16")
    conv = method.model.get_layer("block1_conv")
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    assert method.model.get_layer("block1_bn").moving_mean.dtype == "float32"
    # the head, from the 1x1 convolution to K channels on, is a float32 island
    head = ["block7_conv", "block7_bn", "gap", "gap_bn", "restraint"]
    assert [method.model.get_layer(n).compute_dtype for n in head] == ["float32"] * len(head)
    assert method.model.get_layer("block6_relu").compute_dtype == "bfloat16"
    out = method.model(tf.random.normal([3, 12, 12, 1]), training=False)
    assert out.dtype == tf.float32
    assert {str(v.dtype) for v in method.optimizer.variables} <= {"float32", "int64"}  # slots, step counter


def test_bfloat16_two_replica_step_is_the_one_device_step_within_bf16_rounding():
    """bfloat16 keeps 8 significant bits (relative rounding 2^-8 = 0.4%). The replicas compute each
    example as one device does, but on sub-batches whose kernels may round differently, so the loss may
    differ at the level of bfloat16 rounding (bound: 2%), and an RMSprop first step (about
    lr / sqrt(1 - rho) = 3e-3 per weight, whatever the gradient) may flip for near-zero gradients:
    most weights must agree to float32 noise, all within two steps."""
    rng = np.random.RandomState(0)
    batch = {"image": rng.randn(8, 12, 12, 1).astype(np.float32),
             "views": rng.randn(8, 1, 12, 12, 1).astype(np.float32), "index": np.arange(8, dtype=np.int64)}
    results = []
    for strategy in (make_strategy("one_device"), make_strategy("mirrored")):
        method = _dac(strategy, "bfloat16")
        logs = global_step(strategy, method, batch)
        results.append((logs, [w.numpy() for w in method.model.weights]))
    (logs1, w1), (logs2, w2) = results
    assert logs1["loss"] > 0 and logs1["loss"] == pytest.approx(logs2["loss"], rel=2e-2)
    diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(w1, w2)])
    assert diffs.max() < 7e-3 and np.median(diffs) < 1e-6


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dac_bf16")
    options = run.RunOptions(method="dac", dataset="digits", workdir=str(workdir), preset="cpu", seed=0,
                             overrides=("epochs=1", "width=0.125"), progress=False, precision="bfloat16")
    return options, run.train(options, log=lambda m: None)


def test_a_bfloat16_run_records_its_precision_and_serves_float32(bf16_run):
    options, metrics = bf16_run
    assert metrics["precision"] == "bfloat16"
    import json

    config = json.load(open(os.path.join(options.workdir, "config.json")))
    assert config["precision"] == "bfloat16" and config["precision_requested"] == "bfloat16"
    model = ExportedModel(os.path.join(options.workdir, "export"))
    out = model.signature(images=tf.zeros([2, 8, 8, 1], tf.uint8))
    assert {k: v.dtype for k, v in out.items()} == {"cluster": tf.int64, "probabilities": tf.float32,
                                                   "label_features": tf.float32}
    np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, rtol=1e-5)


def test_resuming_in_another_precision_is_refused(bf16_run):
    options, _ = bf16_run
    import dataclasses

    with pytest.raises(InputError, match="precision"):
        run.train(dataclasses.replace(options, precision="float32"), log=lambda m: None)
