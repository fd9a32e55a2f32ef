"""Reading image files: the one path every command takes (folder datasets, cluster, predict, choose_k).

`list_image_files(root)` finds the files, `read_images(files, size, channels)`
decodes them into uint8 arrays [N, H, W, C], listing every file it skips with
its reason; a skipped file never stops a run.
  - Only regular files are read: a FIFO, socket or device named like an image is
    skipped (opened without blocking, then checked), so a folder cannot hang a run;
    each file's read and decode is bounded in time (READ_TIMEOUT_SECONDS).
  - Pixels are converted, not clipped: 16-bit images are scaled to 8 bits
    (v / 257, rounded); 32-bit integer images are taken as 16-bit when their values
    exceed 255 and as 8-bit otherwise (float images, whose range is unknown, are
    skipped); palettes are applied; transparent pixels are composited over
    white; the EXIF orientation is applied.
  - Sub-folders are followed, symbolic links to directories too, but every real
    directory is read once: a link loop, or two links to one folder, do not
    count its images twice.
Files are decoded in parallel threads (Pillow releases the GIL while decoding).
"""

from __future__ import annotations

import dataclasses
import io
import os
import queue
import stat
import threading
import time
from typing import Callable

import numpy as np

from tfcluster.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# A file's read and decode: beyond this a file is skipped ("timed out"), e.g. on a hung network mount.
READ_TIMEOUT_SECONDS = 60.0
# Modes whose images are one channel when channels are taken from the first image.
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_FILE_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
               (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory"))


class Skip(Exception):
    """A file that is not read, and why (the message: a short reason, the same for files alike)."""


def list_image_files(path: str) -> tuple[list[str], list[int], tuple]:
    """Lists image files under `path`: (files, class ids or -1, class names).

    Files directly in `path` are unlabelled; files in sub-folders get the
    sub-folder's index (sorted names) as label, when every file is in one.
    Every real directory is visited once (see the module docstring).
    """
    if not path or not os.path.isdir(path):
        raise InputError(f"image folder not found: {path!r}")
    visited = {os.path.realpath(path)}
    top, classes = [], []
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if os.path.isdir(full):
            real = os.path.realpath(full)
            if real in visited or os.path.commonpath([real, os.path.realpath(path)]) == real:
                continue  # a link to a folder already read, or to an ancestor
            visited.add(real)
            classes.append(entry)
        elif entry.lower().endswith(IMAGE_EXTENSIONS):
            top.append(full)
    files, labels = list(top), [-1] * len(top)
    for ci, cname in enumerate(classes):
        for root, fnames in _walk_once(os.path.join(path, cname), visited):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(os.path.join(root, fname))
                    labels.append(ci)
    if top and len(files) > len(top):
        labels = [-1] * len(files)  # mixed layout: sub-folders are not classes
        classes = []
    return files, labels, tuple(classes)


def _walk_once(root: str, visited: set) -> list[tuple[str, list]]:
    """(directory, file names) under `root`, sorted by path, following links to directories not yet visited."""
    out = []
    for current, dirnames, fnames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(current, d))
            if real not in visited:
                visited.add(real)
                keep.append(d)
        dirnames[:] = keep
        out.append((current, fnames))
    return sorted(out)


def _open_regular(path: str) -> bytes:
    """The bytes of a regular file; Skip for anything else (never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise Skip("missing (a broken symbolic link?)") from None
    except PermissionError:
        raise Skip("permission denied") from None
    except OSError as e:
        raise Skip(f"cannot be opened ({e.strerror or type(e).__name__})") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "special file")
            raise Skip(f"not a regular file ({kind})")
        try:
            data = f.read()
        except OSError as e:
            raise Skip(f"read error ({e.strerror or type(e).__name__})") from None
    if not data:
        raise Skip("empty file")
    return data


def to_uint8(im, channels: int, fmt: str | None = None):
    """A decoded PIL image in any mode -> an 8-bit "L" (channels 1) or "RGB" (channels 3) image.

    `fmt`: the file's format (Pillow's name, e.g. "PNG"); a PNG's 32-bit mode holds 16-bit values.

    Raises Skip for pixels whose range is unknown (float) or a mode Pillow cannot convert.
    """
    from PIL import Image

    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.int64)
        if mode == "I" and arr.max(initial=0) <= 255 and (fmt or im.format) != "PNG":
            scaled = arr  # 8-bit values in a 32-bit container
        elif arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
            raise Skip("32-bit integer pixels beyond 16 bits: unknown range")
        else:
            scaled = (arr * 255 + 32767) // 65535  # round(v / 257) for 16-bit v
        im = Image.fromarray(scaled.astype(np.uint8), "L")
        mode = "L"
    elif mode == "F":
        raise Skip("floating-point pixels: unknown range")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in im.info) \
        or (mode in ("L", "RGB") and "transparency" in im.info)
    try:
        if has_alpha:
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return im.convert("L" if channels == 1 else "RGB")
    except (ValueError, OSError) as e:
        raise Skip(f"pixel mode {mode} cannot be converted ({e})") from None


def decode(data: bytes, size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    """An image file's bytes -> uint8 [H, W, C] (`size` (H, W) by bilinear resizing; None: as it is;
    `channels` None: 1 for gray modes, else 3). Raises Skip."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            fmt = im.format
            if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: the picture as it is meant to be seen
                im = ImageOps.exif_transpose(im)
            channels = channels or (1 if im.mode in GRAY_MODES else 3)
            im = to_uint8(im, channels, fmt)
            if size is not None and (im.height, im.width) != tuple(size):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, np.uint8).reshape(im.height, im.width, channels)
    except Skip:
        raise
    except UnidentifiedImageError:
        raise Skip("not an image Pillow can decode") from None
    except Image.DecompressionBombError:
        raise Skip("too many pixels (Pillow's decompression-bomb limit)") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:  # truncated or corrupt data
        raise Skip(f"truncated or corrupt ({type(e).__name__})") from None


