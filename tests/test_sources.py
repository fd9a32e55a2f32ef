import gzip
import os
import struct

import numpy as np
import pytest
from PIL import Image

from tfcluster.data import sources
from tfcluster.errors import InputError


def test_offline_sources_shapes_and_protocol():
    digits = sources.load("digits")
    assert digits.x.shape == (1797, 8, 8, 1) and digits.x.dtype == np.uint8
    assert digits.x.max() == 255 and digits.info.num_classes == 10 and digits.info.num_samples == 1797
    m = sources.load("mnist5k")
    assert m.x.shape == (5000, 28, 28, 1) and set(np.unique(m.y)) == set(range(10))
    train, test = sources.load("mnist5k?split=train"), sources.load("mnist5k?split=test")
    assert len(train) + len(test) == 5000
    with pytest.raises(InputError, match="split must be"):
        sources.load("mnist5k?split=valid")


def test_dataset_yields_uint8_images_and_labels():
    src = sources.load("digits")
    x, y = next(iter(src.as_dataset()))
    assert x.dtype.name == "uint8" and x.shape == (8, 8, 1) and y.dtype.name == "int64"


def test_unknown_dataset_and_bad_option():
    with pytest.raises(InputError, match="unknown dataset"):
        sources.load("imagenet_forever")
    with pytest.raises(InputError, match="bad option"):
        sources.load("digits?colour=blue")
    # The same mistakes, caught from the spec alone (what the binaries check before TensorFlow starts).
    with pytest.raises(InputError, match="unknown dataset 'mnist5': .*did you mean 'mnist5k'|did you mean 'mnist5k'"):
        sources.check_spec("mnist5")
    with pytest.raises(InputError, match="takes no option 'colour'; options: size, split"):
        sources.check_spec("digits?colour=blue")
    with pytest.raises(InputError, match="split must be"):
        sources.check_spec("digits?split=valid")
    for spec in ("digits", "mnist5k?split=test&size=32", "gaussians8?n=100&std=0.1", "folder:anything?size=8&channels=1",
                 "class_reduced?steps=2&base=digits"):
        sources.check_spec(spec)


def test_size_resizes_every_image_source():
    digits = sources.load("digits")
    big = sources.load("digits?size=28x28")
    assert big.x.shape == (1797, 28, 28, 1) and big.x.dtype == np.uint8
    np.testing.assert_array_equal(big.y, digits.y)
    # Bilinear: a constant image stays constant; the mean brightness is about kept.
    assert abs(big.x.astype(float).mean() - digits.x.astype(float).mean()) < 3.0
    small = sources.load("mnist5k?size=16&split=test")
    assert small.x.shape == (1000, 16, 16, 1) and small.info.image_shape == (16, 16, 1)
    rgb = sources.load("colored_mnist?size=20x24")
    assert rgb.x.shape[1:] == (20, 24, 3)
    with pytest.raises(InputError, match="size= resizes images"):
        sources.load("gaussians8?n=100&size=4")
    for bad in ("abc", "0x8", "-3"):
        with pytest.raises(InputError, match="size must be H or HxW"):
            sources.load(f"digits?size={bad}")


def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path):
    rng = np.random.RandomState(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(str(tmp_path / f"{prefix}-images-idx3-ubyte.gz"), rng.randint(0, 255, (n, 28, 28)))
        _write_idx(str(tmp_path / f"{prefix}-labels-idx1-ubyte.gz"), np.arange(n) % 10)
    src = sources.load(f"fashion_mnist?dir={tmp_path}")
    assert src.x.shape == (10, 28, 28, 1) and src.y.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert len(sources.load(f"fashion_mnist?dir={tmp_path}&split=test")) == 4


def test_truncated_idx_is_an_error(tmp_path):
    path = str(tmp_path / "bad.gz")
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">BBBBII", 0, 0, 8, 2, 5, 5) + b"\x00" * 7)
    with pytest.raises(InputError, match="truncated"):
        sources.read_idx(path)


