#!/usr/bin/env bash
# Spark GPU discovery script (spark.{driver,executor,worker}.resource.gpu.discoveryScript):
# prints the GPUs this executor may use as {"name": "gpu", "addresses": ["0", "1", ...]}.
# Under CUDA_VISIBLE_DEVICES (GPU isolation by the cluster manager) it lists those devices' indices,
# which udfs.model.gpu_ordinal maps back to this process's CUDA ordinals.
set -euo pipefail
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  addresses=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | sed 's/^ *//;s/ *$//' | grep -E '^[0-9]+$' | sed 's/.*/"&"/' | paste -sd, -)
else
  addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | sed 's/^ *//;s/ *$//' | sed 's/.*/"&"/' | paste -sd, - || true)
fi
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
