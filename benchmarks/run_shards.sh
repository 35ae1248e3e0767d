#!/usr/bin/env bash
# Run the missing shards of one full-test-set series (benchmarks/results/shards/README.md), one after another;
# a shard already on disk is skipped, so the script resumes where a previous session stopped.
#   bash benchmarks/run_shards.sh MODEL METHOD PRECISION STEPS [N=20] [THREADS=1]
# e.g. bash benchmarks/run_shards.sh resnet20 msat fixed 128
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 method=$2 precision=$3 steps=$4 n=${5:-20} threads=${6:-1}
py=${PYTHON:-.venv/bin/python}
for k in $(seq 1 "$n"); do
  out=benchmarks/results/shards/${model}_full_T${steps}_${precision}_${method}_s${k}of${n}
  [ -f "$out.json" ] && continue
  echo "shard $k/$n -> $out.json" >&2
  "$py" benchmarks/accuracy.py --model "$model" --samples 0 --steps "$steps" --methods "$method" \
    --precision "$precision" --threads "$threads" --batch-size 125 --shard "$k/$n" --out "$out"
done