def test_tfds_path_on_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        src = sources.load("cifar100_20")
    assert src.x.shape == (24, 32, 32, 3) and src.x.dtype == np.uint8
    assert src.info.num_classes == 20 and src.y.max() < 20
    with tfds.testing.mock_data(num_examples=5):
        assert len(sources.load("cifar10?split=test")) == 5


def test_tensorflow_datasets_finds_what_it_imports_when_building():
    """tensorflow-datasets 4.9 imports importlib_resources lazily, in the builder, without declaring it."""
    from tensorflow_datasets.core import dataset_builder

    assert dataset_builder.importlib_resources.abc.Traversable is not None


def test_tfds_offline_without_data_is_refused_at_once_and_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "TFDS_PROBE_HOST", ("tfcluster-test.invalid", 443))  # never resolves
    with pytest.raises(InputError, match="needs network access or a prepared TFDS data dir") as err:
        sources.load(f"mnist?data_dir={tmp_path}")
    assert isinstance(err.value.__cause__, OSError) and "unreachable" in str(err.value)


def test_npz_source_and_its_errors(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((5, 6, 6, 3), np.uint8), y=np.arange(5))
    src = sources.load(f"npz:{good}")
    assert src.info.image_shape == (6, 6, 3) and src.has_labels
    gray = tmp_path / "gray.npz"
    np.savez(gray, x=np.zeros((5, 6, 6), np.uint8))
    assert sources.load(f"npz:{gray}").info.image_shape == (6, 6, 1)
    cases = {"float": (np.zeros((5, 6, 6, 1), np.float32), "uint8"),
             "rank": (np.zeros((5, 6), np.uint8), "shape"),
             "channels": (np.zeros((5, 6, 6, 4), np.uint8), "channels")}
    for name, (x, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, x=x)
        with pytest.raises(InputError, match=message):
            sources.load(f"npz:{path}")
    nox = tmp_path / "nox.npz"
    np.savez(nox, images=np.zeros((2, 2, 2, 1), np.uint8))
    with pytest.raises(InputError, match="named 'x'"):
        sources.load(f"npz:{nox}")
    with pytest.raises(InputError, match="not found"):
        sources.load(f"npz:{tmp_path / 'missing.npz'}")
    with pytest.raises(InputError, match="x_test"):
        sources.load(f"npz:{good}?split=test")


def test_npz_train_and_test_splits(tmp_path):
    path = tmp_path / "split.npz"
    np.savez(path, x=np.zeros((5, 6, 6, 1), np.uint8), y=np.zeros(5), x_test=np.ones((3, 6, 6, 1), np.uint8),
             y_test=np.ones(3))
    assert len(sources.load(f"npz:{path}?split=train")) == 5
    test = sources.load(f"npz:{path}?split=test")
    assert len(test) == 3 and test.x.min() == 1 and test.y.tolist() == [1, 1, 1]
    both = sources.load(f"npz:{path}")
    assert len(both) == 8 and both.y.tolist() == [0] * 5 + [1] * 3
    with pytest.raises(InputError, match="no train/test splits"):
        sources.load(f"folder:{tmp_path}?split=train")


def test_folder_with_classes_skips_corrupt_files(tmp_path):
    for c in ("cats", "dogs"):
        os.makedirs(tmp_path / c)
        for i in range(3):
            Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not a png at all")
    src = sources.load(f"folder:{tmp_path}")
    assert src.x.shape == (6, 10, 12, 3)
    assert src.info.skipped == 1
    assert src.y.tolist() == [0, 0, 0, 1, 1, 1] and src.info.class_names == ("cats", "dogs")
    resized = sources.load(f"folder:{tmp_path}?size=8&channels=1")
    assert resized.x.shape == (6, 8, 8, 1)
    unlabelled = sources.load(f"folder:{tmp_path}?labels=none")
    assert not unlabelled.has_labels and unlabelled.info.class_names == () and unlabelled.x.shape == src.x.shape
    for bad in (lambda spec: sources.check_spec(spec), sources.load):
        with pytest.raises(InputError, match="labels must be subfolders or none"):
            bad(f"folder:{tmp_path}?labels=yes")


