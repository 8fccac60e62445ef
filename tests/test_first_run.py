"""A team's first real run never dead-ends (issue 32): import, a finetune whose gate refuses, then nightly ends with a
`relevance` table scored by the zero-shot base, saved as a version of its own (calibrated on validation, its card
saying `base`), and the score and the audit say which model served and why."""

from __future__ import annotations

import json
from pathlib import Path

from jobs import finetune, nightly
from tests.conftest import DEMO_DS, make_config, run, table
from udfs.model import promoted_version


def test_a_refused_first_finetune_leaves_the_base_serving_and_nightly_scores_with_it(spark, fresh_warehouse,
                                                                                   tiny_model_root):
    root = Path(fresh_warehouse["warehouse"]["root"])
    models = root / "first-run-models"  # nothing promoted yet: a team's first finetune
    cfg = make_config(root, models, **{
        "model.base": str(tiny_model_root / "tiny-test" / "model"), "model.version": "promoted",
        "finetune.epochs": 1, "finetune.batch_size": 16, "finetune.max_length": 48, "finetune.catalog_steps": 0,
        "finetune.version": "ft-first", "finetune.promotion_margin": 0.9,  # no version beats the base by 0.9
    })
    trained = run(spark, cfg, finetune, ds=None)
    assert not trained.details["promoted"] and trained.details["promotion"]["decision"].startswith("not promoted")
    base = promoted_version(models)
    assert base is not None and base.startswith("base-") and trained.details["serving"] == base
    card = json.loads((models / base / "model_card.json").read_text())
    assert card["role"] == "base" and card["kind"] == "bi_encoder" and card["promotion"]["promoted"]
    assert card["calibration"] != {"a": 1.0, "b": 0.0} and 0 < card["threshold"] < 1  # fitted on validation
    assert "ft-first was not (not promoted:" in card["promotion"]["decision"]
    assert (models / base / "split.json").is_file() and (models / "ft-first" / "model_card.json").is_file()

    run(spark, cfg, nightly)
    relevance = table(cfg, "relevance")
    assert len(relevance) > 0 and set(relevance.model_version) == {base}
    assert relevance.score.between(0, 1).all() and relevance.score.nunique() > 1
    runs = table(cfg, "runs")
    score_run = runs[(runs.job == "score") & (runs.status == "succeeded")].iloc[-1]
    serving = json.loads(score_run.details)["serving"]
    assert serving.startswith(f"{base} (the zero-shot base), promoted: the zero-shot base serves: nothing was promoted")
    audit_run = runs[(runs.job == "audit") & (runs.status == "succeeded")].iloc[-1]
    assert json.loads(audit_run.details)["serving"] == serving
    assert "serving: " + serving in (root / "reports" / f"audit_{DEMO_DS}.md").read_text()  # the report says so
