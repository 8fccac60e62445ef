"""What fine-tuning records about itself, typed: each stage hands the next a record, and the model card's `training`
is the whole history's `to_dict()` (the keys and values cards have always had)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# purity: no pyspark torch transformers


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of the training loop: its mean training loss and the validation nDCG@k after it."""

    epoch: int  # from 1
    train_loss: float
    val_ndcg: float
    seconds: float  # since the loop started
    k: int = 10  # the validation metric is nDCG@k (finetune.eval_k)

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "train_loss": self.train_loss, f"val_ndcg@{self.k}": self.val_ndcg,
                "seconds": self.seconds}


@dataclass(frozen=True)
class LoopHistory:
    """What one run of the training loop did (relevance.training.loop.train_network)."""

    epochs: tuple[EpochRecord, ...]
    best_val_ndcg: float  # the validation nDCG of the epoch kept (the last with keep_last)
    train_seconds: float
    autocast: str  # the forward pass's autocast dtype: bfloat16, or fp32 without autocast
    processes: int | None = None  # data-parallel processes; None: one process (not recorded)


@dataclass(frozen=True)
class CatalogPlan:
    """How the catalog sample served the bi-encoder's catalog stage (relevance.training.pipeline.catalog_batches)."""

    sampled_products: int = 0
    with_pseudo_query: int = 0  # sampled products whose category or product type gives a pseudo-query
    coverage: float = 0.0  # with_pseudo_query / sampled_products, rounded to 4 digits
    skipped: str | None = None  # why the stage was skipped (too few products say what they are); None: it was not

    def to_dict(self) -> dict[str, Any]:
        plan: dict[str, Any] = {"sampled_products": self.sampled_products, "with_pseudo_query": self.with_pseudo_query,
                                "coverage": self.coverage}
        return {**plan, **({"skipped": self.skipped} if self.skipped is not None else {})}


@dataclass(frozen=True)
class CatalogStage:
    """What the catalog stage trained (relevance.training.catalog_training.train_on_catalog); 0 steps: it did not."""

    steps: int = 0
    pairs: int | None = None
    loss_first_steps: float | None = None  # mean in-batch loss of the first 20 steps
    loss_last_steps: float | None = None  # ... and of the last 20
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, **{name: value for name, value in (
            ("pairs", self.pairs), ("loss_first_steps", self.loss_first_steps),
            ("loss_last_steps", self.loss_last_steps), ("seconds", self.seconds)) if value is not None}}


@dataclass(frozen=True)
class WeightMix:
    """The base/fine-tuned weight mix validation chose (relevance.training.weights.choose_weight_mix)."""

    share: float = 1.0  # the fine-tuned share; 1: the fine-tuned weights as they are
    val_ndcg: float | None = None  # None: no mix was weighed (a cross-encoder, or weight_mixes (1,))
    val_ndcg_by_share: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        by_share = {"val_ndcg_by_share": self.val_ndcg_by_share} if self.val_ndcg_by_share is not None else {}
        return {"share": self.share, "val_ndcg": self.val_ndcg, **by_share}


@dataclass(frozen=True)
class LexicalChoice:
    """The BM25 weight validation chose (relevance.training.weights.choose_lexical_weight)."""

    weight: float
    val_ndcg: float
    val_ndcg_by_weight: dict[str, float]
    # the frozen BM25 statistics (udfs.lexical.Bm25Stats.describe): documents, tokens kept, the min_df they were
    # pruned at (finetune.lexical_min_df, raised to fit finetune.lexical_max_tokens) and the largest idf change
    statistics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "val_ndcg": self.val_ndcg, "val_ndcg_by_weight": self.val_ndcg_by_weight,
                **({"statistics": self.statistics} if self.statistics else {})}


@dataclass(frozen=True)
class RefitHistory:
    """The refit on train + validation pairs (`finetune.refit`); its validation nDCG is in-sample, logged only."""

    pairs: int
    epochs: tuple[EpochRecord, ...]
    train_seconds: float
    share: float  # the weight mix applied after it

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "epochs": [e.to_dict() for e in self.epochs], "train_seconds": self.train_seconds,
                "share": self.share}


@dataclass(frozen=True)
class GateScores:
    """What the promotion gate compares, on the validation pairs: mean nDCG@eval_k over queries, and the average
    precision of the pairs' relevance (what the audits report besides nDCG)."""

    ndcg: float
    average_precision: float


@dataclass(frozen=True)
class Rivals:
    """What a new version must beat, on its validation pairs (relevance.training.promotion)."""

    zero_shot: GateScores  # the base model, zero-shot
    promoted: GateScores | None = None  # the promoted version; None: none yet
    promoted_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"zero_shot": self.zero_shot.ndcg, "zero_shot_average_precision": self.zero_shot.average_precision,
                "promoted_ndcg": None if self.promoted is None else self.promoted.ndcg,
                "promoted_average_precision": None if self.promoted is None else self.promoted.average_precision,
                "promoted_version": self.promoted_version}


@dataclass(frozen=True)
class TrainingHistory:
    """The whole fine-tuning of a version: the catalog stage, the training loop, the weight mix and BM25 weight
    validation chose, and the refit; the model card's `training` is its `to_dict()`."""

    loop: LoopHistory
    catalog: CatalogStage = field(default_factory=CatalogStage)
    catalog_plan: CatalogPlan = field(default_factory=CatalogPlan)
    weight_mix: WeightMix = field(default_factory=WeightMix)
    lexical: LexicalChoice | None = None
    refit: RefitHistory | None = None
    sources: dict[str, Any] | None = None  # what trained the network (relevance.training.sources.SourcesRecord)

    @property
    def best_val_ndcg(self) -> float:
        """The validation nDCG of what the version serves: with the BM25 weight chosen, else the weight mix chosen,
        else the best epoch's (the promotion gate's `new`)."""
        if self.lexical is not None:
            return self.lexical.val_ndcg
        if self.weight_mix.val_ndcg is not None:
            return self.weight_mix.val_ndcg
        return self.loop.best_val_ndcg

    @property
    def lexical_weight(self) -> float:
        return self.lexical.weight if self.lexical is not None else 0.0

    @property
    def train_seconds(self) -> float:
        """The training loop's seconds (the catalog stage and the refit not included)."""
        return self.loop.train_seconds

    @property
    def catalog_seconds(self) -> float:
        return self.catalog.seconds or 0.0

    def to_dict(self) -> dict[str, Any]:
        """The card's `training`: epochs, best_val_ndcg, train_seconds, autocast, [processes], catalog (plan and
        stage), weight_mix, [lexical], [refit], [sources]."""
        out: dict[str, Any] = {"epochs": [e.to_dict() for e in self.loop.epochs], "best_val_ndcg": self.best_val_ndcg,
                               "train_seconds": self.loop.train_seconds, "autocast": self.loop.autocast}
        if self.loop.processes is not None:
            out["processes"] = self.loop.processes
        out["catalog"] = {**self.catalog_plan.to_dict(), **self.catalog.to_dict()}
        out["weight_mix"] = self.weight_mix.to_dict()
        if self.lexical is not None:
            out["lexical"] = self.lexical.to_dict()
        if self.refit is not None:
            out["refit"] = self.refit.to_dict()
        if self.sources is not None:
            out["sources"] = self.sources
        return out
