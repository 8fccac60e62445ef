"""The fine-tuning plan, as one compute step: the loaded judged pairs, catalog sample, BM25 statistics and promoted
version in; a new model version (network, tokenizer, model card, split) and whether to promote it out. The finetune
job only loads its inputs (jobs.finetune.load_inputs) and writes what this returns.

Queries are split into train / validation / test (no query in two splits). Two kinds of network (`finetune.kind`):
a bi-encoder, the base sentence-embedding model itself fine-tuned so that the cosine of query and product orders the
pairs by grade (CoSENT loss; it starts from the zero-shot quality, first trained on pseudo-queries made from the
catalog's own products: relevance.training.catalog_queries), or a cross-encoder with a new head that learns graded
relevance (target = grade / top grade). Training runs a fixed number of epochs (the same model for the same data,
settings and seed, whatever the machine's load); the best epoch by validation nDCG@10 is kept; with
`finetune.lexical_weights`, validation also chooses how much BM25 (the catalog's statistics frozen into the version)
is added to the logit; Platt scaling on validation turns logits into the probability that a product is relevant;
thresholds are chosen on validation and metrics are reported on the held-out test queries. The new version is
promoted only when it beats the promoted version and the zero-shot base on validation by `finetune.promotion_margin`
(`finetune.force_promote` overrides).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from relevance.evaluation.baselines import zero_shot_scores
from relevance.settings import FinetuneSettings, LabelScheme, Settings
from relevance.training.calibration import calibrate_on_validation
from relevance.training.card import SPLIT_FILE, base_model_card, model_card, split_queries, version_name
from relevance.training.catalog_queries import distinct_query_batches, pseudo_query_pairs
from relevance.training.catalog_training import starting_network
from relevance.training.distributed import train_distributed
from relevance.training.evaluate import evaluate, predict_logits
from relevance.training.history import CatalogPlan, RefitHistory, TrainingHistory
from relevance.training.loop import train_network
from relevance.training.promotion import gate_scores, promotion_gate, validation_refusal, validation_rivals
from relevance.training.sources import ClickExamples, SourcesRecord, plus_judged, training_pairs
from relevance.training.split import data_fingerprint, split_examples
from relevance.training.weights import apply_weight_mix, choose_lexical_weight, choose_weight_mix
from udfs.card import ModelCard, calibrate
from udfs.lexical import LEXICAL_NPZ_FILE, Bm25Stats, bm25_pair_scores
from udfs.model import BI_ENCODER, LoadedModel, load_network

if TYPE_CHECKING:
    from transformers import PreTrainedModel

CatalogBatches = list[list[tuple[str, str]]]  # the catalog stage's batches of (pseudo-query, product text)
Splits = dict[str, pd.DataFrame]  # train / val / test: the judged pairs of each split (relevance.training.split)


# ----------------------------------------------------------------------------- what the job loads
def weighs_bm25(tuning: FinetuneSettings) -> bool:
    """Whether validation may add BM25 to the logit (a weight above 0 in `finetune.lexical_weights`): the job then
    loads the catalog's BM25 statistics."""
    return any(weight > 0 for weight in tuning.lexical_weights)


def trains_on_catalog(tuning: FinetuneSettings) -> bool:
    """A bi-encoder with `catalog_steps` trains on the catalog's pseudo-queries first; a cross-encoder does not."""
    return tuning.kind == BI_ENCODER and tuning.catalog_steps > 0


def catalog_sample_size(tuning: FinetuneSettings) -> int:
    """How many catalog products the job samples for the catalog stage: twice what its steps take (some give no
    pseudo-query, some repeat one within a batch); 0 without the stage."""
    return 2 * tuning.catalog_steps * tuning.batch_size if trains_on_catalog(tuning) else 0


@dataclass(frozen=True)
class FinetuneInputs:
    """What the finetune job loads for the compute step."""

    base_dir: Path  # the base checkpoint (model.base, resolved)
    examples: pd.DataFrame  # usable judged pairs: query_norm, product_id, product_text, grade (split.training_examples)
    available: int  # usable judged pairs before the cut to finetune.max_examples
    source: str  # the judgments' table, named when they are too few to split
    products: list[dict[str, Any]] = field(default_factory=list)  # the catalog sample (catalog_sample_size)
    bm25: Bm25Stats | None = None  # the catalog's BM25 statistics, loaded when weighs_bm25
    promoted: LoadedModel | None = None  # the promoted version the new one must beat; None: none yet
    clicks: ClickExamples | None = None  # the click labels, loaded when finetune.sources trains on them