def read_file(path: str, size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    """One file -> uint8 [H, W, C]; Skip with the reason when it is not read."""
    return decode(_open_regular(path), size, channels)


@dataclasses.dataclass
class Images:
    """Decoded images and what was skipped.

    Attributes:
      x: uint8 [N, H, W, C], the readable files' images in file order.
      kept: indices [N] of those files in the list given.
      skipped: (path, reason) of each file skipped, in file order.
    """

    x: np.ndarray
    kept: list
    skipped: list


def read_images(files, size: tuple[int, int] | None = None, channels: int | None = None,
                workers: int | None = None, timeout: float = READ_TIMEOUT_SECONDS,
                read: Callable = read_file) -> Images:
    """Decodes `files` into one array. `size`/`channels` None: the first readable image's.

    The first readable file fixes the size and channels the others are converted to;
    the rest are decoded in `workers` threads (default: up to 4, one per core), each
    file within `timeout` seconds. `read(path, size, channels)` decodes one file.
    """
    files = list(files)
    results: list = [None] * len(files)
    first = 0
    while first < len(files) and (size is None or channels is None):  # the first readable image sets them
        results[first] = _bounded(read, (files[first], size, channels), timeout)
        if isinstance(results[first], np.ndarray):
            size, channels = results[first].shape[:2], results[first].shape[2]
        first += 1
    rest = list(range(first, len(files)))
    for i, value in zip(rest, _parallel([(files[i], size, channels) for i in rest], read, workers, timeout)):
        results[i] = value
    kept = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    skipped = [(files[i], str(r)) for i, r in enumerate(results) if not isinstance(r, np.ndarray)]
    x = np.stack([results[i] for i in kept]) if kept else np.zeros((0, 1, 1, 1), np.uint8)
    return Images(x=x, kept=kept, skipped=skipped)


def skipped_counts(reasons) -> dict:
    """{reason: count} of skipped files, most frequent first."""
    counts = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _call(fn, args):
    try:
        return fn(*args)
    except Skip as e:
        return e
    except Exception as e:  # noqa: BLE001 - an unexpected failure on one file skips that file
        return Skip(f"unreadable ({type(e).__name__}: {str(e)[:80]})")


def _bounded(fn, args, timeout: float):
    """`fn(*args)` in a daemon thread, or Skip("timed out ...") after `timeout` seconds (the thread is left)."""
    box = []
    thread = threading.Thread(target=lambda: box.append(_call(fn, args)), daemon=True)
    thread.start()
    thread.join(timeout)
    return box[0] if box else Skip(f"timed out (more than {timeout:g} s to read)")


def _parallel(arg_list, fn, workers: int | None, timeout: float) -> list:
    """`fn(*args)` for every args of `arg_list` in daemon threads, in order; a call that takes longer than
    `timeout` seconds gives Skip("timed out") and its thread is replaced (left to finish or hang alone).

    The caller sleeps until every result is in, waking a few times a second to look for calls past
    their time (not once a file: small files decode in a fraction of a millisecond).
    """
    n = len(arg_list)
    if not n:
        return []
    workers = max(1, min(workers or min(4, os.cpu_count() or 1), n))
    tasks: queue.Queue = queue.Queue()
    for i in range(n):
        tasks.put(i)
    results, running = {}, {}
    cond = threading.Condition()

    def worker():
        while True:
            try:
                i = tasks.get_nowait()
            except queue.Empty:
                return
            with cond:
                running[i] = time.monotonic()
            value = _call(fn, arg_list[i])
            with cond:
                running.pop(i, None)
                results.setdefault(i, value)
                if len(results) == n:
                    cond.notify_all()

    def spawn():
        threading.Thread(target=worker, daemon=True).start()

    for _ in range(workers):
        spawn()
    with cond:
        while len(results) < n:
            cond.wait(min(0.25, timeout / 4))
            now = time.monotonic()
            for i, began in list(running.items()):
                if now - began > timeout:
                    del running[i]
                    results[i] = Skip(f"timed out (more than {timeout:g} s to read)")
                    spawn()  # its thread is stuck: another takes its place
    return [results[i] for i in range(n)]
