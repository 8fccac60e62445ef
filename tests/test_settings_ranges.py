"""Every setting is declared once (relevance.settings.setting): its type, default, range and meaning. A value out of
its range is a ConfigError naming the key, the range and the default, raised where the settings are built."""

import dataclasses
import json
import typing

import pytest

from jobs.core.config import ConfigError, load_settings
from relevance.settings import (
    LabelScheme,
    SettingInfo,
    Settings,
    all_keys,
    info_of,
    range_text,
    setting_field,
    setting_rows,
)
from tests.conftest import ROOT

LOCAL = ROOT / "conf" / "local.yaml"


def declarations(cls: type = Settings, prefix: str = "") -> list[tuple[str, dataclasses.Field, typing.Any]]:
    """(key, field, type) of every leaf setting, the fields of a label scheme included."""
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            found += declarations(kind, f"{prefix}{f.name}.")
        else:
            found.append((f"{prefix}{f.name}", f, kind))
    return found + (declarations(LabelScheme, "labels.schemes.wands.") if cls is Settings else [])


def is_numeric(kind: typing.Any) -> bool:
    if kind in (int, float):
        return True
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        return is_numeric(args[0])
    return origin is not typing.Literal and origin is not dict and any(is_numeric(a) for a in args)


def test_every_setting_declares_one_line_of_meaning_and_every_number_a_range():
    for key, f, kind in declarations():
        info = info_of(f)
        assert isinstance(info, SettingInfo), f"{key} is not declared with setting()"
        assert info.meaning and "\n" not in info.meaning, f"{key}: one line of meaning"
        if is_numeric(kind):
            assert info.range is not None, f"{key} ({kind}) declares no range"
        else:
            assert info.range is None, f"{key} is not a number but declares a range"


def test_defaults_lie_in_their_ranges():
    for key, f, _ in declarations():
        info = info_of(f)
        if info is None or info.range is None or f.default is dataclasses.MISSING:
            continue
        values = f.default if isinstance(f.default, tuple) else (f.default,)
        assert len(values) >= info.min_items, key
        for value in values:
            assert value is None or isinstance(value, str) or info.range.admits(value), f"{key}: {value}"


@pytest.mark.parametrize("override, message", [
    ("finetune.max_length=0", "setting 'finetune.max_length' must be >= 8 (its default is 64), not 0"),
    ("finetune.epochs=-1", "setting 'finetune.epochs' must be >= 1 (its default is 3), not -1"),
    ("finetune.epochs=0", "setting 'finetune.epochs' must be >= 1 (its default is 3), not 0"),
    ("audit.ks=[0]", "setting 'audit.ks' must be a list of at least 1 item, each >= 1 (its default is [5, 10]), not [0]"),
    ("audit.ks=[]", "setting 'audit.ks' must be a list of at least 1 item, each >= 1 (its default is [5, 10]), not []"),
    ("pairs.ctr_prior_weight=-5", "setting 'pairs.ctr_prior_weight' must be > 0 (its default is 20.0), not -5.0"),
    ("finetune.batch_size=0", "setting 'finetune.batch_size' must be >= 1 (its default is 32), not 0"),
    ("finetune.learning_rate=-1", "setting 'finetune.learning_rate' must be > 0 (its default is 5e-05), not -1.0"),
    ("scoring.max_batch_rows=0", "setting 'scoring.max_batch_rows' must be >= 1 or auto (its default is \"auto\"), not 0"),
    ("audit.target_precision=2", "setting 'audit.target_precision' must be in (0, 1] (its default is 0.9), not 2.0"),
    ("pairs.head_share=1.5", "setting 'pairs.head_share' must be in [0, 1] (its default is 0.5), not 1.5"),
    ("audit.bootstrap_samples=0", "setting 'audit.bootstrap_samples' must be >= 1 (its default is 500), not 0"),
    ("audit.confidence=1.5", "setting 'audit.confidence' must be in (0, 1) (its default is 0.95), not 1.5"),
    ("finetune.max_train_seconds=0", "setting 'finetune.max_train_seconds' must be > 0"),
    ("finetune.weight_mixes=[0.5, 1.5]", "setting 'finetune.weight_mixes' must be a list of at least 1 item, each in [0, 1]"),
    ("finetune.learning_rate=.nan", "setting 'finetune.learning_rate' must be > 0 (its default is 5e-05), not NaN"),
    ("labels.schemes.wands.relevant_min_grade=-1", "setting 'labels.schemes.wands.relevant_min_grade' must be >= 0, not -1"),
])
def test_values_out_of_range_are_refused_naming_key_range_and_default(override, message):
    with pytest.raises(ConfigError) as error:
        load_settings(LOCAL, [override])
    assert str(error.value).startswith(message), str(error.value)


