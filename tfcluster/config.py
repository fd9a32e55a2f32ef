"""Typed configuration helpers: dataclass configs, `key=value` overrides, JSON.

Library code takes dataclass configs; only binaries read flags and turn
`--set key=value` strings into a new config through `override`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tempfile
import typing

from tfcluster.errors import InputError, StorageError


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _parse_value(text: str, current, field_type):
    """Parses `text` to the type of `current` (bool, int, float, str, tuple, dataclass-free)."""
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(text)
    if isinstance(current, float):
        return _finite(float(text))
    if isinstance(current, tuple):
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        kinds = [type(v) for v in current] or [float]
        kind = kinds[0]
        values = tuple(kind(p.strip()) if kind is not bool else p.strip().lower() == "true" for p in parts)
        for v in values:
            if isinstance(v, float):
                _finite(v)
        return values
    if current is None:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value


def non_finite_fields(config, prefix: str = "") -> list[str]:
    """Names of the float fields (nested dataclasses and tuples included) holding NaN or an infinity."""
    bad = []
    for field in dataclasses.fields(config):
        value, name = getattr(config, field.name), prefix + field.name
        if dataclasses.is_dataclass(value):
            bad += non_finite_fields(value, name + ".")
        elif isinstance(value, (tuple, list)):
            bad += [name] if any(isinstance(v, float) and not math.isfinite(v) for v in value) else []
        elif isinstance(value, float) and not math.isfinite(value):
            bad.append(name)
    return bad


def override(config, assignments) -> typing.Any:
    """Returns a copy of `config` with `a.b=value` assignments applied.

    Raises:
      InputError: unknown field or a value of the wrong type.
    """
    for assignment in assignments or ():
        key, sep, text = assignment.partition("=")
        if not sep:
            raise InputError(f"override {assignment!r} must look like field=value")
        config = _set(config, key.strip().split("."), text, key)
    return config


def _set(config, path, text, full_key):
    if not dataclasses.is_dataclass(config):
        raise InputError(f"cannot set {full_key!r}: {type(config).__name__} has no fields")
    names = {f.name: f for f in dataclasses.fields(config)}
    name = path[0]
    if name not in names:
        close = difflib.get_close_matches(name, list(names), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown config field {full_key!r}{hint}; fields here: {', '.join(sorted(names))}")
    current = getattr(config, name)
    if len(path) > 1:
        return dataclasses.replace(config, **{name: _set(current, path[1:], text, full_key)})
    if dataclasses.is_dataclass(current):
        raise InputError(f"{full_key!r} is a group of fields; set one of them, e.g. {full_key}.<field>=...")
    try:
        value = _parse_value(text, current, names[name].type)
    except ValueError as e:
        raise InputError(f"bad value for {full_key!r}: {e}") from e
    return dataclasses.replace(config, **{name: value})


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()  # what open() gives a new file under the process's umask


def atomic_write_text(path: str, text: str) -> None:
    """Writes a file so that readers see the old or the new content, never a part.

    Raises StorageError (an OSError) naming the file when it cannot be written (full disk, permissions).
    """
    try:
        _atomic_write_text(path, text)
    except StorageError:
        raise
    except OSError as e:
        raise StorageError(f"could not write {path} ({e.strerror or e}): free space (or fix the directory), "
                           "then re-run the same command; the earlier file and checkpoints are intact") from e


def _atomic_write_text(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp's 0600 would hide a web page or a summary from its readers
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
