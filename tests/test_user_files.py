"""A user's files: what `cluster` and `predict` write, never touch, and how image files are read.

The fault sweep's findings: an input inside the output deleted the images; foreign files were
overwritten; a FIFO hung the reader; 16-bit PNGs were clipped; hostile names broke the CSV and
the web page. Each is reproduced here and must no longer happen.
"""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tfcluster.data import images
from tfcluster.errors import InputError
from tfcluster.export import report
from tfcluster.export.output_dir import MANIFEST, OutputDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bands(folder, n=30, size=24, prefix="img"):
    """n images of three kinds (a bright band left / middle / right), 8-bit grayscale PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    arrays = []
    for j in range(n):
        img = rng.randint(0, 40, (size, size)).astype(np.uint8)
        img[:, (j % 3) * 8:(j % 3 + 1) * 8] = 220
        Image.fromarray(img).save(folder / f"{prefix}{j:03d}.png")
        arrays.append(img)
    return arrays


def _tree(root):
    return sorted((str(p.relative_to(root)), p.is_symlink(), p.stat().st_size if p.is_file() else -1)
                  for p in root.rglob("*"))


# -- output directories ---------------------------------------------------------------------------------

def test_an_input_inside_the_output_is_refused_before_anything_is_written(tmp_path):
    from tfcluster import cluster

    data = tmp_path / "data"
    _bands(data / "clusters")
    before = _tree(data)
    # the fault sweep's command: `tfcluster cluster data/clusters --output=data` deleted every image
    with pytest.raises(InputError, match="is inside the output directory"):
        cluster.cluster_folder(str(data / "clusters"), str(data), 3, method="kmeans", progress=False, log=print)
    with pytest.raises(InputError, match="is inside the output directory"):  # even when told to overwrite
        cluster.cluster_folder(str(data / "clusters"), str(data), 3, method="kmeans", progress=False, overwrite=True)
    with pytest.raises(InputError, match="is inside .*the input"):
        cluster.cluster_folder(str(data / "clusters"), str(data / "clusters" / "out"), 3, method="kmeans")
    os.symlink(data / "clusters", tmp_path / "alias")  # the same folder through a link
    with pytest.raises(InputError, match="is inside"):
        cluster.cluster_folder(str(tmp_path / "alias"), str(data), 3, method="kmeans")
    assert _tree(data) == before


def test_an_output_holding_foreign_files_is_refused_and_overwrite_touches_only_tfclusters_names(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "assignments.csv").write_text("my own table")
    with pytest.raises(InputError, match=r"holds files tfcluster did not write \(assignments.csv, notes.txt\).*"
                                         "--overwrite"):
        OutputDir.claim(str(out), "cluster", inputs=[str(tmp_path / "in")])
    assert sorted(os.listdir(out)) == ["assignments.csv", "notes.txt"]  # nothing written, not even a manifest
    owned = OutputDir.claim(str(out), "cluster", inputs=[str(tmp_path / "in")], overwrite=True)
    path = owned.file("assignments.csv")
    report.write_assignments(path, ["a.png"], np.array([1]), np.array([0.5]))
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "assignments.csv").read_text().startswith("path,cluster,confidence")
    # a directory written by the other command is not taken over
    with pytest.raises(InputError, match="holds the outputs of `tfcluster cluster`"):
        OutputDir.claim(str(out), "predict", overwrite=True)
    # an unreadable manifest: tfcluster cannot tell its files from the user's, so it stops
    (out / MANIFEST).write_text("{garbled")
    with pytest.raises(InputError, match="unreadable"):
        OutputDir.claim(str(out), "cluster")


def test_a_rerun_removes_only_the_links_and_copies_it_made(tmp_path):
    photos = tmp_path / "photos"
    _bands(photos, n=6)
    files = sorted(str(p) for p in photos.iterdir())
    out = tmp_path / "out"
    owned = OutputDir.claim(str(out), "cluster", inputs=[str(photos)])
    order = [np.array([0, 3]), np.array([1, 4]), np.array([2, 5])]
    made = report.write_cluster_folders(owned, files, order)
    assert [[os.path.basename(p) for p in c] for c in made] == [["00000_img000.png", "00001_img003.png"],
                                                              ["00000_img001.png", "00001_img004.png"],
                                                              ["00000_img002.png", "00001_img005.png"]]
    # the user keeps a file of their own in a cluster folder, and replaces one of the links by a real file
    (out / "clusters" / "cluster_00" / "keep me.txt").write_text("mine")
    replaced = out / "clusters" / "cluster_01" / "00000_img001.png"
    replaced.unlink()
    replaced.write_bytes(b"my edited picture")
    owned = OutputDir.claim(str(out), "cluster", inputs=[str(photos)])
    with pytest.raises(InputError, match="00000_img001.png exists and tfcluster did not write it"):
        report.write_cluster_folders(owned, files, order)  # it would land on the user's file
    assert (out / "clusters" / "cluster_00" / "keep me.txt").read_text() == "mine"
    assert replaced.read_bytes() == b"my edited picture"
    # with two clusters instead of three the third folder goes, the user's files stay
    replaced.unlink()
    made = report.write_cluster_folders(owned, files, [np.array([0, 2, 4]), np.array([1, 3, 5])], copy=True)
    assert sorted(os.listdir(out / "clusters")) == ["cluster_00", "cluster_01"]
    assert sorted(os.listdir(out / "clusters" / "cluster_00")) == ["00000_img000.png", "00001_img002.png",
                                                                   "00002_img004.png", "keep me.txt"]
    assert all(os.path.isfile(p) and not os.path.islink(p) for c in made for p in c)
    assert sorted(os.listdir(photos)) == [os.path.basename(f) for f in files]  # the originals untouched


def test_a_user_folder_named_clusters_is_never_deleted_nor_written_through_a_link(tmp_path):
    photos = tmp_path / "photos"
    _bands(photos, n=3)
    files = sorted(str(p) for p in photos.iterdir())
    out = tmp_path / "out"
    (out / "clusters").mkdir(parents=True)
    (out / "clusters" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(InputError, match=r"holds files tfcluster did not write \(clusters\)"):
        OutputDir.claim(str(out), "cluster", inputs=[str(photos)])
    owned = OutputDir.claim(str(out), "cluster", inputs=[str(photos)], overwrite=True)
    report.write_cluster_folders(owned, files, [np.array([0]), np.array([1, 2])])
    report.write_cluster_folders(owned, files, [np.array([0, 1]), np.array([2])])  # a re-run clears its own
    assert (out / "clusters" / "holiday.jpg").read_bytes() == b"precious"
    assert sorted(os.listdir(out / "clusters")) == ["cluster_00", "cluster_01", "holiday.jpg"]
    # OUT/clusters made a link to elsewhere: nothing is deleted or written through it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "cluster_00").mkdir()
    (elsewhere / "cluster_00" / "00000_img000.png").write_bytes(b"not tfcluster's")
    target = out / "clusters"
    os.rename(target, tmp_path / "moved")
    os.symlink(elsewhere, target)
    with pytest.raises(InputError, match="is a symbolic link"):
        report.write_cluster_folders(owned, files, [np.array([0]), np.array([1, 2])])
    assert (elsewhere / "cluster_00" / "00000_img000.png").read_bytes() == b"not tfcluster's"


def test_predict_checks_its_paths_lists_what_it_skips_and_never_reads_its_own_copies(tmp_path):
    from tfcluster import run
    from tfcluster.export import use

    data = tmp_path / "data"
    _bands(data, n=30)
    (data / "broken.png").write_bytes(b"\x89PNG truncated")
    (data / "empty.png").write_bytes(b"")
    train = run.train(run.RunOptions(method="kmeans", dataset=f"folder:{data}?labels=none",
                                     workdir=str(tmp_path / "km"), num_clusters=3, progress=False),
                      log=lambda m: None)
    before = _tree(data)
    with pytest.raises(InputError, match="is inside"):  # the fault sweep's `--input=D --output=D`
        use.predict(train["export"], str(data), str(data), copy_images=True)
    with pytest.raises(InputError, match="is inside"):
        use.predict(train["export"], str(data), str(data / "out"), copy_images=True)
    with pytest.raises(InputError, match="is inside"):
        use.predict(train["export"], str(data), str(tmp_path), copy_images=True)
    with pytest.raises(InputError, match="is inside"):  # nor into the model's directory
        use.predict(str(tmp_path / "km" / "export"), str(data), str(tmp_path / "km" / "export" / "mine"))
    assert _tree(data) == before
    out = tmp_path / "pred"
    for _ in range(2):  # a re-run replaces its own outputs: 30 rows, not 60
        result = use.predict(train["export"], str(data), str(out), copy_images=True)
        rows = list(csv.DictReader(open(out / "assignments.csv", encoding="utf-8")))
        assert len(rows) == 30 and sum(result.cluster_sizes) == 30
        copies = [f for d in os.listdir(out) if d.startswith("cluster_") for f in os.listdir(out / d)]
        assert len(copies) == 30
    assert result.skipped == 2 and result.skipped_reasons == {"empty file": 1, "not an image Pillow can decode": 1}
    skipped = list(csv.DictReader(open(out / "unreadable.csv", encoding="utf-8")))
    assert sorted(r["path"] for r in skipped) == ["broken.png", "empty.png"]
    assert all(r["reason"] for r in skipped)
    assert _tree(data) == before


# -- reading image files ------------------------------------------------------------------------------------

READ_FIFO = """
import sys
from tfcluster.data import images
read = images.read_images(sorted(images.list_image_files(sys.argv[1])[0]))
print(len(read.kept), read.skipped)
"""


def test_a_fifo_named_like_an_image_is_skipped_not_waited_on(tmp_path):
    _bands(tmp_path / "imgs", n=3)
    os.mkfifo(tmp_path / "imgs" / "x.png")
    proc = subprocess.run([sys.executable, "-c", READ_FIFO, str(tmp_path / "imgs")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"3 [('{tmp_path / 'imgs' / 'x.png'}', 'not a regular file (FIFO)')]"


def test_a_file_that_takes_too_long_is_skipped_and_the_rest_read(tmp_path):
    import threading

    _bands(tmp_path, n=6)
    files = sorted(str(p) for p in tmp_path.glob("*.png"))
    hang = threading.Event()

    def read(path, size, channels):
        if path.endswith("img003.png"):
            hang.wait(30)  # a hung network mount
        return images.read_file(path, size, channels)

    result = images.read_images(files, workers=2, timeout=0.5, read=read)
    hang.set()
    assert result.kept == [0, 1, 2, 4, 5]
    assert result.skipped == [(files[3], "timed out (more than 0.5 s to read)")]


def test_truncated_empty_and_oversized_files_are_skipped_with_their_reasons(tmp_path, monkeypatch):
    _bands(tmp_path, n=3)
    whole = (tmp_path / "img000.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "wide.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)  # 40 x 40 is more than twice that: a "bomb"
    files = sorted(str(p) for p in tmp_path.glob("*.png"))
    result = images.read_images(files, size=(24, 24), channels=1)
    assert dict((os.path.basename(p), r) for p, r in result.skipped) == {
        "cut.png": "truncated or corrupt (OSError)", "empty.png": "empty file",
        "wide.png": "too many pixels (Pillow's decompression-bomb limit)"}
    assert result.x.shape == (3, 24, 24, 1)


def _formats(tmp_path, original: np.ndarray):
    """The same picture (uint8 [H, W, 3]) saved in other pixel formats: name -> path."""
    h, w, _ = original.shape
    paths = {}
    rgb = Image.fromarray(original)
    gray = np.asarray(rgb.convert("L"))
    paths["gray16"] = tmp_path / "gray16.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(paths["gray16"])  # mode I;16
    paths["rgba_opaque"] = tmp_path / "rgba.png"
    rgb.convert("RGBA").save(paths["rgba_opaque"])
    paths["palette"] = tmp_path / "palette.png"
    few = (original // 64) * 64  # at most 64 colours: a palette holds them exactly
    rgb_few = Image.fromarray(few)
    rgb_few.convert("P", palette=Image.ADAPTIVE, colors=64).save(paths["palette"])
    paths["exif"] = tmp_path / "exif.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rgb.transpose(Image.Transpose.ROTATE_90).save(paths["exif"], exif=exif)
    return paths, gray, few


def test_images_of_other_pixel_formats_read_as_their_8_bit_originals(tmp_path):
    rng = np.random.RandomState(1)
    original = rng.randint(0, 256, (12, 16, 3)).astype(np.uint8)
    paths, gray, few = _formats(tmp_path, original)
    read = lambda name, channels=None: images.read_file(str(paths[name]), None, channels)  # noqa: E731
    assert Image.open(paths["gray16"]).mode == "I;16"
    np.testing.assert_array_equal(read("gray16")[..., 0], gray)  # scaled, not clipped (was nearly all 255)
    np.testing.assert_array_equal(read("rgba_opaque"), original)
    np.testing.assert_array_equal(read("palette"), few)
    np.testing.assert_array_equal(read("exif"), original)  # turned upright by its EXIF orientation
    np.testing.assert_array_equal(read("gray16", 3), np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(read("rgba_opaque", 1)[..., 0], gray)


def _png_rgb16(path, rgb16: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow writes none): uint16 [H, W, 3], big-endian rows, no filter."""
    import struct
    import zlib

    h, w, _ = rgb16.shape
    rows = b"".join(b"\x00" + rgb16[r].astype(">u2").tobytes() for r in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_rgb_pngs_and_16_bit_tiffs_read_as_their_8_bit_originals(tmp_path):
    original = np.random.RandomState(2).randint(0, 256, (9, 7, 3)).astype(np.uint8)
    _png_rgb16(tmp_path / "rgb16.png", original.astype(np.uint16) * 257)
    np.testing.assert_array_equal(images.read_file(str(tmp_path / "rgb16.png"), None, None), original)
    gray = original[..., 0]
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.tif")
    np.testing.assert_array_equal(images.read_file(str(tmp_path / "gray16.tif"), None, None)[..., 0], gray)


def test_transparent_pixels_are_composited_over_white():
    import io

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 100, 0, 255)  # opaque
    rgba[0, 1] = (200, 100, 0, 0)  # fully transparent: white, whatever colour it holds
    rgba[1, 0] = (0, 0, 0, 128)  # half: 0 * 128/255 + 255 * 127/255
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    x = images.decode(buf.getvalue(), None, 3)
    assert x[0, 0].tolist() == [200, 100, 0] and x[0, 1].tolist() == [255, 255, 255]
    assert abs(int(x[1, 0, 0]) - round(255 * 127 / 255)) <= 1


