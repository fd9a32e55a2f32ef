"""Method configs and presets, importable without TensorFlow.

One module per method holds its frozen dataclass config, its choice tuples and
its presets (`PRESETS`: name -> fn(DatasetInfo) -> config); the method classes
in `tfcluster.methods` train them. Because nothing here imports TensorFlow, the
binaries check `--method`, `--preset` and `--set` before the 10-20 s TensorFlow
start-up (`check`), and `--print_config` resolves a run's config without it.

  names()                                 the methods (--method)
  presets(method)                         {preset name: fn(DatasetInfo) -> config}
  config_class(method)                    the method's config dataclass
  check(method, preset, overrides)        InputError for an unknown name or field, or a bad value
  resolve(method, preset, info, overrides) the run's validated config
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib

from tfcluster import config as config_lib
from tfcluster.errors import InputError

# method -> (config module, config class, presets dict, method class "module:Class").
REGISTRY = {
    "dac": ("dac", "DACConfig", "PRESETS", "tfcluster.methods.dac:DAC"),
    "dbc": ("dbc", "DBCConfig", "PRESETS", "tfcluster.methods.dbc:DBC"),
    "dccm": ("dccm", "DCCMConfig", "PRESETS", "tfcluster.methods.dccm:DCCM"),
    "fcae_kms": ("dbc", "DBCConfig", "FCAE_KMS_PRESETS", "tfcluster.methods.dbc:FCAEKMeans"),
    "gatcluster": ("gatcluster", "GATClusterConfig", "PRESETS", "tfcluster.methods.gatcluster:GATCluster"),
    "kmeans": ("kmeans", "KMeansConfig", "PRESETS", "tfcluster.methods.kmeans:KMeansPixels"),
    "precise_gan": ("precise_gan", "PreciseGANConfig", "PRESETS", "tfcluster.methods.precise_gan:PreciseGAN"),
}


def names() -> list[str]:
    return sorted(REGISTRY)


def _suggest(name: str, choices) -> str:
    """' (did you mean X?)' for the choice `name` begins or most resembles, or ''."""
    name = str(name).lower()
    close = [c for c in sorted(choices) if name and c.startswith(name)] or \
        difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _entry(method: str):
    if method not in REGISTRY:
        raise InputError(f"unknown method {method!r}{_suggest(method, REGISTRY)}; available: " + ", ".join(names()))
    return REGISTRY[method]


def _module(method: str):
    return importlib.import_module(f"tfcluster.configs.{_entry(method)[0]}")


def config_class(method: str) -> type:
    return getattr(_module(method), _entry(method)[1])


def presets(method: str) -> dict:
    return getattr(_module(method), _entry(method)[2])


def method_path(method: str) -> str:
    """"module:Class" of the method that trains `method`'s config (imports nothing)."""
    return _entry(method)[3]


def check(method: str, preset: str, overrides=()) -> None:
    """Raises InputError for an unknown method or preset, an unknown `--set` field or an
    unparsable value; checked against the config's defaults (a preset's values and the
    dataset come later, in `resolve`)."""
    known = presets(method)
    if preset not in known:
        raise InputError(f"unknown preset {preset!r} for method {method!r}{_suggest(preset, known)}; presets: "
                         + ", ".join(sorted(known)))
    config_lib.override(config_class(method)(), overrides)


def resolve(method: str, preset: str, info, overrides=(), validate: bool = True):
    """The config of a run: the preset for the dataset `info`, then the overrides; validated unless
    `validate` is False (the caller then validates, after checks of its own that say more)."""
    check(method, preset, overrides)
    cfg = config_lib.override(presets(method)[preset](info), overrides)
    if validate:
        cfg.validate()
    return cfg


def describe(cfg, prefix: str = "") -> list[str]:
    """`field = value` lines of a config, nested groups as `group.field` (what --set takes)."""
    lines = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            lines += describe(value, f"{prefix}{f.name}.")
        else:
            lines.append(f"{prefix}{f.name} = {value!r}")
    return lines
