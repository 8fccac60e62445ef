#!/usr/bin/env bash
# Two nightlies of different days at once on a new local warehouse (a tiny random model promoted by hand, small demo
# data): both must exit 0. Usage: bash bench/concurrent_nightlies.sh [folder]  (default /tmp/concurrent-nightlies)
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-/tmp/concurrent-nightlies}; W=$DIR/warehouse; M=$DIR/models
rm -rf "$DIR" && mkdir -p "$DIR"
.venv/bin/python -c "
from pathlib import Path; from bench.models import make_tiny_model_version
make_tiny_model_version(Path('$M')); Path('$M/PROMOTED').write_text('tiny-test\n')"
SETS=(--set "warehouse.root=$W" --set "model.models_root=$M" --set "spark.master=local[1]"
      --set generate.n_products=600 --set generate.searches_per_day=400 --set generate.judged_queries=60)
.venv/bin/python -m jobs generate --ds 2025-01-07 "${SETS[@]}" > "$DIR/generate.log" 2>&1 || exit 1
start=$(date +%s)
.venv/bin/python -m jobs nightly --ds 2025-01-06 "${SETS[@]}" > "$DIR/nightly-06.log" 2>&1 & first=$!
.venv/bin/python -m jobs nightly --ds 2025-01-07 "${SETS[@]}" > "$DIR/nightly-07.log" 2>&1 & second=$!
wait $first; a=$?; wait $second; b=$?
echo "exit codes $a $b after $(( $(date +%s) - start )) s"; tail -n 1 "$DIR"/nightly-0*.log
[ "$a" = 0 ] && [ "$b" = 0 ]