def test_16_bit_pngs_cluster_as_their_8_bit_originals(tmp_path):
    from tfcluster import cluster

    eight, sixteen = tmp_path / "eight", tmp_path / "sixteen"
    arrays = _bands(eight, n=30)
    sixteen.mkdir()
    for j, img in enumerate(arrays):
        Image.fromarray(img.astype(np.uint16) * 257).save(sixteen / f"img{j:03d}.png")
    got = {}
    for name, folder in (("eight", eight), ("sixteen", sixteen)):
        summary = cluster.cluster_folder(str(folder), str(tmp_path / f"out_{name}"), 3, method="kmeans", size="24",
                                     progress=False, log=lambda m: None)
        got[name] = open(summary["assignments"], encoding="utf-8").read()
    assert got["eight"] == got["sixteen"]


def test_symlink_loops_and_repeated_links_are_read_once(tmp_path):
    root = tmp_path / "photos"
    _bands(root / "a", n=3, prefix="a")
    _bands(root / "b", n=2, prefix="b")
    os.symlink("..", root / "a" / "loop")  # a -> photos -> a -> ...
    os.symlink(root / "a", root / "b" / "also_a")  # a second way to a
    os.symlink(root, root / "self")
    files, labels, classes = images.list_image_files(str(root))
    assert sorted(os.path.basename(f) for f in files) == ["a000.png", "a001.png", "a002.png", "b000.png",
                                                          "b001.png"]
    assert classes == ("a", "b") and labels == [0, 0, 0, 1, 1]


