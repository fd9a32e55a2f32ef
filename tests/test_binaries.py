"""The absl binaries end to end on tiny data, and their errors on bad input."""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _command(script):
    """experiments/<name>.py (the aliases), or the installed `tfcluster` console command for "tfcluster ..."."""
    if script.startswith("tfcluster"):
        exe = shutil.which("tfcluster")
        assert exe, "no `tfcluster` command on PATH: install the project (pip install -e .)"
        return [exe, *script.split()[1:]]
    return [sys.executable, os.path.join(ROOT, "experiments", script)]


def _run(script, *args, ok=True):
    proc = subprocess.run([*_command(script), *args], capture_output=True, text=True, env=ENV, timeout=600)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.randint(0, 30, size=(60, 12, 12, 1)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, :, label * 4:(label + 1) * 4] = 230  # a bright vertical band per class
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x=x, y=y)
    return str(path), x, y


@pytest.mark.slow
def test_kmeans_train_evaluate_predict(tiny_npz, tmp_path):
    path, x, y = tiny_npz
    workdir = str(tmp_path / "km")
    proc = _run("tfcluster train", "--method=kmeans", f"--dataset=npz:{path}", f"--workdir={workdir}",
                "--progress=false")
    # The end summary: scores rounded alike, the cluster sizes, where the outputs are.
    assert "ACC 1.0000 | NMI 1.0000 | ARI 1.0000" in proc.stdout, proc.stdout
    assert "3 clusters (0 empty), sizes largest first: 20 20 20" in proc.stdout
    for where in ("metrics.json", os.path.join(workdir, "export", "1"), "tensorboard --logdir"):
        assert where in proc.stdout, where
    # TensorFlow's C++ start-up lines are kept off stderr (ENV sets TF_CPP_MIN_LOG_LEVEL, which hides none).
    for line in ("oneDNN custom operations", "cuda drivers", "All log messages before absl"):
        assert line not in proc.stderr, proc.stderr
    saved = json.load(open(os.path.join(workdir, "metrics.json")))
    assert saved["acc"] == 1.0 and saved["num_samples"] == 60 and saved["method"] == "kmeans"
    assert saved["cluster_sizes"] == [20, 20, 20]
    for key in ("acc", "nmi", "ari", "num_samples", "method", "dataset", "seed", "wall_seconds"):
        assert key in saved
    assert saved["label_uniformity_index"] == 1.0  # 20 images of each of the 3 classes
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["method"] == "kmeans" and config["config"]["n_init"] == 10
    export = os.path.join(workdir, "export")
    evaluated = json.loads(_run("tfcluster evaluate", f"--model={export}", f"--dataset=npz:{path}").stdout)
    assert evaluated["acc"] == 1.0 and evaluated["num_samples"] == 60

    folder = tmp_path / "imgs"
    os.makedirs(folder)
    for i in (0, 25, 59):
        Image.fromarray(x[i, ..., 0]).resize((24, 24)).save(folder / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"nope")
    outdir = tmp_path / "pred"
    _run("tfcluster predict", f"--model={export}", f"--input={folder}", f"--output={outdir}", "--copy_images")
    rows = list(csv.DictReader(open(outdir / "assignments.csv")))
    assert [os.path.basename(r["item"]) for r in rows] == ["img0.png", "img25.png", "img59.png"]
    assert len({r["cluster"] for r in rows}) == 3 and all(0 < float(r["confidence"]) <= 1 for r in rows)
    copied = sorted(f for d in os.listdir(outdir) if d.startswith("cluster_") for f in os.listdir(outdir / d))
    assert len(copied) == 3


def test_console_command_help_and_errors():
    """`tfcluster --help` and `tfcluster SUBCOMMAND --help` exit 0; mistakes exit non-zero and say why."""
    top = _run("tfcluster", "--help")
    assert all(name in top.stdout for name in ("train", "evaluate", "predict", "transfer"))
    train = _run("tfcluster train", "--help")
    for listed in ("--method", "gatcluster", "precise_gan", "--preset", "fashion_mnist", "folder:PATH", "--set"):
        assert listed in train.stdout, listed
    assert "--model" in _run("tfcluster predict", "-h").stdout
    for args, message in ((["fit"], "unknown subcommand 'fit'"), ([], "usage: tfcluster")):
        proc = _run("tfcluster", *args, ok=False)
        assert proc.returncode == 2 and message in proc.stdout + proc.stderr
    proc = _run("tfcluster predict", "--input=x", "--output=y", ok=False)
    assert proc.returncode != 0 and "--model" in proc.stderr


def test_dac_binary_on_two_replicas(tiny_npz, tmp_path):
    path, _, _ = tiny_npz
    workdir = str(tmp_path / "dac")
    _run("train.py", "--method=dac", f"--dataset=npz:{path}", f"--workdir={workdir}", "--cpu_replicas=2",
         "--set=epochs=1", "--set=width=0.125", "--set=batch_size=16", "--progress=false", "--precision=float32")
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["replicas"] == 2 and config["config"]["epochs"] == 1
    assert os.path.exists(os.path.join(workdir, "export", "1", "saved_model.pb"))
    assert os.path.exists(os.path.join(workdir, "circle_map.png"))


