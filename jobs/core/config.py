"""Configuration: YAML files (with `include:`) plus `--set key.path=value` overrides."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """The configuration is missing, unreadable or inconsistent."""


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    merged: dict[str, Any] = {}
    for include in data.pop("include", []) or []:
        merged = _deep_merge(merged, _read_yaml(path.parent / include))
    return _deep_merge(merged, data)


def set_path(cfg: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating intermediate mappings."""
    node = cfg
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{dotted_key}': '{part}' is not a mapping")
        node = child
    node[leaf] = value


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a config file and apply `key.path=value` overrides (values parsed as YAML scalars)."""
    cfg = _read_yaml(Path(path))
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like key.path=value")
        set_path(cfg, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return cfg


def get(cfg: dict[str, Any], dotted_key: str, default: Any = ...) -> Any:
    """Read `a.b.c` from a nested dict; without a default, a missing key is a ConfigError."""
    node: Any = cfg
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is ...:
                raise ConfigError(f"config key '{dotted_key}' is missing")
            return default
        node = node[part]
    return node


def config_hash(cfg: dict[str, Any]) -> str:
    """Stable short hash of the resolved configuration, recorded in `runs`."""
    canonical = json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