# ----------------------------------------------------------------------------- the plan
def catalog_batches(products: list[dict[str, Any]], tuning: FinetuneSettings) -> tuple[CatalogBatches, CatalogPlan]:
    """The pseudo-query batches of the bi-encoder's catalog stage and how the sample covered the catalog; none without
    products, or when fewer than `catalog_min_coverage` of them say what they are (the plan says why)."""
    pairs = pseudo_query_pairs(products, tuning.catalog_brand_share, tuning.seed)
    coverage = len(pairs) / len(products) if products else 0.0
    plan = CatalogPlan(sampled_products=len(products), with_pseudo_query=len(pairs), coverage=round(coverage, 4))
    if products and coverage < tuning.catalog_min_coverage:
        return [], dataclasses.replace(plan, skipped=(
            f"catalog stage skipped: {len(pairs)} of {len(products)} sampled products ({coverage:.0%}) have a "
            f"category or product type, under finetune.catalog_min_coverage={tuning.catalog_min_coverage:g}"))
    return distinct_query_batches(pairs, tuning.batch_size, tuning.catalog_steps), plan


@dataclass(frozen=True)
class TrainingPlan:
    """The judged pairs split by query, the pairs the network trains on (relevance.training.sources), their
    fingerprint, and the catalog stage's batches."""

    parts: Splits
    train: pd.DataFrame
    sources: SourcesRecord
    fingerprint: str
    catalog: CatalogBatches
    catalog_plan: CatalogPlan


def plan_training(inputs: FinetuneInputs, settings: Settings, log: Callable[[str], None] = print) -> TrainingPlan:
    """Split the examples by query (a ValueError naming `inputs.source` when a split would be empty), fingerprint
    them and make the catalog stage's batches."""
    tuning, examples = settings.finetune, inputs.examples
    if len(examples) < inputs.available:
        log(f"finetune: {inputs.available} usable judged pairs, more than finetune.max_examples={tuning.max_examples}: "
            f"training on the {len(examples)} pairs of whole queries chosen by seed {tuning.seed}")
    parts = split_examples(examples, tuning.seed, tuning.val_fraction, tuning.test_fraction, inputs.source)
    train, sources = training_pairs(parts, inputs.clicks, tuning, settings.labels.active)
    other_than_split = train is not parts["train"]  # click labels, or fewer training queries
    fingerprint = data_fingerprint(examples, train if other_than_split else None)
    log(f"finetune: {len(examples)} judged pairs ({', '.join(f'{n} {len(p)}' for n, p in parts.items())}) "
        f"from {settings.model.base}, a {tuning.kind}")
    if other_than_split:
        log(f"finetune: training on {sources.judged_pairs} judged pairs of {sources.judged_queries} queries and "
            f"{sources.click_pairs} click-labelled pairs of {sources.click_queries} queries (finetune.sources="
            f"{sources.sources}); validation and test stay on judgments")
    catalog, catalog_plan = catalog_batches(inputs.products, tuning)
    if catalog_plan.skipped is not None:
        log(f"finetune: {catalog_plan.skipped}")
    return TrainingPlan(parts, train, sources, fingerprint, catalog, catalog_plan)


# ----------------------------------------------------------------------------- training
def fine_tune(base_dir: Path, plan: TrainingPlan, tuning: FinetuneSettings, scheme: LabelScheme,
              log: Callable[[str], None] = print) -> tuple[Any, PreTrainedModel, TrainingHistory]:
    """For a bi-encoder, train the base on the plan's catalog pseudo-query batches first; then on the plan's
    training pairs (in `tuning.processes` processes), keep the best epoch by validation and, for a bi-encoder, the
    best mix with the base weights; returns (tokenizer, network, history)."""
    val, catalog = plan.parts["val"], plan.catalog
    if tuning.processes > 1:
        tokenizer, network, loop, stage = train_distributed(str(base_dir), plan.train, val, tuning, scheme,
                                                            tuning.processes, catalog)
    else:
        tokenizer, network, stage = starting_network(str(base_dir), tuning, catalog, log)
        network, loop = train_network(tokenizer, network, plan.train, val, tuning, scheme, log=log)
    network, mix = choose_weight_mix(tokenizer, network, str(base_dir), val, tuning, scheme, log)
    return tokenizer, network, TrainingHistory(loop, stage, plan.catalog_plan, mix, sources=plan.sources.to_dict())