def _free_ports(count):
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run_workers(args, ports, timeout=600):
    """Runs train.py as every worker of a localhost cluster (one process each, one CPU replica each)."""
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", "train.py"), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**ENV, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                                   "task": {"type": "worker", "index": i}})})
             for i in range(len(ports))]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            p.kill()
    for code, out, err in outs:
        assert code == 0, f"a worker failed:\n{out[-3000:]}\n{err[-3000:]}"
    return outs


@pytest.mark.slow
def test_dac_binary_on_two_workers_equals_two_replicas(tiny_npz, tmp_path):
    """--strategy=multi_worker: two worker processes (one replica each) train what one process
    with two replicas trains; the chief writes the work directory, the other worker its own
    subdirectory, and a second start resumes both from the chief's checkpoint."""
    path, _, _ = tiny_npz
    common = ["--method=dac", f"--dataset=npz:{path}", "--set=epochs=2", "--set=width=0.125", "--set=batch_size=16",
              "--progress=false", "--circle_plot=false", "--precision=float32"]
    reference = str(tmp_path / "mirrored")
    _run("train.py", *common, f"--workdir={reference}", "--cpu_replicas=2")
    workdir = str(tmp_path / "workers")
    args = [*common, f"--workdir={workdir}", "--strategy=multi_worker"]
    _run_workers(args, _free_ports(2))
    other = os.path.join(workdir, "workers", "worker_1")
    for d in (workdir, other):
        config = json.load(open(os.path.join(d, "config.json")))
        assert config["strategy"] == "multi_worker" and config["replicas"] == 2
        assert os.path.exists(os.path.join(d, "export", "1", "saved_model.pb")), d
    # One writer per directory: the chief's holds nothing but its own files and the workers' subdirectory.
    assert sorted(os.listdir(os.path.join(workdir, "workers"))) == ["worker_1"]
    expected = np.load(os.path.join(reference, "probabilities.npy"))
    for d in (workdir, other):
        np.testing.assert_allclose(np.load(os.path.join(d, "probabilities.npy")), expected, atol=1e-4)
    steps = json.load(open(os.path.join(workdir, "metrics.json")))["steps"]
    assert steps == json.load(open(os.path.join(reference, "metrics.json")))["steps"] > 0
    # Restarted, every worker resumes from the chief's last checkpoint and has nothing left to train.
    _run_workers(args, _free_ports(2))
    chief_checkpoints = os.path.join(workdir, "checkpoints")
    for d in (workdir, other):
        metrics = json.load(open(os.path.join(d, "metrics.json")))
        assert os.path.dirname(metrics["resumed_from"]) == chief_checkpoints and metrics["steps"] == steps, d


@pytest.mark.parametrize("args,message", [
    (["--method=magic"], "unknown method 'magic'"),
    (["--method=precise_gan"], "square images of 28x28, 16x16"),
    (["--dataset=nope"], "unknown dataset 'nope'"),
    (["--preset=huge"], "unknown preset 'huge'"),
    (["--num_clusters=1"], "at least 2"),
    (["--num_clusters=61"], "larger than the data"),
    (["--set=no_such_field=3"], "unknown config field"),
    (["--set=epochs=many"], "bad value for 'epochs'"),
])
def test_train_bad_input_errors(tiny_npz, tmp_path, args, message):
    path, _, _ = tiny_npz
    base = ["--method=kmeans", f"--dataset=npz:{path}", f"--workdir={tmp_path}"]
    proc = _run("train.py", *base, *args, ok=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout


@pytest.mark.slow
def test_evaluate_and_predict_bad_input(tiny_npz, tmp_path):
    proc = _run("evaluate.py", f"--model={tmp_path}", "--dataset=digits", ok=False)
    assert proc.returncode != 0 and "not a SavedModel" in proc.stderr
    path, _, _ = tiny_npz
    workdir = str(tmp_path / "km")
    _run("train.py", "--method=kmeans", f"--dataset=npz:{path}", f"--workdir={workdir}", "--progress=false")
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, x=np.zeros((4, 12, 12, 3), np.uint8))
    proc = _run("predict.py", f"--model={workdir}/export", f"--input={rgb}", f"--output={tmp_path}/o", ok=False)
    assert proc.returncode != 0 and "wrong input channels" in proc.stderr
    empty = tmp_path / "empty"
    os.makedirs(empty)
    proc = _run("predict.py", f"--model={workdir}/export", f"--input={empty}", f"--output={tmp_path}/o", ok=False)
    assert proc.returncode != 0 and "holds no image files" in proc.stderr


@pytest.mark.slow
def test_dccm_train_then_transfer_evaluation(tmp_path):
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(2), 40)
    x = rng.randint(0, 30, size=(80, 28, 28, 1)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, 4:24, 4 + label * 12:12 + label * 12] = 230  # a bright band, left or right
    data = tmp_path / "bands.npz"
    np.savez(data, x=x[::2], y=y[::2], x_test=x[1::2], y_test=y[1::2])
    workdir = str(tmp_path / "dccm")
    _run("train.py", "--method=dccm", f"--dataset=npz:{data}", f"--workdir={workdir}", "--progress=false",
         "--set=epochs=1", "--set=batch_size=16")
    out = _run("transfer.py", f"--model={workdir}/export", f"--dataset=npz:{data}", "--max_iter=20").stdout
    result = json.loads(out[out.index("{"):])
    assert (result["train_samples"], result["test_samples"], result["method"]) == (40, 40, "dccm")
    assert 0.0 <= result["conv_features_test_accuracy"] <= 1.0 and "fc_features_test_accuracy" in result
