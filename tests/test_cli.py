"""The command line as a person meets it: checks before TensorFlow, quiet logs, --print_config,
the run's progress line; and the TF-free config registry those rely on."""

import io
import os
import shutil
import subprocess
import sys
import time

import pytest

from tfcluster import configs, methods
from tfcluster.cli import logs, wants_tf_logs
from tfcluster.errors import InputError
from tfcluster.training.progress import RunProgress, clock


def _tfcluster(*args):
    exe = shutil.which("tfcluster")
    assert exe, "no `tfcluster` command on PATH: install the project (pip install -e .)"
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - t0


@pytest.mark.parametrize("args,message", [
    (["train", "--method=DAC"], "unknown method 'DAC' (did you mean 'dac'?)"),
    (["train", "--method=gat"], "did you mean 'gatcluster'?"),
    (["train", "--set=epoch=2"], "unknown config field 'epoch' (did you mean 'epochs'?)"),
    (["train", "--set=augment.rotaton=3"], "did you mean 'rotation'?"),
    (["train", "--set=epochs=many"], "bad value for 'epochs'"),
    (["train", "--method=dccm", "--preset=m5"], "unknown preset 'm5' for method 'dccm'"),
    (["train", "--dataset=mnist5"], "did you mean 'mnist5k'?"),
    (["train", "--dataset=digits?colour=red"], "takes no option 'colour'"),
    (["cluster", "/nonexistent/images", "--num_clusters=3", "--output=/tmp/x", "--method=dacc"], "unknown method"),
])
def test_argument_mistakes_are_refused_before_tensorflow_starts(args, message):
    extra = ["--workdir=/nonexistent/never_written"] if args[0] == "train" else []
    proc, seconds = _tfcluster(*args, *extra)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert seconds < 3.0, f"took {seconds:.1f} s: TensorFlow was imported before the check"


def test_the_checks_import_no_tensorflow():
    code = ("import sys; from tfcluster.cli import train; from tfcluster import configs; "
            "from tfcluster.data import sources; "
            "[configs.check(m, p) for m in configs.names() for p in configs.presets(m)]; "
            "sources.check_spec('mnist5k?size=32'); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_print_config_shows_the_resolved_config_without_training(tmp_path):
    workdir = tmp_path / "never"
    proc, seconds = _tfcluster("train", "--method=dac", "--preset=cpu", "--dataset=digits", "--set=width=0.25",
                               f"--workdir={workdir}", "--print_config")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("method dac, preset cpu, dataset digits (1797 samples of shape (8, 8, 1))")
    # The preset's values for this dataset, the override, nested fields as --set spells them.
    for line in ("select_on = 'chunk'", "width = 0.25", "epochs = 46", "augment.rotation = 10.0",
                 "schedule.lambda_step = 0.0099"):
        assert any(l.startswith(line) for l in lines), (line, proc.stdout)
    assert not workdir.exists()
    assert seconds < 10.0


def test_help_exits_zero_and_lists_the_print_config_and_tf_logs_flags():
    proc, _ = _tfcluster("train", "--help")
    assert proc.returncode == 0 and "--print_config" in proc.stdout and "--precision" in proc.stdout


def test_registry_matches_the_method_classes():
    """configs (TF-free) and the method classes name the same configs and presets."""
    from tfcluster.nets.gatcluster import RECIPES
    from tfcluster.configs.gatcluster import RECIPE_NAMES

    for name in configs.names():
        cls = methods.get(name)
        assert cls.config_class is configs.config_class(name) and cls.presets is configs.presets(name), name
        assert sorted(cls.presets) == methods.presets(name)
    assert set(RECIPES) == set(RECIPE_NAMES)
    with pytest.raises(InputError, match="unknown method 'nope'"):
        methods.get("nope")


def test_describe_lists_every_field_as_set_spells_it():
    from tfcluster import config as config_lib
    from tfcluster.data.sources import DatasetInfo

    info = DatasetInfo(name="x", num_classes=10, image_shape=(28, 28, 1), num_samples=5000)
    cfg = configs.resolve("gatcluster", "cpu", info, ("augment.shear=3", "repeats=2"))
    lines = configs.describe(cfg)
    assert "augment.shear = 3.0" in lines and "repeats = 2" in lines
    # Every line round-trips through --set to the same config.
    again = config_lib.override(configs.resolve("gatcluster", "cpu", info),
                                [l.replace(" = ", "=").replace("'", "") for l in lines])
    assert again == cfg


# -- TensorFlow's C++ log lines ----------------------------------------------------------------------
NATIVE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796206422.822153    2595 port.cc:153] oneDNN custom operations are on. You may see\n",
    b"E0000 00:00:1796206431.179700    2595 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
    b"W1202 10:27:02.123456  140 grappler.cc:3] Sharding callback duration: 12\n",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with "
    b"the appropriate compiler flags.\n",
]
KEPT = [
    b"Traceback (most recent call last):\n",
    b"F0000 00:00:1796206431.179700    2595 check.cc:52] Check failed: fatal\n",
    b"error: unknown method 'x'\n",
    b"Epoch 3: I0000 is not a log line at the start\n",
    b"I trained it\n",
]


