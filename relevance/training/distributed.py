"""Data-parallel fine-tuning: TorchDistributor processes in local mode (CPU, gloo), each running the training loop
on its share of every epoch's batches."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from relevance.evaluation.ranking import GainSpec
from relevance.settings import FinetuneSettings
from relevance.training.catalog_training import starting_network
from relevance.training.loop import train_network
from udfs.model import load_network

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _train_process(base_dir: str, train: pd.DataFrame, val: pd.DataFrame, top_grade: int, settings: FinetuneSettings,
                   relevant_min_grade: int, gain: GainSpec, weights_path: str,
                   catalog_batches: list[list[tuple[str, str]]]) -> dict[str, Any]:
    """One TorchDistributor process: DDP over gloo; rank 0 saves the best weights to `weights_path`."""
    torch.distributed.init_process_group("gloo")
    try:
        rank = torch.distributed.get_rank()
        log = print if rank == 0 else (lambda _: None)
        # the same initial head and catalog stage on every rank (and DDP starts every rank from rank 0's weights)
        tokenizer, network, catalog = starting_network(base_dir, settings, catalog_batches, log)
        network, history = train_network(tokenizer, network, train, val, top_grade, settings, relevant_min_grade,
                                         gain, log=log)
        history["catalog"] = catalog
        if rank == 0:
            torch.save(network.state_dict(), weights_path)
        return history
    finally:
        torch.distributed.destroy_process_group()


def train_distributed(base_dir: str, train: pd.DataFrame, val: pd.DataFrame, top_grade: int, settings: FinetuneSettings,
                      relevant_min_grade: int, gain: GainSpec, processes: int,
                      catalog_batches: list[list[tuple[str, str]]]) -> tuple[Any, PreTrainedModel, dict[str, Any]]:
    """Data-parallel fine-tuning with `pyspark.ml.torch.distributor.TorchDistributor` in local mode (the processes
    run on the driver's machine, CPU, gloo): each process trains on its share of every epoch's batches, so the
    effective batch is `batch_size` x processes. Returns (tokenizer, best network, history)."""
    from pyspark.ml.torch.distributor import TorchDistributor

    with tempfile.TemporaryDirectory(prefix="finetune-ddp-") as work:
        weights_path = os.path.join(work, "best.pt")
        history = TorchDistributor(num_processes=processes, local_mode=True, use_gpu=False).run(
            _train_process, base_dir, train, val, top_grade, settings, relevant_min_grade, gain, weights_path,
            catalog_batches)
        tokenizer, network = load_network(base_dir, "cpu", settings.kind)
        network.load_state_dict(torch.load(weights_path))
    network.eval()
    assert history is not None  # TorchDistributor returns rank 0's result: its history
    return tokenizer, network, {**history, "processes": processes}
