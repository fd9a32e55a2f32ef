"""The faults a long run meets: a work directory in use, a full disk, a truncated checkpoint,
SIGINT / SIGTERM in the middle of an epoch."""

import contextlib
import glob
import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfcluster import run
from tfcluster.errors import InputError, StorageError, TrainingInterrupted, WorkdirInUseError
from tfcluster.training import loop
from tfcluster.training.workdir import WorkdirLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# select_on=epoch: one pass over all samples an epoch, the plan whose step counts these tests assume
TINY = ("select_on=epoch", "width=0.125", "batch_size=64", "bn_momentum=0.9", "eval_every=1",
        "augment.rotation=0", "augment.shift=0", "augment.scale=1,1", "checkpoint_every=1", "max_checkpoints=5")
STEPS_PER_EPOCH = 1797 // 64  # digits


def _options(workdir, epochs=2, **kw):
    return run.RunOptions(method="dac", dataset="digits", workdir=str(workdir), preset="cpu", seed=3,
                          overrides=TINY + (f"epochs={epochs}",), progress=False, export=False, **kw)


def _checkpoints(workdir):
    return tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints")).all_model_checkpoint_paths


HOLD = """
import sys, time
from tfcluster.training.workdir import WorkdirLock
lock = WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_work_directory_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        with pytest.raises(WorkdirInUseError, match=rf"in use by process {holder.pid} on .*another --workdir"):
            run.train(_options(workdir), log=lambda m: None)
        with pytest.raises(WorkdirInUseError):
            WorkdirLock(str(workdir)).acquire()
        assert time.perf_counter() - t0 < 30  # refused, not waited for
        assert not os.path.exists(workdir / "checkpoints")
    finally:
        holder.kill()  # SIGKILL: no chance to release; the OS drops the flock
        holder.wait()
    messages = []
    metrics = run.train(_options(workdir, epochs=1), log=messages.append)
    assert metrics["epochs_run"] == 1
    assert any("took over the lock" in m and str(holder.pid) in m for m in messages)
    with WorkdirLock(str(workdir)) as lock:  # released cleanly at the end of the run: nothing stale
        assert lock.stale_holder is None


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path):
    workdir = tmp_path / "run"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG

    def fill_disk_after_epoch_1(message):
        if message.startswith("epoch 1/"):  # its checkpoint is written: no later one may pass half its size
            (first,) = _checkpoints(workdir)
            resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(glob.glob(first + ".data-*")[0]) // 2, hard))

    try:
        with pytest.raises(StorageError, match=r"could not write a checkpoint .* the previous one .*ckpt-"
                                               rf"{STEPS_PER_EPOCH}\) is intact"):
            run.train(_options(workdir, epochs=2), log=fill_disk_after_epoch_1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    (first,) = _checkpoints(workdir)
    assert first.endswith(f"ckpt-{STEPS_PER_EPOCH}")
    messages = []
    metrics = run.train(_options(workdir, epochs=2), log=messages.append)  # resumes from the intact one
    assert any(m.startswith(f"resumed from {first}") for m in messages)
    assert metrics["epochs_run"] == 1 and metrics["steps"] == 2 * STEPS_PER_EPOCH


def test_a_failed_export_leaves_no_partial_version(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    run.train(dataclasses_replace(_options(workdir, epochs=1), export=True), log=lambda m: None)
    assert os.listdir(workdir / "export") == ["1"]
    real_save = tf.saved_model.save

    def full_disk(*args, **kwargs):
        os.makedirs(args[1], exist_ok=True)
        open(os.path.join(args[1], "saved_model.pb"), "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", full_disk)
    with pytest.raises(StorageError, match="could not write the SavedModel .*No space left"):
        run.train(dataclasses_replace(_options(workdir, epochs=1), export=True), log=lambda m: None)
    assert os.listdir(workdir / "export") == ["1"]  # no half-written version 2, no temporary directory
    monkeypatch.setattr(tf.saved_model, "save", real_save)
    run.train(dataclasses_replace(_options(workdir, epochs=1), export=True), log=lambda m: None)
    assert sorted(os.listdir(workdir / "export")) == ["1", "2"]


def dataclasses_replace(options, **kw):
    import dataclasses

    return dataclasses.replace(options, **kw)


class _Stop(Exception):
    pass


def _stop_after(epochs):
    def log(message):
        if message.startswith(f"epoch {epochs}/"):
            raise _Stop()
    return log


@pytest.mark.slow
def test_a_truncated_latest_checkpoint_is_reported_and_the_one_before_used(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(_Stop):
        run.train(_options(workdir, epochs=3), log=_stop_after(2))
    first, latest = _checkpoints(workdir)
    data = glob.glob(latest + ".data-*")[0]
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 3)
    messages = []
    metrics = run.train(_options(workdir, epochs=3), log=messages.append)
    assert any(m.startswith(f"checkpoint {latest} is unreadable") for m in messages)
    assert any(m.startswith(f"resumed from {first} (epoch 1, step {STEPS_PER_EPOCH})") for m in messages)
    assert metrics["epochs_run"] == 2 and metrics["steps"] == 3 * STEPS_PER_EPOCH
    # nothing readable at all: a clear error, not a fresh start over the user's files
    for path in glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.index")):
        open(path, "wb").close()
    with pytest.raises(InputError, match="no readable checkpoint"):
        run.train(_options(workdir, epochs=3), log=lambda m: None)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_at_the_next_step_and_the_rerun_continues_the_epoch(tmp_path, monkeypatch, signum):
    workdir = tmp_path / "run"
    original = loop.Trainer._train_step
    calls = []

    def step_then_signal(self, step_fn, batch, epoch):
        out = original(self, step_fn, batch, epoch)
        calls.append(int(self.step.numpy()))
        if len(calls) == STEPS_PER_EPOCH + 5:  # the 6th step of the second epoch
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(loop.Trainer, "_train_step", step_then_signal)
    before = signal.getsignal(signum)
    # DAC's epoch is one stage whose begin computes the epoch's targets: it restarts from the epoch's start
    with pytest.raises(TrainingInterrupted, match=rf"stopped by {signum.name} in epoch 2; the re-run repeats "
                                                  rf"'train' from its start \(step {STEPS_PER_EPOCH}\).*saved "
                                                  ".*re-run") as info:
        run.train(_options(workdir, epochs=3), log=lambda m: None)
    assert info.value.signal_number == signum
    assert signal.getsignal(signum) is before and len(calls) == STEPS_PER_EPOCH + 5  # handler put back
    assert _checkpoints(workdir)[-1].endswith(f"ckpt-{STEPS_PER_EPOCH}")
    monkeypatch.setattr(loop.Trainer, "_train_step", original)
    messages = []
    metrics = run.train(_options(workdir, epochs=3), log=messages.append)
    assert any(m.startswith(f"resumed from {_checkpoints(workdir)[-3]} (epoch 1, step {STEPS_PER_EPOCH})")
               for m in messages)
    # epoch 2 again from its start, then epoch 3: no step lost or counted twice
    assert metrics["steps"] == 3 * STEPS_PER_EPOCH and metrics["epochs_run"] == 2
    assert metrics["acc"] is not None and np.isfinite(metrics["acc"])


# method -> overrides of its cpu preset: two short epochs on 400 MNIST images, a checkpoint every epoch.
EXACT_RUNS = {
    "dac": ("epochs=2", "chunk_size=200", "width=0.125", "calibration_samples=200", "eval_every=1"),
    "dccm": ("epochs=2", "chunk_size=200", "width=0.125", "calibration_samples=200", "report_samples=200",
             "eval_every=1"),
    "gatcluster": ("epochs=2", "large_batch=200", "target_batch=200", "repeats=2", "width=0.125",
                   "calibration_samples=200", "eval_every=1", "kmeans_init=2"),
    "dbc": ("ae_epochs=1", "epochs=2", "batch_size=50", "width=0.25", "kmeans_n_init=2", "tol=0",
            "checkpoint_every=1", "steps_per_call=2", "preview_images=0"),
    "precise_gan": ("generator_iterations=12", "eval_every_iterations=6", "holdout=40", "eval_fakes=100",
                    "hidden=64", "dim=8", "batch_size=20", "critic_iterations=2", "classifier_iterations=1"),
}


# DCCM's --deterministic runs are not bit-reproducible: about one run in three of the test below ended
# 1e-6 away from its uninterrupted twin, resumed or not (closing note of session 24).
NOT_BIT_REPRODUCIBLE = ("dccm",)


@pytest.fixture(scope="module")
def mnist400():
    from tfcluster.data import sources

    full = sources.load("mnist5k")
    idx = np.random.RandomState(0).permutation(len(full))[:400]
    return sources.make_source("mnist400", full.x[idx], full.y[idx], num_classes=10)


class _Killed(Exception):
    """Stands for SIGKILL: the run ends at once, nothing saved."""


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(EXACT_RUNS))
def test_resuming_is_exact_after_a_kill_and_after_sigterm(tmp_path, monkeypatch, mnist400, method):
    """An uninterrupted run, and one killed in its last epoch (resumed from the last epoch's checkpoint),
    then stopped by SIGTERM in the middle of a stage (resumed from that stage's start when it has a begin,
    from the step reached when not), end with the same probabilities, bit for bit."""
    def options(name):
        return run.RunOptions(method=method, dataset="mnist400", workdir=str(tmp_path / name), preset="cpu",
                              seed=1, overrides=EXACT_RUNS[method], progress=False, export=False,
                              deterministic=True)

    calls = []
    original = loop.Trainer._train_step

    def counting(self, step_fn, batch, epoch):
        out = original(self, step_fn, batch, epoch)
        calls.append(epoch)
        return out

    monkeypatch.setattr(loop.Trainer, "_train_step", counting)
    whole = run.train(options("whole"), log=lambda m: None, source=mnist400)
    total, last_epoch = len(calls), calls[-1]
    kill_at = calls.index(last_epoch) + 1  # after the last epoch's first call: the epoch before's checkpoint
    term_at = total - 1  # counted on over the resumed run: its last epoch's third-to-last call
    assert 1 <= kill_at < term_at < total

    def stopping(self, step_fn, batch, epoch):
        out = original(self, step_fn, batch, epoch)
        calls.append(epoch)
        if len(calls) == kill_at:
            raise _Killed()
        if len(calls) == term_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    calls.clear()
    monkeypatch.setattr(loop.Trainer, "_train_step", stopping)
    with pytest.raises(_Killed):
        run.train(options("stopped"), log=lambda m: None, source=mnist400)
    steps_done = len(calls)  # the count goes on: the resumed run's calls follow
    messages = []
    with pytest.raises(TrainingInterrupted):
        run.train(options("stopped"), log=messages.append, source=mnist400)
    assert any(m.startswith("resumed from") for m in messages)
    assert len(calls) >= term_at and steps_done == kill_at
    monkeypatch.setattr(loop.Trainer, "_train_step", original)
    resumed = run.train(options("stopped"), log=lambda m: None, source=mnist400)
    got, want = (np.load(tmp_path / name / "probabilities.npy") for name in ("stopped", "whole"))
    assert resumed["steps"] == whole["steps"]
    if method in NOT_BIT_REPRODUCIBLE:
        # two uninterrupted --deterministic runs of it differ now and then at round-off (about 1e-6)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    else:
        np.testing.assert_array_equal(got, want)
        assert resumed["acc"] == whole["acc"]


# -- a damaged work directory, a full file system, a foreign model ---------------------------------------------

def _stopped_after_two_epochs(workdir):
    with pytest.raises(_Stop):
        run.train(_options(workdir, epochs=3), log=_stop_after(2))
    return _checkpoints(workdir)


def test_a_garbled_checkpoint_index_is_rebuilt_not_a_silent_fresh_start(tmp_path):
    workdir = tmp_path / "run"
    first, latest = _stopped_after_two_epochs(workdir)
    stamps = {p: os.path.getmtime(p + ".index") for p in (first, latest)}
    index = workdir / "checkpoints" / "checkpoint"
    index.write_bytes(b"model_checkpoint_path: \x00\xff garbled {{")
    messages = []
    metrics = run.train(_options(workdir, epochs=3), log=messages.append)
    assert any("is unreadable (kept as checkpoint.unreadable); rebuilt it from the 2 checkpoint file(s) found: "
               f"ckpt-{STEPS_PER_EPOCH}, ckpt-{2 * STEPS_PER_EPOCH}" in m for m in messages)
    assert any(m.startswith(f"resumed from {latest} (epoch 2, step {2 * STEPS_PER_EPOCH})") for m in messages)
    assert metrics["epochs_run"] == 1 and metrics["steps"] == 3 * STEPS_PER_EPOCH
    assert {p: os.path.getmtime(p + ".index") for p in (first, latest)} == stamps  # not written over
    assert (workdir / "checkpoints" / "checkpoint.unreadable").exists()


def test_the_checkpoint_carries_the_settings_when_config_json_is_gone_or_truncated(tmp_path):
    workdir = tmp_path / "run"
    _stopped_after_two_epochs(workdir)
    config = workdir / "config.json"
    kept = config.read_text()
    config.unlink()
    changed = dataclasses_replace(_options(workdir, epochs=3),
                                  overrides=_options(workdir, epochs=3).overrides + ("learning_rate=1e30",))
    with pytest.raises(InputError, match=r"was written with other settings \(config.learning_rate differ\)"):
        run.train(changed, log=lambda m: None)
    assert not config.exists()  # the refused settings were not written down
    config.write_text(kept[:len(kept) // 2])  # truncated
    messages = []
    with pytest.raises(InputError, match="config.learning_rate differ"):
        run.train(changed, log=messages.append)
    assert any("config.json is unreadable (JSONDecodeError)" in m for m in messages)
    metrics = run.train(_options(workdir, epochs=3), log=messages.append)  # the same settings resume
    assert metrics["steps"] == 3 * STEPS_PER_EPOCH
    assert json.load(open(config))["config"]["learning_rate"] == 0.001


@contextlib.contextmanager
def _small_filesystem(path, kilobytes):
    """A tmpfs of that size mounted at `path` (root only); yields a function that enlarges it to 64 MB, or
    None where mounting is not permitted."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(path)],
                             capture_output=True).returncode == 0 if hasattr(os, "geteuid") and os.geteuid() == 0 \
        else False

    def enlarge():
        subprocess.run(["mount", "-o", "remount,size=64m", str(path)], check=True)

    try:
        yield enlarge if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_filesystem_ends_with_one_clear_line_and_the_run_resumes_once_there_is_space(tmp_path):
    """A 160 kB file system holds the first epoch's checkpoint (about 90 kB with the events) but not the
    second's. Where mounting is not permitted, a file size limit below one checkpoint stands in."""
    workdir = tmp_path / "disk" / "run"
    with _small_filesystem(tmp_path / "disk", 160) as enlarge:
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if enlarge is None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, hard))
        try:
            with pytest.raises(StorageError) as info:
                run.train(_options(workdir, epochs=3), log=lambda m: None)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old_handler)
        message = str(info.value)
        assert "\n" not in message and str(workdir) in message and "re-run" in message, message
        saved = tf.train.get_checkpoint_state(str(workdir / "checkpoints"))
        if enlarge is not None:
            assert saved is not None  # the first epoch's checkpoint is whole
            enlarge()
        messages = []
        metrics = run.train(_options(workdir, epochs=3), log=messages.append)
        assert metrics["steps"] == 3 * STEPS_PER_EPOCH
        if saved is not None:
            assert any(m.startswith(f"resumed from {saved.model_checkpoint_path}") for m in messages)