def test_the_filter_drops_native_log_lines_and_keeps_everything_else():
    read_in, write_in = os.pipe()
    read_out, write_out = os.pipe()
    # Interleaved, and split at awkward places: the filter works on a byte stream, not on writes.
    stream = b"".join(x for pair in zip(NATIVE, KEPT) for x in pair) + b"\rpartial progress"
    pid = os.fork()
    if pid == 0:  # the child writes in odd-sized pieces
        os.close(read_in)
        for i in range(0, len(stream), 7):
            os.write(write_in, stream[i:i + 7])
        os._exit(0)
    os.close(write_in)
    logs.drop_native_logs(read_in, write_out)
    os.close(write_out)
    os.waitpid(pid, 0)
    out = b""
    while chunk := os.read(read_out, 65536):
        out += chunk
    assert out == b"".join(KEPT) + b"\rpartial progress"


def test_partial_lines_wait_only_while_they_may_become_log_lines():
    for partial in (b"", b"I", b"I0000", b"I0000 0", b"WARNING: All log", b"To enable"):
        assert logs.could_become_native_log(partial), partial
    for partial in (b"epoch 1/16 | train", b"Epoch", b"Traceback", b"I trained", b"  45/78", b"\r"):
        assert not logs.could_become_native_log(partial), partial


def test_tf_logs_flag_is_read_before_the_subcommand_parses_its_flags():
    assert wants_tf_logs(["--tf_logs"]) and wants_tf_logs(["--method=dac", "--tf_logs=true"])
    assert not wants_tf_logs(["--notf_logs"]) and not wants_tf_logs(["--tf_logs=false", "--method=dac"])


# -- the progress line ----------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_covers_the_whole_run_and_extrapolates_its_eta():
    now = FakeClock()
    out = Terminal()
    p = RunProgress(num_epochs=4, start_epoch=0, stream=out, now=now, min_interval=0.0)
    p.begin_epoch(0, steps_total=10)
    p.phase("train (prepare)")
    assert "| train (prepare) |" in p.line() and "0/10" not in p.line()
    now.t = 5.0
    p.phase("train", steps=True)
    for k in range(1, 6):
        now.t += 1.0
        p.step(k, loss=0.5, images_per_second=640.0)
    # 5 of 10 steps of the first of 4 epochs: 1/8 of the run in 10 s, so 70 s left.
    assert p.fraction() == pytest.approx(0.125) and p.eta() == pytest.approx(70.0)
    line = p.line()
    assert line == "epoch 1/4 | train 5/10 | loss 0.5 | 640 img/s | run 12% | 0:10 elapsed, ETA 1:10", line
    p.phase("evaluate")
    assert "| evaluate |" in p.line() and "5/10" not in p.line()
    now.t = 30.0
    p.end_epoch(0)
    assert p.fraction() == pytest.approx(0.25) and p.eta() == pytest.approx(90.0)
    assert p.line().startswith("epoch 2/4")
    p.message("epoch 1/4: {'acc': 0.5}", log=lambda text: out.write(text + "\n"))
    p.close()
    text = out.getvalue()
    assert "\repoch 1/4 | train 5/10" in text and "epoch 1/4: {'acc': 0.5}\n" in text and text.endswith("\n")
    # where the time went: 5 s preparing, 5 s of steps, then evaluation until t = 30
    assert p.seconds == {"train (prepare)": 5.0, "train (steps)": 5.0, "evaluate": 20.0}


def test_progress_adds_up_the_time_of_numbered_stages_under_one_name():
    now = FakeClock()
    p = RunProgress(num_epochs=1, enabled=False, now=now)
    p.begin_epoch(0, steps_total=4)
    for chunk in (1, 2):
        p.phase(f"chunk {chunk} (prepare)")
        now.t += 1.0
        p.phase(f"chunk {chunk}", steps=True)
        now.t += 3.0
    p.phase("calibrate")
    now.t += 0.5
    p.end_epoch(0)
    p.close()
    assert p.seconds == {"chunk (prepare)": 2.0, "chunk (steps)": 6.0, "calibrate": 0.5}


