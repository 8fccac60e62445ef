import pytest

from jobs.core.config import ConfigError, config_hash, get, load_config
from tests.conftest import ROOT


def test_local_config_includes_labels_and_applies_overrides():
    cfg = load_config(ROOT / "conf" / "local.yaml", ["scoring.batch_tokens=1024", "audit.ks=[1, 3]", "new.key=text"])
    assert get(cfg, "labels.schemes.wands.grades.Exact") == 2
    assert get(cfg, "scoring.batch_tokens") == 1024
    assert get(cfg, "audit.ks") == [1, 3]
    assert get(cfg, "new.key") == "text"
    assert get(cfg, "warehouse.root") == "./warehouse"


def test_config_errors_are_one_line_and_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        load_config(ROOT / "conf" / "local.yaml", ["no_equals_sign"])
    with pytest.raises(ConfigError, match="'spark.nothing' is missing"):
        get({"spark": {}}, "spark.nothing")


def test_config_hash_is_stable_and_sensitive():
    a = load_config(ROOT / "conf" / "local.yaml")
    b = load_config(ROOT / "conf" / "local.yaml")
    c = load_config(ROOT / "conf" / "local.yaml", ["scoring.batch_tokens=1"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_an_exponent_without_a_dot_is_a_number_in_files_and_overrides(tmp_path):
    """YAML 1.1 would read 1e-4 as text; `--set finetune.learning_rate=1e-4` must mean the number."""
    from jobs.core.config import load_config

    conf = tmp_path / "c.yaml"
    conf.write_text("finetune:\n  learning_rate: 2e-5\n  version: null\n")
    cfg = load_config(conf, ["finetune.learning_rate=1e-4", "finetune.version=v1e5"], strict=True)
    assert cfg["finetune"]["learning_rate"] == 1e-4 and cfg["finetune"]["version"] == "v1e5"
    assert load_config(conf)["finetune"]["learning_rate"] == 2e-5
