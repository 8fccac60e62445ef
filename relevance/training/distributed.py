"""Data-parallel fine-tuning: TorchDistributor processes in local mode (CPU, gloo), each running the training loop
on its share of every epoch's batches."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from relevance.settings import FinetuneSettings, LabelScheme
from relevance.training.catalog_training import starting_network
from relevance.training.history import CatalogStage, LoopHistory
from relevance.training.loop import train_network
from udfs.model import load_network

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _train_process(base_dir: str, train: pd.DataFrame, val: pd.DataFrame, settings: FinetuneSettings,
                   scheme: LabelScheme, weights_path: str,
                   catalog_batches: list[list[tuple[str, str]]]) -> tuple[LoopHistory, CatalogStage]:
    """One TorchDistributor process: DDP over gloo; rank 0 saves the best weights to `weights_path`."""
    torch.distributed.init_process_group("gloo")
    try:
        rank = torch.distributed.get_rank()
        log = print if rank == 0 else (lambda _: None)
        # the same initial head and catalog stage on every rank (and DDP starts every rank from rank 0's weights)
        tokenizer, network, catalog = starting_network(base_dir, settings, catalog_batches, log)
        network, history = train_network(tokenizer, network, train, val, settings, scheme, log=log)
        if rank == 0:
            torch.save(network.state_dict(), weights_path)
        return history, catalog
    finally:
        torch.distributed.destroy_process_group()


def train_distributed(base_dir: str, train: pd.DataFrame, val: pd.DataFrame, settings: FinetuneSettings,
                      scheme: LabelScheme, processes: int, catalog_batches: list[list[tuple[str, str]]]
                      ) -> tuple[Any, PreTrainedModel, LoopHistory, CatalogStage]:
    """Data-parallel fine-tuning with `pyspark.ml.torch.distributor.TorchDistributor` in local mode (the processes
    run on the driver's machine, CPU, gloo): each process trains on its share of every epoch's batches, so the
    effective batch is `batch_size` x processes. Returns (tokenizer, best network, rank 0's loop history with the
    process count, its catalog stage)."""
    from pyspark.ml.torch.distributor import TorchDistributor

    with tempfile.TemporaryDirectory(prefix="finetune-ddp-") as work:
        weights_path = os.path.join(work, "best.pt")
        result = TorchDistributor(num_processes=processes, local_mode=True, use_gpu=False).run(
            _train_process, base_dir, train, val, settings, scheme, weights_path, catalog_batches)
        tokenizer, network = load_network(base_dir, "cpu", settings.kind)
        network.load_state_dict(torch.load(weights_path))
    network.eval()
    assert result is not None  # TorchDistributor returns rank 0's result: its histories
    history, catalog = result
    return tokenizer, network, dataclasses.replace(history, processes=processes), catalog