def test_tensorboard_and_lock_file_write_failures_are_storage_errors(tmp_path):
    from tfcluster.training import summaries

    writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
    try:
        with pytest.raises(StorageError, match=rf"could not write TensorBoard events to {tmp_path}/tb/events\.out"
                                               r"\.tfevents\S+ \(File too large\): free space"):
            for step in range(300):
                summaries.write_scalars(writer, {"x": float(step)}, step)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
        with pytest.raises(StorageError, match=rf"could not write the lock file {tmp_path}/w/.lock"):
            WorkdirLock(str(tmp_path / "w")).acquire()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    with WorkdirLock(str(tmp_path / "w")) as lock:  # once there is space, the lock is taken as usual
        assert lock.stale_holder is None


def test_a_savedmodel_not_made_by_tfcluster_is_named_in_one_line(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "foreign"), signatures={"serving_default": module.f})
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 8, 8, 1), np.uint8))
    proc = subprocess.run([sys.executable, "-m", "tfcluster", "predict", f"--model={tmp_path / 'foreign'}",
                           f"--input={tmp_path / 'x.npz'}", f"--output={tmp_path / 'out'}"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "is not a tfcluster export: its serving_default signature takes 'x'" in last
    assert "Traceback" not in proc.stderr


def test_non_finite_numbers_are_refused_in_configs():
    from tfcluster import configs
    from tfcluster.data import sources

    info = sources.DatasetInfo(name="x", num_classes=10, image_shape=(28, 28, 1), num_samples=100)
    for override in ("learning_rate=nan", "learning_rate=inf", "learning_rate=-inf", "augment.scale=1,inf"):
        with pytest.raises(InputError, match="finite"):
            configs.resolve("dac", "cpu", info, (override,))


def test_a_failed_write_outside_the_library_is_one_line_not_a_traceback():
    import errno

    from tfcluster.cli import reports_errors

    @reports_errors
    def main(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/summary.json")

    with pytest.raises(SystemExit) as info:
        main([])
    assert str(info.value.code) == ("error: could not write /data/out/summary.json (No space left on device): free "
                                    "space or fix the directory's permissions, then re-run the same command "
                                    "(checkpoints already written are intact)")