def refit_with_validation(base_dir: Path, plan: TrainingPlan, tuning: FinetuneSettings, scheme: LabelScheme,
                          share: float, log: Callable[[str], None] = print) -> tuple[PreTrainedModel, RefitHistory]:
    """`finetune.refit`: train the starting network again on the training pairs and the validation pairs for
    `tuning.epochs` epochs, keep the last and mix it with the base at the `share` validation chose; returns (network,
    history). Its validation nDCG is in-sample, logged only."""
    val = plan.parts["val"]
    tokenizer, network, _ = starting_network(str(base_dir), tuning, plan.catalog, log)
    both = plus_judged(plan.train, val)
    network, loop = train_network(tokenizer, network, both, val, tuning, scheme, log=log, keep_last=True)
    return apply_weight_mix(network, str(base_dir), share), RefitHistory(len(both), loop.epochs, loop.train_seconds,
                                                                         share)


# ----------------------------------------------------------------------------- the new version
@dataclass
class NewVersion:
    """What the compute step made: the version's files (network, tokenizer, card, split, BM25 statistics), its
    training history and whether to promote it."""

    tokenizer: Any
    network: PreTrainedModel
    card: ModelCard
    split: str  # the split file: the queries of each split
    lexical: Bm25Stats | None  # the frozen BM25 statistics the card's lexical weight scores with
    history: TrainingHistory
    train_pairs: int
    # the base checkpoint as a version of its own, to promote when this one is not and nothing is promoted yet
    fallback: BaseVersion | None = None

    @property
    def extra_files(self) -> dict[str, str | bytes]:
        """The version's files besides weights, tokenizer and card: its split, and its BM25 statistics when used
        (hashed tokens, udfs.lexical.LEXICAL_NPZ_FILE)."""
        lexical = {LEXICAL_NPZ_FILE: self.lexical.to_npz()} if self.card.lexical_weight and self.lexical else {}
        return {SPLIT_FILE: self.split, **lexical}

    @property
    def name(self) -> str:
        return self.card.version

    @property
    def promoted(self) -> bool:
        return self.card.promoted

    @property
    def why(self) -> str:
        return str(self.card.promotion["decision"])

    @property
    def pairs_per_second(self) -> float:
        """Training pairs per second of the training loop (every epoch run)."""
        return self.train_pairs * len(self.history.loop.epochs) / max(self.history.train_seconds, 1e-9)


def new_version(settings: Settings, run_id: str, base_dir: Path, plan: TrainingPlan, bm25_stats: Bm25Stats | None,
                promoted: LoadedModel | None, log: Callable[[str], None] = print,
                now: dt.datetime | None = None) -> NewVersion:
    """Train, choose the BM25 weight (given `bm25_stats`), calibrate on validation, evaluate on the held-out test
    queries and decide the promotion against the zero-shot base and the `promoted` version."""
    tuning, scheme, parts = settings.finetune, settings.labels.active, plan.parts
    tokenizer, network, history = fine_tune(base_dir, plan, tuning, scheme, log)
    val = parts["val"]
    val_logits = predict_logits(tokenizer, network, val, tuning.max_length, tuning.kind)
    lexical: tuple[float, Bm25Stats | None] = (0.0, None)
    if bm25_stats is not None:
        val_bm25 = bm25_pair_scores(bm25_stats, val.query_norm.tolist(), val.product_text.tolist())
        choice = choose_lexical_weight(val, val_logits, val_bm25, tuning, scheme, log)
        history = dataclasses.replace(history, lexical=dataclasses.replace(choice, statistics=bm25_stats.describe()))
        lexical = (history.lexical_weight, bm25_stats)
        val_logits = predict_logits(tokenizer, network, val, tuning.max_length, tuning.kind, lexical)
    calibration = calibrate_on_validation(val_logits, val.grade.to_numpy(), scheme, settings.audit.target_precision)
    if tuning.refit:  # calibrated above on the scores of a model that never saw the validation pairs
        network, refit = refit_with_validation(base_dir, plan, tuning, scheme, history.weight_mix.share, log)
        history = dataclasses.replace(history, refit=refit)
    test_logits = predict_logits(tokenizer, network, parts["test"], tuning.max_length, tuning.kind, lexical)
    test_scores = calibrate(test_logits, calibration.platt["a"], calibration.platt["b"])
    test_metrics = evaluate(parts["test"], test_scores, calibration.threshold, scheme.relevant_min_grade, scheme.gain,
                            list(settings.audit.ks))

    zero_shot_val = zero_shot_scores(base_dir, val.query_norm.tolist(), val.product_text.tolist(),
                                     settings.audit.zero_shot_max_length)
    rivals = validation_rivals(val, zero_shot_val, promoted, tuning, scheme)
    refusal = validation_refusal(val, scheme, tuning.min_validation_queries)
    promote, why = promotion_gate(gate_scores(val, val_logits, tuning.eval_k, scheme), rivals, tuning, refusal)
    now = now or dt.datetime.now(dt.timezone.utc)
    card = model_card(settings, version_name(tuning, plan.fingerprint, now), now, run_id, plan.fingerprint, parts,
                      history, calibration, test_metrics, rivals, promote, why)
    fallback = None
    if not promote and promoted is None and tuning.promote and calibratable(val, scheme):
        fallback = base_version(settings, run_id, base_dir, parts, zero_shot_val, plan.fingerprint,
                                f"nothing was promoted and {card.version} was not ({why})", now)
    return NewVersion(tokenizer, network, card, split_queries(parts), bm25_stats, history, len(plan.train), fallback)


