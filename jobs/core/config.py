"""Configuration files: YAML (with `include:`) plus `--set key.path=value` overrides, made into the typed
settings tree (relevance.settings) once, before Spark starts: an unknown key or a value of the wrong type is a
ConfigError naming the key and the nearest valid one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from plumbing.storage import resolve_storage_options
from relevance.settings import ConfigError, Settings, as_mapping, settings_from_mapping

# purity: no pyspark torch transformers

__all__ = ["ConfigError", "Settings", "config_hash", "load_config", "load_settings", "set_path", "storage_options"]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, except that `1e-4` (an exponent without a dot) is the number it means, as in YAML 1.2,
    not the text YAML 1.1 makes of it (in the files and in `--set`)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    merged: dict[str, Any] = {}
    for include in data.pop("include", []) or []:
        merged = deep_merge(merged, _read_yaml(path.parent / include))
    return deep_merge(merged, data)


# Mappings whose keys hold dots themselves: `spark.conf.spark.executor.cores` sets "spark.executor.cores".
DOTTED_KEYS = ("spark.conf",)


def _split(dotted_key: str) -> list[str]:
    for prefix in DOTTED_KEYS:
        if dotted_key.startswith(prefix + ".") and len(dotted_key) > len(prefix) + 1:
            return [*prefix.split("."), dotted_key[len(prefix) + 1:]]
    return dotted_key.split(".")


def set_path(cfg: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating intermediate mappings."""
    node = cfg
    *parents, leaf = _split(dotted_key)
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{dotted_key}': '{part}' is not a mapping")
        node = child
    node[leaf] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    """`key.path=value` items as (key, value), values parsed as YAML scalars."""
    parsed = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' must look like key.path=value")
        try:
            value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"override '{item}': the value is not valid YAML") from None
        parsed.append((key.strip(), value))
    return parsed


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The merged YAML of a config file with `key.path=value` overrides applied (values parsed as YAML scalars)."""
    cfg = _read_yaml(Path(path))
    for key, value in parse_overrides(overrides):
        set_path(cfg, key, value)
    return cfg


def load_settings(path: str | Path, overrides: list[str] | None = None) -> Settings:
    """The typed settings of a config file and its overrides (ConfigError naming a key that does not fit)."""
    return settings_from_mapping(load_config(path, overrides))


def config_hash(settings: Settings) -> str:
    """Stable short hash of the resolved settings, recorded in `runs`."""
    canonical = json.dumps(as_mapping(settings), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def storage_options(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`warehouse.storage_options` of the settings, resolved (plumbing.storage.resolve_storage_options): what the
    jobs hand to the warehouse, the model store and the executors."""
    return resolve_storage_options(settings.warehouse.storage_options, environ)
