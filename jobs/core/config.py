"""Configuration: YAML files (with `include:`) plus `--set key.path=value` overrides.

The settings that exist are the keys of the loaded YAML files (conf/local.yaml lists every one, optional
ones with a null default): a `--set` of an unknown key or of a value of the wrong type is a ConfigError
naming the key and the nearest valid one, raised before Spark starts. Below FREE_FORM keys any key goes.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import hashlib
import json
import re
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
        merged = _deep_merge(merged, _read_yaml(path.parent / include))
    return _deep_merge(merged, data)


# Mappings whose keys are free-form (Spark properties, label schemes, column mappings of imports, object-store options).
FREE_FORM = ("spark.conf", "labels.schemes", "imports.*.mapping", "warehouse.storage_options")
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


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a nested mapping, sections included."""
    keys = []
    for key, value in (node.items() if isinstance(node, dict) else []):
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, dict):
            keys.extend(_leaf_keys(value, dotted + "."))
    return keys


def _free_form(parts: list[str]) -> bool:
    """True when the key lies below a FREE_FORM mapping (`imports.*.mapping` matches any import's)."""
    for pattern in FREE_FORM:
        pattern_parts = pattern.split(".")
        if len(parts) > len(pattern_parts) and all(
                fnmatch.fnmatchcase(part, p) for part, p in zip(parts, pattern_parts)):
            return True
    return False


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text", list: "a list",
               dict: "a mapping"}


def _wrong_type(default: Any, value: Any) -> str | None:
    """What `value` should have been, when its type does not fit the default's; None when it fits.

    A null default (or value) fits anything; an integer fits a number; a text setting also takes a number
    (`batch_tokens: auto` or 4096, `model.version: 2025`)."""
    if default is None or value is None:
        return None
    kind = type(default)
    if kind is bool:
        fits = isinstance(value, bool)
    elif kind is int:
        fits = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is str:
        fits = isinstance(value, (str, int, float)) and not isinstance(value, bool)
    else:
        fits = isinstance(value, kind)
    return None if fits else _TYPE_NAMES.get(kind, kind.__name__)


def check_override(defaults: dict[str, Any], key: str, value: Any) -> None:
    """ConfigError unless `key` is a setting of `defaults` (or lies below a FREE_FORM mapping) and `value` has its type."""
    parts = _split(key)
    if _free_form(parts):
        return
    node: Any = defaults
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            known = _leaf_keys(defaults)
            nearest = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{nearest[0]}'?" if nearest else "; the settings are the keys of conf/local.yaml"
            raise ConfigError(f"unknown setting '{key}'{hint}")
        node = node[part]
    expected = _wrong_type(node, value)
    if expected:
        raise ConfigError(f"setting '{key}' must be {expected} (its default is {json.dumps(node, default=str)}), not {json.dumps(value, default=str)}")


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


def load_config(path: str | Path, overrides: list[str] | None = None, strict: bool = False) -> dict[str, Any]:
    """Read a config file and apply `key.path=value` overrides (values parsed as YAML scalars).

    strict (the CLI): every override must name a setting of the file, with a value of its type."""
    cfg = _read_yaml(Path(path))
    defaults = copy.deepcopy(cfg) if strict else None
    for key, value in parse_overrides(overrides):
        if defaults is not None:
            check_override(defaults, key, value)
        set_path(cfg, key, value)
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


def label_scheme(cfg: dict[str, Any]) -> dict[str, Any]:
    """The active label scheme (`labels.schemes.<labels.scheme>`): grades by label, relevant_min_grade, gain."""
    name = get(cfg, "labels.scheme")
    scheme = get(cfg, f"labels.schemes.{name}", None)
    if not isinstance(scheme, dict) or "grades" not in scheme:
        raise ConfigError(f"label scheme '{name}' is not defined under labels.schemes")
    return scheme