# -- hostile names in what a person opens ------------------------------------------------------------------------

def test_csv_cells_never_run_as_formulas_and_web_links_are_url_encoded(tmp_path):
    path = tmp_path / "a.csv"
    report.write_assignments(str(path), ["=HYPERLINK(\"x\")", "+1.png", "plain.png"], np.array([0, 1, 0]),
                             np.array([0.5, 0.6, 0.7]))
    rows = list(csv.reader(open(path, encoding="utf-8")))
    assert [r[0] for r in rows[1:]] == ["'=HYPERLINK(\"x\")", "'+1.png", "plain.png"]
    page = tmp_path / "index.html"
    report.index_html(str(page), [[str(tmp_path / "clusters" / "cluster_00" / "00000_a#b%c?d.png")]],
                      [["a#b%c?d.png"]], "t", "s")
    text = page.read_text(encoding="utf-8")
    assert "href='clusters/cluster_00/00000_a%23b%25c%3Fd.png'" in text and "a#b%c?d.png</a>" in text


def test_a_manifest_never_leads_outside_the_directory_nor_through_a_link(tmp_path):
    import json

    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    stamp = os.lstat(outside)
    (out / MANIFEST).write_text(json.dumps({"command": "cluster", "entries": {"../outside.txt": {
        "kind": "copy", "size": stamp.st_size, "mtime_ns": stamp.st_mtime_ns}}}))
    with pytest.raises(InputError, match="unreadable"):  # a hand-made manifest pointing outside
        OutputDir.claim(str(out), "cluster")
    owned = OutputDir.claim(str(out), "cluster", overwrite=True)
    owned.clear("..")
    assert outside.read_text() == "keep"
    # a cluster folder tfcluster made, swapped for a link to the user's folder: nothing there is deleted
    photos = tmp_path / "photos"
    _bands(photos, n=2)
    files = sorted(str(p) for p in photos.iterdir())
    owned = OutputDir.claim(str(tmp_path / "out2"), "cluster", inputs=[str(photos)])
    report.write_cluster_folders(owned, files, [np.array([0]), np.array([1])], copy=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "00000_img000.png").write_bytes((tmp_path / "out2" / "clusters" / "cluster_00" / "00000_img000.png")
                                            .read_bytes())
    os.utime(mine / "00000_img000.png", ns=(os.stat(tmp_path / "out2" / "clusters" / "cluster_00" /
                                                    "00000_img000.png").st_mtime_ns,) * 2)
    for f in (tmp_path / "out2" / "clusters" / "cluster_00").iterdir():
        f.unlink()
    (tmp_path / "out2" / "clusters" / "cluster_00").rmdir()
    os.symlink(mine, tmp_path / "out2" / "clusters" / "cluster_00")
    kept = owned.clear("clusters")
    assert "clusters/cluster_00/00000_img000.png" in kept and (mine / "00000_img000.png").exists()