def out_of_range(kind: typing.Any, info: SettingInfo) -> list[typing.Any]:
    """Values just outside a declared range (a list for a list setting)."""
    bounds = info.range
    assert bounds is not None
    numbers = []
    if bounds.ge is not None:
        numbers.append(bounds.ge - 1)
    if bounds.gt is not None:
        numbers.append(bounds.gt)
    if bounds.le is not None:
        numbers.append(bounds.le + 1)
    if bounds.lt is not None:
        numbers.append(bounds.lt)
    integer = int in (typing.get_args(kind) or (kind,)) or typing.get_args(kind) == (int, ...)
    numbers = [int(n) if integer else float(n) for n in numbers]
    if typing.get_origin(kind) is tuple:
        return [[n] for n in numbers] + ([[]] if info.min_items else [])
    return numbers


RANGED = [(key, f, kind) for key, f, kind in declarations() if (info_of(f) or SettingInfo("")).range is not None]


@pytest.mark.parametrize("key, f, kind", RANGED, ids=[key for key, _, _ in RANGED])
def test_every_range_is_checked_when_the_settings_are_built(key, f, kind):
    info = info_of(f)
    assert info is not None
    values = out_of_range(kind, info)
    assert values, key
    for value in values:
        with pytest.raises(ConfigError) as error:
            load_settings(LOCAL, [f"{key}={json.dumps(value)}"])
        text = str(error.value)
        assert text.startswith(f"setting '{key}' must be {range_text(kind, info)}"), text
        if f.default is not dataclasses.MISSING:
            assert f"(its default is {json.dumps(list(f.default) if isinstance(f.default, tuple) else f.default)})" in text
        assert text.endswith(f"not {json.dumps(value)}") or text.endswith(f"not {json.dumps(float(value))}"), text


def test_values_on_the_bounds_are_accepted():
    settings = load_settings(LOCAL, ["finetune.epochs=1", "audit.ks=[1]", "pairs.head_share=1", "pairs.torso_share=0",
                                     "audit.target_precision=1", "finetune.max_train_seconds=0.5",
                                     "scoring.max_batch_rows=1", "finetune.val_fraction=0", "imports.ubi.position_base=1"])
    assert settings.finetune.epochs == 1 and settings.audit.ks == (1,) and settings.finetune.max_train_seconds == 0.5
    assert load_settings(LOCAL, ["finetune.max_train_seconds=null"]).finetune.max_train_seconds is None
    assert load_settings(LOCAL, ["audit.regression.margin=-0.5"]).audit.regression.margin == -0.5  # a gain required


def test_rules_between_settings_stay_in_validate():
    with pytest.raises(ConfigError, match=r"pairs.head_share \(0.8\) \+ pairs.torso_share \(0.3\) must be 1 or less"):
        load_settings(LOCAL, ["pairs.head_share=0.8"])
    with pytest.raises(ConfigError, match="must leave queries to train on"):
        load_settings(LOCAL, ["finetune.val_fraction=0.5", "finetune.test_fraction=0.5"])


def test_setting_rows_cover_every_leaf_key_with_its_declaration():
    rows = {row.key: row for row in setting_rows()}
    assert set(all_keys(sections=False)) <= set(rows)
    epochs = rows["finetune.epochs"]
    assert (epochs.type, epochs.default, epochs.range) == ("int", "3", ">= 1") and "epochs" in epochs.meaning
    assert rows["scoring.batch_tokens"].range == ">= 1 or auto"
    assert rows["finetune.max_train_seconds"].range == "> 0 or null"
    assert rows["labels.schemes.<name>.relevant_min_grade"].default == "(required)"
    f, kind = setting_field("audit.compare")
    assert kind == str | None and info_of(f).flag == "--compare"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="unknown setting 'audit.regression'"):
        setting_field("audit.regression")  # a section, not a setting


def test_the_arrow_batch_size_has_one_setting():
    """score sets Spark's Arrow batch size from scoring.arrow_batch_rows; the same meaning under spark.conf is refused
    (it used to be silently overridden)."""
    with pytest.raises(ConfigError, match="scoring.arrow_batch_rows"):
        load_settings(LOCAL, ["spark.conf.spark.sql.execution.arrow.maxRecordsPerBatch=8192"])
    assert load_settings(ROOT / "conf" / "cluster.yaml").scoring.arrow_batch_rows == 8192
