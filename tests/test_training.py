"""Loop, checkpoints, resume, NaN handling and export, on small real data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfcluster import run
from tfcluster.data import sources
from tfcluster.errors import InputError, NonFiniteLossError
from tfcluster.export import ExportedModel
from tfcluster.methods.dac import DAC
from tfcluster.training.loop import Trainer, distribute_batches

# select_on=epoch: one pass over all samples an epoch, the plan whose step counts these tests assume
TINY = ("select_on=epoch", "width=0.125", "batch_size=64", "bn_momentum=0.9", "eval_every=1",
        "augment.rotation=0", "augment.shift=0", "augment.scale=1,1")


def _options(workdir, epochs=2, **kw):
    return run.RunOptions(method="dac", dataset="digits", workdir=str(workdir), preset="cpu", seed=3,
                          overrides=TINY + (f"epochs={epochs}",), progress=False, **kw)


class _Interrupt(Exception):
    pass


def _stop_after(epochs):
    def log(message):
        if message.startswith(f"epoch {epochs}/"):
            raise _Interrupt()
    return log


def _weights(workdir, options):
    method, source, pre, _ = run.build(options)
    trainer = Trainer(method, source, str(workdir), progress=False, log=lambda m: None)
    trainer.restore()
    return trainer, [w.numpy() for w in method.model.weights]


@pytest.mark.slow
def test_resume_continues_step_count_and_state_and_matches_uninterrupted(tmp_path):
    tf.config.experimental.enable_op_determinism()
    full = tmp_path / "full"
    run.train(_options(full, epochs=3), log=lambda m: None)
    cut = tmp_path / "cut"
    with pytest.raises(_Interrupt):
        run.train(_options(cut, epochs=3), log=_stop_after(2))
    trainer, _ = _weights(cut, _options(cut, epochs=3))
    steps_per_epoch = 1797 // 64
    assert int(trainer.epoch.numpy()) == 2 and int(trainer.step.numpy()) == 2 * steps_per_epoch
    assert float(trainer.method.lam.numpy()) == pytest.approx(trainer.method.config.schedule.lambda_at(1))
    messages = []
    metrics = run.train(_options(cut, epochs=3), log=messages.append)
    assert any(m.startswith("resumed from") for m in messages)
    assert metrics["epochs_run"] == 1 and metrics["steps"] == 3 * steps_per_epoch
    _, w_full = _weights(full, _options(full, epochs=3))
    _, w_cut = _weights(cut, _options(cut, epochs=3))
    for a, b in zip(w_full, w_cut):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_two_deterministic_runs_are_identical(tmp_path):
    outs = []
    for name in ("a", "b"):
        run.train(_options(tmp_path / name, epochs=2, deterministic=True), log=lambda m: None)
        outs.append(np.load(tmp_path / name / "probabilities.npy"))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].std() > 0  # not a constant output


def test_a_short_run_through_tensorflow_datasets_on_mock_data(tmp_path):
    """registry -> tensorflow-datasets -> tf.data -> training -> metrics, offline (tfds.testing.mock_data)."""
    import tensorflow_datasets as tfds

    options = run.RunOptions(method="dac", dataset="mnist", workdir=str(tmp_path), preset="cpu", seed=0,
                             overrides=TINY + ("epochs=1",), progress=False, export=False)
    with tfds.testing.mock_data(num_examples=64):
        metrics = run.train(options, log=lambda m: None)
    assert metrics["num_samples"] == 128 and metrics["steps"] == 2  # train + test joined, 128 // 64 steps
    assert 0.0 <= metrics["acc"] <= 1.0 and metrics["num_clusters"] == 10


def test_resume_with_other_settings_is_refused(tmp_path):
    run.train(_options(tmp_path, epochs=1), log=lambda m: None)
    with pytest.raises(InputError, match="other settings"):
        run.train(_options(tmp_path, epochs=2), log=lambda m: None)
    # steps_per_call changes the speed, not the steps: the finished run resumes with nothing to train
    again = run.RunOptions(**{**vars(_options(tmp_path, epochs=1)),
                              "overrides": TINY + ("epochs=1", "steps_per_call=4")})
    assert run.train(again, log=lambda m: None)["epochs_run"] == 0


def test_a_checkpoint_with_mirrored_loop_counters_resumes(tmp_path):
    """Checkpoints written while the loop's counters were mirrored variables (created in the
    strategy's scope) resume into today's plain ones, values and all."""
    options = _options(tmp_path / "run", epochs=1)
    run.train(options, log=lambda m: None)
    trainer, weights = _weights(tmp_path / "run", options)
    counters = ("epoch", "step", "stage_index", "stage_step", "images_seen")
    values = {name: int(getattr(trainer, name).numpy()) for name in counters}
    assert values["step"] == 1797 // 64 and values["images_seen"] == 64 * values["step"]
    strategy = trainer.method.strategy
    assert strategy.num_replicas_in_sync == 2  # the counters below really are mirrored
    with strategy.scope():
        mirrored = {name: tf.Variable(value, dtype=tf.int64, trainable=False) for name, value in values.items()}
    assert all(isinstance(v, tf.distribute.DistributedValues) for v in mirrored.values())
    old = tmp_path / "old"
    tf.train.CheckpointManager(tf.train.Checkpoint(**mirrored, **trainer.method.checkpoint_objects()),
                               str(old), max_to_keep=1).save(checkpoint_number=values["step"])

    method, source, _, _ = run.build(options)
    resumed = Trainer(method, source, str(tmp_path / "new"), progress=False, log=lambda m: None,
                      restore_dir=str(old))
    assert resumed.restore() is not None
    assert {name: int(getattr(resumed, name).numpy()) for name in counters} == values
    for a, b in zip(weights, [w.numpy() for w in method.model.weights]):
        np.testing.assert_array_equal(a, b)


class _PoisonedDAC(DAC):
    """DAC whose loss turns NaN from the second epoch on."""

    def build(self):
        super().build()
        self.poison = tf.Variable(1.0, trainable=False)

    def begin_epoch(self, epoch, predict_all):
        self.poison.assign(float("nan") if epoch >= 1 else 1.0)
        return super().begin_epoch(epoch, predict_all)

    def train_step(self, batch):
        logs = super().train_step(batch)
        return {**logs, "loss": logs["loss"] * self.poison}


@pytest.mark.parametrize("per_call", [1, 8])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, per_call):
    """The first NaN step (epoch 2's first, step 29) is named, also from inside a block of 8 steps."""
    options = run.RunOptions(**{**vars(_options(tmp_path, epochs=3)),
                                "overrides": TINY + ("epochs=3", f"steps_per_call={per_call}")})
    monkeypatch.setattr(run.methods, "get", lambda name: _PoisonedDAC)
    with pytest.raises(NonFiniteLossError, match="at epoch 1 step 29;.*last good checkpoint is .*ckpt-28"):
        run.train(options, log=lambda m: None)
    monkeypatch.undo()
    trainer, weights = _weights(tmp_path, options)
    assert int(trainer.epoch.numpy()) == 1
    assert all(np.all(np.isfinite(w)) for w in weights)


class _BlasWatchingDAC(DAC):
    """DAC that records, in each epoch's eager work, how many threads NumPy's BLAS may use."""

    seen = []

    def begin_epoch(self, epoch, predict_all):
        import threadpoolctl

        _BlasWatchingDAC.seen += [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        return super().begin_epoch(epoch, predict_all)


def test_numpy_blas_runs_on_one_thread_while_training_only(tmp_path, monkeypatch):
    import threadpoolctl

    before = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    monkeypatch.setattr(run.methods, "get", lambda name: _BlasWatchingDAC)
    run.train(_options(tmp_path, epochs=1), log=lambda m: None)
    assert before and _BlasWatchingDAC.seen == [1] * len(before)
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"] == before


def _scalars(workdir, tag):
    import glob

    values = {}
    for path in glob.glob(os.path.join(str(workdir), "tensorboard", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def test_several_steps_per_call_train_the_same_steps(tmp_path):
    """steps_per_call=5 runs the steps in a loop inside one traced call (two replicas here; 28 steps an
    epoch, so each epoch ends with a block of 3): the same weights, losses and counters as one step a call."""
    runs = {}
    for per_call in (1, 5):
        options = run.RunOptions(**{**vars(_options(tmp_path / str(per_call), epochs=2, deterministic=True)),
                                    "overrides": TINY + ("epochs=2", "log_every=1", f"steps_per_call={per_call}")})
        metrics = run.train(options, log=lambda m: None)
        runs[per_call] = (metrics, np.load(tmp_path / str(per_call) / "probabilities.npy"),
                          _scalars(tmp_path / str(per_call), "train/loss"))
    (m1, p1, l1), (m5, p5, l5) = runs[1], runs[5]
    assert m1["steps"] == m5["steps"] == 2 * (1797 // 64)
    with open(tmp_path / "5" / "config.json") as f:
        assert json.load(f)["config"]["steps_per_call"] == 5
    np.testing.assert_array_equal(p1, p5)
    assert sorted(l1) == sorted(l5) == list(range(1, 57)) and l1 == l5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dac_digits")
    options = run.RunOptions(method="dac", dataset="digits", workdir=str(workdir), preset="cpu", seed=0,
                             overrides=("epochs=8", "width=0.25", "eval_every=100"),
                             progress=False, circle_plot=True)
    return options, run.train(options, log=lambda m: None)


def test_short_dac_run_on_digits_beats_chance(trained):
    options, metrics = trained
    assert metrics["num_samples"] == 1797
    assert metrics["acc"] > 0.3, metrics  # chance is ~0.11 for 10 balanced classes
    assert metrics["nmi"] > 0.2
    assert metrics["extra"]["nonempty_clusters"] >= 5
    for name in ("config.json", "metrics.json", "circle_map.png"):
        assert os.path.exists(os.path.join(options.workdir, name))
    assert os.listdir(os.path.join(options.workdir, "tensorboard"))


def test_export_reload_gives_the_live_models_outputs(trained):
    options, metrics = trained
    assert metrics["export"].endswith(os.path.join("export", "1"))
    method, source, pre, _ = run.build(options)
    trainer = Trainer(method, source, options.workdir, progress=False, log=lambda m: None)
    trainer.restore()
    live = trainer.predict_all()
    exported = ExportedModel(os.path.join(options.workdir, "export"))
    out = exported.predict(source.x)
    assert out["cluster"].dtype == np.int64 and out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"], live, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(out["cluster"], live.argmax(1))
    # batch-independent predictions: BatchNorm uses its moving statistics when serving
    single = exported.predict(source.x[:7], batch_size=1)["probabilities"]
    np.testing.assert_allclose(single, out["probabilities"][:7], rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="channels"):
        exported.predict(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        exported.predict(np.zeros((2, 8, 8, 1), np.float32))


def test_saved_model_cli_reads_the_signature(trained):
    options, metrics = trained
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    shown = subprocess.run(cli + ["show", "--dir", metrics["export"], "--tag_set", "serve", "--signature_def",
                                  "serving_default"], capture_output=True, text=True, check=True).stdout
    assert "images" in shown and "DT_UINT8" in shown
    assert "cluster" in shown and "DT_INT64" in shown and "probabilities" in shown
    np.save(os.path.join(options.workdir, "x.npy"), sources.load("digits").x[:3])
    ran = subprocess.run(cli + ["run", "--dir", metrics["export"], "--tag_set", "serve", "--signature_def",
                                "serving_default", "--inputs", f"images={os.path.join(options.workdir, 'x.npy')}"],
                         capture_output=True, text=True, check=True).stdout
    assert "cluster" in ran


def test_not_a_saved_model_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not a SavedModel"):
        ExportedModel(str(tmp_path))


def test_distribute_batches_splits_rows_as_experimental_distribute_dataset():
    """The loop's batch splitting (replica r: rows [r B/R, (r+1) B/R)) matches TF's dataset distribution."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    batches = {"image": np.arange(2 * 6 * 3, dtype=np.float32).reshape(2, 6, 3),
               "index": np.arange(12, dtype=np.int64).reshape(2, 6)}
    ds = tf.data.Dataset.from_tensor_slices(batches)
    ours = list(distribute_batches(strategy, ds))
    theirs = list(strategy.experimental_distribute_dataset(ds))
    assert len(ours) == len(theirs) == 2
    for b, (mine, ref) in enumerate(zip(ours, theirs)):
        for key in batches:
            got = [t.numpy() for t in strategy.experimental_local_results(mine[key])]
            want = [t.numpy() for t in strategy.experimental_local_results(ref[key])]
            assert len(got) == 2
            for r in range(2):
                np.testing.assert_array_equal(got[r], batches[key][b][3 * r:3 * (r + 1)])
                np.testing.assert_array_equal(got[r], want[r])
        assert "CPU:1" in strategy.experimental_local_results(mine["image"])[1].device
    one = tf.distribute.MirroredStrategy(["/cpu:0"])
    (first, *_) = distribute_batches(one, ds)
    np.testing.assert_array_equal(first["index"].numpy(), batches["index"][0])
    odd = tf.data.Dataset.from_tensors({"image": np.zeros([5, 2], np.float32)})
    with pytest.raises(InputError, match="5 rows cannot be split evenly over 2 replicas"):
        list(distribute_batches(strategy, odd))