def test_flat_folder_is_unlabelled_and_empty_folder_is_an_error(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((5, 5), i, np.uint8)).save(tmp_path / f"{i}.png")
    src = sources.load(f"folder:{tmp_path}")
    assert src.x.shape == (3, 5, 5, 1) and not src.has_labels and src.info.num_classes == 0
    assert len(src.info.items) == 3
    empty = tmp_path / "empty"
    os.makedirs(empty)
    with pytest.raises(InputError, match="no image files"):
        sources.load(f"folder:{empty}")
    corrupt = tmp_path / "corrupt"
    os.makedirs(corrupt)
    (corrupt / "a.jpg").write_bytes(b"\xff\xd8junk")
    with pytest.raises(InputError, match="could be read"):
        sources.load(f"folder:{corrupt}")


def test_synthetic_sources():
    g = sources.load("gaussians8?n=4000")
    assert g.x.shape == (4000, 2) and g.info.modality == "vector" and g.info.num_classes == 8
    for k in range(8):
        centre = g.x[g.y == k].mean(0)
        np.testing.assert_allclose(centre, sources.GAUSSIAN8_CENTRES[k], atol=0.01)
        assert g.x[g.y == k].std(0) == pytest.approx([0.014, 0.014], rel=0.2)
    a = sources.load("artifact_mnist")
    base = sources.load("mnist5k")
    assert a.info.num_classes == 3
    np.testing.assert_array_equal(a.x[:, 0, 0, 0], np.array([26, 128, 230])[a.y])
    np.testing.assert_array_equal(a.x[:, 1:], base.x[:, 1:])
    assert np.bincount(a.y).min() > 1500


def test_colored_mnist_paints_digits_with_class_independent_colours():
    base = sources.load("mnist5k")
    c = sources.load("colored_mnist")
    assert c.x.shape == base.x.shape[:-1] + (3,) and c.x.dtype == np.uint8
    np.testing.assert_array_equal(c.y, base.y)
    # Luminance keeps the digit: the painted image correlates with the original strokes.
    lum = c.x.astype(np.float32).mean(-1).reshape(len(c), -1)
    orig = base.x.astype(np.float32).reshape(len(base), -1)
    corr = [np.corrcoef(lum[i], orig[i])[0, 1] for i in range(50)]
    assert np.median(corr) > 0.5
    # The colour of the brightest pixel is independent of the class (similar spread in every class).
    brightest = c.x.reshape(len(c), -1, 3)[np.arange(len(c)), orig.argmax(1)]
    hue_bin = brightest.argmax(1)
    per_class = np.array([np.bincount(hue_bin[c.y == k], minlength=3) / (c.y == k).sum() for k in range(10)])
    assert per_class.std(0).max() < 0.1
    with pytest.raises(InputError, match="grayscale base"):
        sources.load("colored_mnist?base=colored_mnist")


def test_class_reduced_follows_section_iv_f():
    from tfcluster.evaluation.metrics import uniformity_index

    usps = sources.reduce_largest_classes(sources.USPS_CLASS_COUNTS, 0)
    assert usps.tolist() == [1500, 1200, 900, 800, 800, 700, 800, 700, 700, 800]  # multiples of 100
    assert sources.reduce_largest_classes(sources.USPS_CLASS_COUNTS, 1).max() == 1200
    assert sources.reduce_largest_classes(sources.USPS_CLASS_COUNTS, 4).tolist() == [700] * 10  # USPS700
    uis = []
    for steps in range(4):
        src = sources.load(f"class_reduced?steps={steps}&unit=50")
        counts = np.bincount(src.y, minlength=10)
        assert np.all(counts % 50 == 0) and src.x.shape[1:] == (28, 28, 1)
        uis.append(uniformity_index(src.y, 10))
    assert uis[0] < uis[1] < uis[2] < uis[3] == pytest.approx(1.0)  # each step makes the classes more even
    with pytest.raises(InputError, match="fewer than unit"):
        sources.load("class_reduced?unit=1000")
