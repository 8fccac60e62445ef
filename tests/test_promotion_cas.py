"""Promotion is a compare-and-swap: a finetune promotes only while PROMOTED still names the version its gate compared
against, so two concurrent runs cannot both promote (issue 32, item 9)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from udfs.model import UNCHECKED, PromotionConflict, promote, promoted_version


def test_promote_swaps_only_from_the_expected_version(tmp_path):
    assert promoted_version(tmp_path) is None
    promote(tmp_path, "v1", expected=None)
    assert promoted_version(tmp_path) == "v1"
    promote(tmp_path, "v2", expected="v1")
    assert promoted_version(tmp_path) == "v2"
    with pytest.raises(PromotionConflict, match="names v2 now, not v1"):
        promote(tmp_path, "v3", expected="v1")  # its gate compared against v1, which is no longer promoted
    with pytest.raises(PromotionConflict, match="names v2 now, not nothing"):
        promote(tmp_path, "v3", expected=None)
    assert promoted_version(tmp_path) == "v2"
    promote(tmp_path, "v4", expected=UNCHECKED)  # a forced promotion compares against nothing
    assert promoted_version(tmp_path) == "v4"


def _race(root: str, version: str, start, results) -> None:
    start.wait()
    try:
        promote(Path(root), version, expected=None)
        results.put((version, "promoted"))
    except PromotionConflict:
        results.put((version, "conflict"))


def test_concurrent_promotions_from_the_same_state_have_one_winner(tmp_path):
    """Four processes whose gates all compared against "nothing promoted" race: exactly one promotes, and PROMOTED
    names that one."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_race, args=(str(tmp_path), f"v{i}", start, results)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    outcomes = dict(results.get(timeout=10) for _ in workers)
    winners = [v for v, outcome in outcomes.items() if outcome == "promoted"]
    assert len(winners) == 1, outcomes
    assert promoted_version(tmp_path) == winners[0]
