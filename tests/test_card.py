"""The typed model card: what older and newer cards read as, and what is refused."""

import json

import pytest

from udfs.card import BI_ENCODER, CROSS_ENCODER, CardError, ModelCard


def test_a_card_round_trips_through_its_json_with_unknown_keys_kept():
    data = {"version": "v1", "kind": BI_ENCODER, "max_length": 64, "threshold": 0.62, "calibration": {"a": 2.0, "b": -1.0},
            "grade_thresholds": {"1": 0.4, "2": 0.7}, "promotion": {"promoted": True, "decision": "beats"},
            "future_field": {"x": [1, 2]}}
    card = ModelCard.from_dict(data)
    assert card.kind == BI_ENCODER and card.max_length == 64 and card.platt == (2.0, -1.0) and card.promoted
    assert card.extra == {"future_field": {"x": [1, 2]}}
    assert card.to_dict() == data and ModelCard.from_dict(json.loads(card.to_json())) == card


def test_an_old_card_means_what_old_versions_meant():
    card = ModelCard.from_dict({"version": "old", "max_length": "96", "threshold": 1, "kind": None})
    assert card.kind == CROSS_ENCODER and card.max_length == 96 and card.threshold == 1.0
    assert card.platt == (1.0, 0.0) and card.grade_thresholds == {} and not card.promoted
    assert card.validation_score_deciles is None and card.to_dict() == {"version": "old", "kind": CROSS_ENCODER,
                                                                          "max_length": 96, "threshold": 1.0}


@pytest.mark.parametrize("data, message", [
    ({"kind": CROSS_ENCODER}, "needs a version"),
    ({"version": ""}, "needs a version"),
    ({"version": "v", "kind": "colbert"}, "kind must be one of cross_encoder, bi_encoder, not 'colbert'"),
    ({"version": "v", "max_length": "long"}, "invalid literal"),
    (["v"], "is a JSON object, not list"),
])
def test_what_is_not_a_card_is_refused(data, message):
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict(data)


def test_read_card_names_the_file_of_a_card_that_is_not_one(tmp_path):
    from udfs.model import ModelError, read_card

    (tmp_path / "model_card.json").write_text(json.dumps({"kind": "cross_encoder"}))
    with pytest.raises(ModelError, match=f"model card {tmp_path / 'model_card.json'} is unreadable: .*needs a version"):
        read_card(tmp_path)


def test_a_model_scores_only_the_product_text_it_was_trained_on():
    from relevance.scoring import product_text_mismatch
    from relevance.settings import PairsSettings

    trained = ModelCard("v1", product_text_max_words=64, product_text_description_words=32)
    assert product_text_mismatch(trained, PairsSettings(product_text_description_words=32)) is None
    assert product_text_mismatch(trained, PairsSettings()) == (
        "model v1 was trained on other product texts than these settings build: "
        "pairs.product_text_description_words=0 (trained with 32)")
    shorter = product_text_mismatch(trained, PairsSettings(product_text_max_words=48, product_text_description_words=32))
    assert shorter is not None and "pairs.product_text_max_words=48 (trained with 64)" in shorter
    assert product_text_mismatch(ModelCard("old"), PairsSettings(product_text_max_words=8)) is None  # recorded nothing
