"""The typed settings tree: built once from the YAML files and `--set`, defaults in one place, errors naming the key."""

import dataclasses

import pytest

from jobs.core.config import ConfigError, config_hash, load_config, load_settings
from relevance.settings import (
    FinetuneSettings,
    LabelScheme,
    Settings,
    all_keys,
    as_mapping,
    settings_from_mapping,
)
from tests.conftest import ROOT

LOCAL = ROOT / "conf" / "local.yaml"


def test_local_config_is_the_defaults_plus_the_label_schemes():
    settings = load_settings(LOCAL)
    assert dataclasses.replace(settings, labels=Settings().labels) == Settings()
    assert settings.labels.active == LabelScheme(grades={"Exact": 2, "Partial": 1, "Irrelevant": 0}, relevant_min_grade=1)
    assert settings.labels.named("esci").gain == {3: 1.0, 2: 0.1, 1: 0.01, 0: 0.0}
    assert settings.labels.named("chorus").top_grade == 3


def test_overrides_are_typed_and_reach_the_tree():
    settings = load_settings(LOCAL, ["scoring.batch_tokens=1024", "audit.ks=[1, 3]", "finetune.weight_mixes=[1]",
                                     "imports.catalog.mapping={product_id: sku}", "spark.conf.spark.task.cpus=2"])
    assert settings.scoring.batch_tokens == 1024 and settings.audit.ks == (1, 3)
    assert settings.finetune.weight_mixes == (1.0,) and isinstance(settings.finetune.weight_mixes[0], float)
    assert settings.imports.catalog.mapping == {"product_id": "sku"} and settings.spark.conf == {"spark.task.cpus": 2}


def test_included_files_are_overridden_by_the_including_one():
    settings = load_settings(ROOT / "conf" / "chorus.yaml")
    assert settings.labels.scheme == "chorus" and settings.warehouse.root == "./warehouse-chorus"
    assert settings.imports.catalog.attribute_prefixes == ("attr_t_", "attr_n_", "attr_b_")
    assert settings.pairs.product_text_description_words == 32
    cluster = load_settings(ROOT / "conf" / "cluster.yaml")
    assert cluster.warehouse.writer == "delta-spark" and cluster.spark.conf["spark.task.resource.gpu.amount"] == 1


@pytest.mark.parametrize("override, message", [
    ("finetune.epoch=2", "unknown setting 'finetune.epoch'; did you mean 'finetune.epochs'?"),
    ("finetune.epochs=2.5", "setting 'finetune.epochs' must be an integer (its default is 3), not 2.5"),
    ("finetune.kind=bm25", "setting 'finetune.kind' must be bi_encoder | cross_encoder"),
    ("scoring.precision=int8", None),
    ("warehouse.writer=parquet", "setting 'warehouse.writer' must be auto | delta-rs | delta-spark"),
    ("finetune.test_fraction=0.9", "must leave queries to train on"),
    ("labels.schemes.bad={grades: {a: 1}}", "settings under 'labels.schemes.bad' are incomplete"),
    ("imports.judgments.scheme=nope", "label scheme 'nope' is not defined"),
    ("pairs.product_text_description_words=-1",
     "setting 'pairs.product_text_description_words' must be >= 0 (its default is 0), not -1"),
    ("pairs.product_text_max_words=0", "setting 'pairs.product_text_max_words' must be >= 1 (its default is 64), not 0"),
])
def test_a_setting_that_does_not_fit_is_a_config_error_naming_it(override, message):
    if message is None:
        assert load_settings(LOCAL, [override]).scoring.precision == "int8"
        return
    with pytest.raises(ConfigError) as error:
        load_settings(LOCAL, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_refit_in_several_processes_is_refused_where_the_settings_are_read():
    with pytest.raises(ConfigError, match=r"finetune.refit trains in one process: set finetune.processes to 1 \(not 2\)"):
        load_settings(LOCAL, ["finetune.refit=true", "finetune.processes=2"])
    assert load_settings(LOCAL, ["finetune.refit=true"]).finetune.refit is True


@pytest.mark.parametrize("weights", ["[]", "[-0.1]", "[0, .inf]"])
def test_lexical_weights_must_be_a_list_of_finite_weights_of_zero_or_more(weights):
    with pytest.raises(ConfigError, match=r"setting 'finetune.lexical_weights' must be a list of at least 1 item, "
                                          r"each >= 0 \(its default is \[0.0\]\), not \["):
        load_settings(LOCAL, [f"finetune.lexical_weights={weights}"])


def test_lexical_weights_are_read_as_a_tuple_of_floats():
    assert load_settings(LOCAL, ["finetune.lexical_weights=[0, 0.02]"]).finetune.lexical_weights == (0.0, 0.02)


def test_int8_on_cuda_is_refused_where_the_settings_are_read():
    with pytest.raises(ConfigError, match="int8.*CPU only"):
        load_settings(LOCAL, ["scoring.precision=int8", "scoring.device=cuda"])


def test_config_errors_are_one_line_and_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        load_config(LOCAL, ["no_equals_sign"])
    with pytest.raises(ConfigError, match="cannot set 'finetune.epochs.x': 'epochs' is not a mapping"):
        load_config(LOCAL, ["finetune.epochs=3", "finetune.epochs.x=1"])


def test_config_hash_is_stable_and_sensitive():
    a, b = load_settings(LOCAL), load_settings(LOCAL)
    c = load_settings(LOCAL, ["scoring.batch_tokens=1"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_the_tree_round_trips_through_plain_data():
    settings = load_settings(LOCAL, ["audit.ks=[3]", "finetune.version=v1"])
    assert settings_from_mapping(as_mapping(settings)) == settings
    assert settings.replace("finetune.epochs", 5).finetune == dataclasses.replace(FinetuneSettings(), epochs=5, version="v1")
    assert {"finetune.epochs", "audit.regression.margin", "imports.catalog.mapping"} <= set(all_keys())


def test_an_exponent_without_a_dot_is_a_number_in_files_and_overrides(tmp_path):
    """YAML 1.1 would read 1e-4 as text; `--set finetune.learning_rate=1e-4` must mean the number."""
    conf = tmp_path / "c.yaml"
    conf.write_text("include: [" + str(ROOT / "conf" / "labels.yaml") + "]\nfinetune:\n  learning_rate: 2e-5\n  version: null\n")
    settings = load_settings(conf, ["finetune.learning_rate=1e-4", "finetune.version=v1e5"])
    assert settings.finetune.learning_rate == 1e-4 and settings.finetune.version == "v1e5"
    assert load_settings(conf).finetune.learning_rate == 2e-5


def test_settings_written_as_json_read_back_the_same(tmp_path):
    """JSON is YAML, but its keys are always text: a gain mapping {3: 1.0} comes back as {"3": 1.0}."""
    import json

    conf = tmp_path / "c.json"
    conf.write_text(json.dumps(load_config(LOCAL)))
    assert load_settings(conf) == load_settings(LOCAL)