def test_progress_without_a_terminal_writes_one_line_per_epoch_and_a_resumed_run_counts_what_is_left():
    now = FakeClock()
    out = io.StringIO()
    p = RunProgress(num_epochs=10, start_epoch=6, stream=out, now=now)
    for epoch in range(6, 10):
        p.begin_epoch(epoch, 3)
        for k in (1, 2, 3):
            now.t += 2.0
            p.step(k, loss=1.0)
        p.end_epoch(epoch)
        assert p.fraction() == pytest.approx((epoch - 5) / 4)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[0] == "epoch 7/10 done | loss 1 | run 25% | 0:06 elapsed, ETA 0:18" and lines[-1].endswith("0:24 elapsed, ETA 0:00")
    assert "\r" not in out.getvalue()
    assert RunProgress(3, enabled=False, stream=out).line().startswith("epoch 1/3")
    assert clock(59.6) == "1:00" and clock(3725) == "1:02:05"


# -- pictures a person reads ------------------------------------------------------------------------------
def test_gallery_rows_carry_cluster_ids_and_sizes():
    import numpy as np

    from tfcluster.training import summaries

    rng = np.random.RandomState(0)
    images = rng.randint(0, 255, size=(30, 8, 8, 1)).astype(np.uint8)
    clusters = np.repeat([0, 2], 15)  # cluster 1 is empty
    grid = summaries.cluster_gallery(images, clusters, rng.rand(30), num_clusters=3, per_cluster=4)
    # 8x8 images are enlarged 3x so a label fits: 3 rows of 24 px; the label column, then 4 cells.
    assert grid.shape == (1, 72, summaries.LABEL_WIDTH + 4 * 24, 1)
    labels, cells = grid[0, :, :summaries.LABEL_WIDTH, 0], grid[0, :, summaries.LABEL_WIDTH:, 0]
    assert all(labels[r * 24:(r + 1) * 24].max() > 0.5 for r in range(3))  # every row has its text
    assert cells[24:48].max() == 0.0 and cells[:24].max() > 0  # the empty cluster's row stays black
    # Different ids and sizes draw different labels.
    assert not np.array_equal(labels[:24], labels[48:72])


def test_circle_map_has_a_legend_of_the_classes(tmp_path):
    import numpy as np

    from tfcluster import visualize

    rng = np.random.RandomState(0)
    features = rng.dirichlet(np.ones(4), size=200)
    labels = rng.randint(0, 3, size=200)
    fig = visualize._circle_figure(features, labels, "", ["cat", "dog", "car"])
    legend = fig.axes[0].get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["cat", "dog", "car"]
    assert visualize._circle_figure(features, None, "").axes[0].get_legend() is None
    path = visualize.plot_circle(features, labels, str(tmp_path / "c.png"), class_names=["cat", "dog", "car"])
    assert os.path.getsize(path) > 1000


# -- predict on inputs unlike the training data -------------------------------------------------------------
def test_drift_statistics_flag_unlike_inputs_and_pass_alike_ones():
    import numpy as np

    from tfcluster.data import sources
    from tfcluster.export import drift

    train, test = sources.load("mnist5k?split=train"), sources.load("mnist5k?split=test")
    clusters = train.y  # any assignment: only the largest share is kept
    summary = drift.summarize(train.x, clusters, 10)
    assert summary["statistics"] == ["brightness", "contrast", "layout"] and len(summary["mean_input"]) == 784
    # Held-out images of the same kind: no warning (about 1% fall outside each range).
    assert drift.compare(summary, test.x, test.y) == []
    # 8x8 digits enlarged to 28x28: they fill the frame, so brightness and layout are off.
    digits = sources.load("digits?size=28")
    warnings = drift.compare(summary, digits.x[:200], np.zeros(200, np.int64))
    assert any("brightness" in w for w in warnings) and any("layout" in w for w in warnings), warnings
    assert any("one cluster took 100%" in w for w in warnings)
    # Too few inputs, or an export without statistics: nothing said.
    assert drift.compare(summary, digits.x[:5], np.zeros(5, np.int64)) == []
    assert drift.compare(None, digits.x, np.zeros(len(digits.x), np.int64)) == []


def test_predict_warns_when_the_inputs_look_unlike_the_training_data(tmp_path):
    import numpy as np

    from tfcluster import run
    from tfcluster.data import sources
    from tfcluster.export import use

    out = run.train(run.RunOptions(method="kmeans", dataset="mnist5k?split=train", workdir=str(tmp_path / "km"),
                                   progress=False, circle_plot=False), log=lambda m: None)
    for name, spec, expect in (("alike", "mnist5k?split=test", False), ("unlike", "digits?size=28", True)):
        path = tmp_path / f"{name}.npz"
        np.savez(path, x=sources.load(spec).x[:300])
        heard = []
        use.predict(out["export"], str(path), str(tmp_path / name), warn=heard.append)
        assert bool(heard) == expect, (name, heard)
