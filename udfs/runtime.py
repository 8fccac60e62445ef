"""The scoring runtime's rules, in one place and without torch: which precisions exist and where they run, which
CUDA ordinal Spark's GPU address is in this process, and how large a forward pass is on each device.

udfs.model (device per task, loading), udfs.scorer (batches), udfs.spark_udf (the worker cache) and jobs/score
(the driver's report) all follow these.
"""

from __future__ import annotations

# purity: no pyspark torch transformers

PRECISIONS = ("fp32", "int8", "bf16", "fp16")
# int8: CPU only, ONNX Runtime with dynamically quantized weights (udfs.quantized).
# bf16 / fp16: GPU only, fp32 weights run under torch.autocast; on a CPU task (device auto without a GPU) fp32.
HALF_PRECISION_NAMES = ("bf16", "fp16")

# (tokens, rows) per forward pass by device type. Token-budget batches keep padding low; on CPU small batches keep
# activations in cache: 2,048 tokens scored 10-18% more pairs/s than 8,192 on the demo traffic (2 cores, fp32);
# a GPU wants large ones.
DEFAULT_BATCH_BUDGET = {"cpu": (2048, 64), "cuda": (32768, 1024)}

# Model versions a Python worker keeps loaded at once (least recently used dropped first).
MAX_WORKER_MODELS = 2


def check_precision(precision: str, device: str) -> None:
    """ValueError unless `precision` is one of PRECISIONS and runs on `device` (int8: `cpu`, or `auto` resolved to CPU)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8" and device not in ("cpu", "auto"):
        raise ValueError(f"precision 'int8' runs on CPU only (ONNX Runtime), not on device {device!r}: "
                         "use device cpu or precision fp32")
    if precision in HALF_PRECISION_NAMES and device == "cpu":
        raise ValueError(f"precision {precision!r} runs on GPU only (CUDA autocast), not on device 'cpu': "
                         "use device cuda or auto, or precision fp32 / int8")


def effective_precision(precision: str, device_type: str) -> str:
    """The precision a task on `device_type` computes in: a half precision without a GPU falls back to fp32."""
    return "fp32" if precision in HALF_PRECISION_NAMES and device_type != "cuda" else precision


def device_type(preference: str, cuda_available: bool, gpu_assigned: bool) -> str:
    """`cpu` or `cuda`: what a scoring task runs on. `auto`: the GPU Spark assigned to the task, CPU when none is;
    `cuda`: a GPU (the assigned one, else the first visible: local mode has no GPU scheduling); `cpu`: the CPU.
    Without CUDA every preference is the CPU."""
    if preference == "cpu" or not cuda_available:
        return "cpu"
    return "cuda" if gpu_assigned or preference == "cuda" else "cpu"


def gpu_ordinal(address: str, visible_devices: str | None, device_count: int) -> int:
    """The CUDA ordinal, in this process, of the GPU Spark assigned by `address` (the cluster's physical index).

    Where the cluster manager isolates GPUs (YARN and Kubernetes with GPU isolation, standalone workers given
    CUDA_VISIBLE_DEVICES), the process sees only its own GPUs, renumbered from 0: the address is found in
    CUDA_VISIBLE_DEVICES, or, when that lists UUIDs or is unset, a single visible GPU is the one assigned.
    Without isolation the address is the ordinal."""
    visible = [d.strip() for d in (visible_devices or "").split(",") if d.strip()]
    if address in visible:
        return visible.index(address)
    if not address.isdigit():
        raise ValueError(f"GPU address {address!r} is not an index (the discovery script must print indices)")
    if int(address) < device_count:
        return int(address)
    if device_count == 1:
        return 0
    raise ValueError(f"Spark assigned GPU {address}, but this process sees {device_count} GPU(s) "
                     f"(CUDA_VISIBLE_DEVICES={visible_devices!r}): the discovery script and the isolation disagree")


def batch_budget(device_type: str, batch_tokens: int | None, max_batch_rows: int | None) -> tuple[int, int]:
    """(tokens, rows) per forward pass: the configured ones, else the default of the device type."""
    tokens, rows = DEFAULT_BATCH_BUDGET.get(device_type, DEFAULT_BATCH_BUDGET["cpu"])
    return batch_tokens or tokens, max_batch_rows or rows