# ----------------------------------------------------------------------------- the base, when nothing has won
@dataclass
class BaseVersion:
    """The base checkpoint saved as a version of its own (card role `base`): zero-shot, calibrated and thresholded on
    the same validation pairs as a fine-tuned version, so a team whose fine-tuning has not won yet still scores."""

    tokenizer: Any
    network: PreTrainedModel
    card: ModelCard
    split: str

    @property
    def extra_files(self) -> dict[str, str]:
        return {SPLIT_FILE: self.split}


def calibratable(val: pd.DataFrame, scheme: LabelScheme) -> bool:
    """Whether the validation pairs hold relevant and irrelevant pairs (what a calibration is fitted on)."""
    relevant = val.grade.to_numpy() >= scheme.relevant_min_grade
    return bool(len(relevant)) and relevant.min() != relevant.max()


def base_version(settings: Settings, run_id: str, base_dir: Path, parts: Splits, zero_shot_val: np.ndarray,
                 fingerprint: str, why: str, now: dt.datetime) -> BaseVersion:
    """The base checkpoint as a servable version: its zero-shot logits on validation (`zero_shot_val`) calibrated and
    thresholded as a fine-tuned version's are, its held-out test metrics measured the same way."""
    scheme, max_length = settings.labels.active, settings.audit.zero_shot_max_length
    calibration = calibrate_on_validation(zero_shot_val, parts["val"].grade.to_numpy(), scheme,
                                          settings.audit.target_precision)
    test = parts["test"]
    test_scores = calibrate(zero_shot_scores(base_dir, test.query_norm.tolist(), test.product_text.tolist(), max_length),
                            calibration.platt["a"], calibration.platt["b"])
    test_metrics = evaluate(test, test_scores, calibration.threshold, scheme.relevant_min_grade, scheme.gain,
                            list(settings.audit.ks))
    card = base_model_card(settings, f"base-{now.strftime('%Y%m%d%H%M%S')}-{fingerprint[:8]}", now, run_id,
                           fingerprint, parts, calibration, test_metrics, why)
    tokenizer, network = load_network(base_dir, "cpu", BI_ENCODER)
    return BaseVersion(tokenizer, network, card, split_queries(parts))


def train_new_version(inputs: FinetuneInputs, settings: Settings, run_id: str, log: Callable[[str], None] = print,
                      now: dt.datetime | None = None) -> NewVersion:
    """The whole compute step of `finetune`: plan the split and the catalog stage, train, choose, calibrate,
    evaluate, and make the new version with its card and promotion decision (nothing is written)."""
    plan = plan_training(inputs, settings, log)
    return new_version(settings, run_id, inputs.base_dir, plan, inputs.bm25, inputs.promoted, log, now)
