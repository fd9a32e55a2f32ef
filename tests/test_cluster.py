"""`tfcluster cluster DIR`: one command from a folder of images to clusters a person can look at."""

import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
SUBDIRS = ["photos", os.path.join("scans", "2019"), os.path.join("misc", "ünïcödé dir")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """90 images of three kinds (bright band left / middle / right) in nested folders, mixed sizes
    and modes, non-ASCII names, and three corrupt files."""
    root = tmp_path_factory.mktemp("images") / "my images"
    rng = np.random.RandomState(0)
    for j in range(90):
        kind = j % 3
        img = rng.randint(0, 40, (24, 24)).astype(np.uint8)
        img[:, kind * 8:(kind + 1) * 8] = 220
        im = Image.fromarray(img)
        if j % 4 == 1:
            im = im.resize((30, 30))
        if j % 5 == 2:
            im = im.convert("RGB")
        sub = root / SUBDIRS[j % 3]
        sub.mkdir(parents=True, exist_ok=True)
        im.save(sub / f"{'数字' if j % 7 == 0 else 'img'} {j:03d}.png")
    for k, sub in enumerate(SUBDIRS):
        (root / sub / f"broken_{k}.png").write_bytes(b"\x89PNG truncated")
    return root


def _cluster(*args):
    exe = shutil.which("tfcluster")
    assert exe, "no `tfcluster` command on PATH: install the project (pip install -e .)"
    return subprocess.run([exe, "cluster", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600)


def test_cluster_a_folder_in_one_command(folder, tmp_path):
    before = sorted(str(p) for p in folder.rglob("*"))
    out = tmp_path / "out"
    proc = _cluster(folder, "--num_clusters=3", f"--output={out}", "--method=kmeans", "--size=24",
                    "--progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(out / "summary.json", encoding="utf-8"))
    assert (summary["images"], summary["unreadable"], summary["num_clusters"]) == (90, 3, 3)
    sizes = " ".join(map(str, sorted(summary["cluster_sizes"], reverse=True)))
    assert "90 images in 3 clusters by kmeans" in proc.stdout and f"largest first: {sizes}\n" in proc.stdout
    # sub-folders are where images are found, not classes: nothing is scored against them unless asked
    assert "ACC" not in proc.stdout + proc.stderr and "scores_against_subfolders" not in summary
    assert json.load(open(out / "run" / "metrics.json", encoding="utf-8"))["acc"] is None
    assert f"assignments  {out / 'assignments.csv'}" in proc.stdout
    rows = list(csv.DictReader(open(out / "assignments.csv", encoding="utf-8")))
    expected = sorted(os.path.relpath(p, folder) for p in map(str, folder.rglob("img*.png"))) + \
        sorted(os.path.relpath(p, folder) for p in map(str, folder.rglob("数字*.png")))
    assert sorted(r["path"] for r in rows) == sorted(expected)
    assert all(0 < float(r["confidence"]) <= 1 for r in rows)
    # the three kinds of image are three clusters
    kind = {r["path"]: int(os.path.basename(r["path"]).split()[-1][:3]) % 3 for r in rows}
    by_cluster = {}
    for r in rows:
        by_cluster.setdefault(int(r["cluster"]), set()).add(kind[r["path"]])
    assert sorted(map(len, by_cluster.values())) == [1, 1, 1]
    skipped = list(csv.DictReader(open(out / "unreadable.csv", encoding="utf-8")))
    assert sorted(r["path"] for r in skipped) == sorted(os.path.join(sub, f"broken_{k}.png")
                                                        for k, sub in enumerate(SUBDIRS))
    assert {r["reason"] for r in skipped} == {"not an image Pillow can decode"}
    assert summary["unreadable_reasons"] == {"not an image Pillow can decode": 3}
    assert "3 unreadable files skipped (3 not an image Pillow can decode)" in proc.stdout
    # one folder per cluster, of links to the originals, most confident first
    folders = sorted(os.listdir(out / "clusters"))
    assert folders == ["cluster_00", "cluster_01", "cluster_02"]
    linked = {}
    for c, name in enumerate(folders):
        for f in sorted(os.listdir(out / "clusters" / name)):
            path = out / "clusters" / name / f
            assert path.is_symlink() and path.resolve().is_file()
            linked[os.path.relpath(path.resolve(), folder.resolve())] = c
    assert linked == {r["path"]: int(r["cluster"]) for r in rows}
    sheet = Image.open(out / "overview.png")
    assert sheet.size[1] >= 3 * 64
    page = open(out / "index.html", encoding="utf-8").read()
    assert all(f"cluster {c:02d} (" in page for c in range(3)) and "ünïcödé" in page
    assert os.path.isdir(out / "run" / "export" / "1")
    assert sorted(str(p) for p in folder.rglob("*")) == before  # nothing written into the input folder
    # re-running resumes the finished run and rewrites the same outputs
    again = _cluster(folder, "--num_clusters=3", f"--output={out}", "--method=kmeans", "--size=24",
                     "--progress=false")
    assert again.returncode == 0 and "resumed from" in again.stdout + again.stderr
    assert list(csv.DictReader(open(out / "assignments.csv", encoding="utf-8"))) == rows


def test_cluster_scores_against_subfolders_only_when_asked(folder, tmp_path):
    out = tmp_path / "scored"
    proc = _cluster(folder, "--num_clusters=3", f"--output={out}", "--method=kmeans", "--size=24",
                    "--progress=false", "--labels_from_subfolders")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(out / "summary.json", encoding="utf-8"))
    # the fixture's three kinds of image sit in its three top-level sub-folders, and k-means separates them
    assert summary["scores_against_subfolders"] == {"acc": 1.0, "nmi": 1.0, "ari": 1.0}
    assert "against the sub-folders' names: ACC 1.0000 NMI 1.0000 ARI 1.0000" in proc.stdout
    assert json.load(open(out / "run" / "metrics.json", encoding="utf-8"))["acc"] == 1.0


def test_cluster_refuses_an_output_inside_the_folder_and_bad_arguments(folder, tmp_path):
    proc = _cluster(folder, "--num_clusters=3", f"--output={folder / 'out'}", "--method=kmeans")
    assert proc.returncode != 0 and "is inside (or is) the input" in proc.stderr
    assert not (folder / "out").exists()
    proc = _cluster(tmp_path / "nope", "--num_clusters=3", f"--output={tmp_path / 'o'}")
    assert proc.returncode != 0 and "image folder not found" in proc.stderr
    proc = _cluster(folder, f"--output={tmp_path / 'o'}")
    assert proc.returncode != 0 and "--num_clusters" in proc.stderr


def test_cluster_with_num_clusters_auto_chooses_k_first(folder, tmp_path):
    out = tmp_path / "auto"
    proc = _cluster(folder, "--num_clusters=auto", "--k_range=2:6", "--k_features=pixels", f"--output={out}",
                    "--method=kmeans", "--size=24", "--progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(out / "summary.json", encoding="utf-8"))
    chosen = json.load(open(out / "choose_k" / "choose_k.json", encoding="utf-8"))
    assert chosen["k_range"] == [2, 3, 4, 5, 6] and chosen["features"] == "pixels"
    assert summary["num_clusters"] == chosen["suggested_k"] == 3  # the folder holds three kinds of image
    assert summary["choose_k"]["suggested_k"] == 3 and len(os.listdir(out / "clusters")) == 3
    assert "--num_clusters=auto: K = 3" in proc.stdout + proc.stderr
    bad = _cluster(folder, "--num_clusters=auto", "--k_range=1:4", f"--output={tmp_path / 'b'}")
    assert bad.returncode != 0 and "K range" in bad.stderr
    bad = _cluster(folder, "--num_clusters=three", f"--output={tmp_path / 'b'}")
    assert bad.returncode != 0 and "'auto'" in bad.stderr


def test_a_folder_smaller_than_a_training_batch(folder, tmp_path):
    """k-means fits the whole set at once: a folder of fewer images than a training batch is fine; the
    trained methods refuse it with an error that names the cause, and train with the smaller batch it suggests."""
    from tfcluster import cluster

    small = tmp_path / "few"
    small.mkdir()
    for path in sorted((folder / "photos").glob("img*.png"))[:12]:
        shutil.copy(path, small / path.name)
    summary = cluster.cluster_folder(str(small), str(tmp_path / "out"), 2, method="kmeans", size="24",
                                 progress=False, log=lambda s: None)
    assert summary["images"] == 12 and sum(summary["cluster_sizes"]) == 12
    assert len(summary["cluster_sizes"]) == 2 and min(summary["cluster_sizes"]) > 0
    from tfcluster.errors import InputError

    with pytest.raises(InputError, match=r"batch_size=64 is larger than the data \(12 samples\)"):  # DAC's cpu
        cluster.cluster_folder(str(small), str(tmp_path / "out_dac"), 2, method="dac", size="24", progress=False,
                           log=lambda s: None)
    # GATCluster, cluster's default method: its cpu preset resolves on data smaller than a batch, and the
    # run refuses it with the same clear error (it used to divide by zero)
    with pytest.raises(InputError, match=r"batch_size=32 is larger than the data \(12 samples\)"):
        cluster.cluster_folder(str(small), str(tmp_path / "out_gat"), 2, size="24", progress=False, log=lambda s: None)
    # and the error's advice works: a smaller batch (the preset's large batch is the whole folder)
    summary = cluster.cluster_folder(str(small), str(tmp_path / "out_gat4"), 2, size="28", progress=False,
                                 overrides=("batch_size=4", "epochs=1", "width=0.125"), log=lambda s: None)
    assert summary["images"] == 12 and sum(summary["cluster_sizes"]) == 12
