#!/usr/bin/env bash
# Run the missing shards of one full-test-set series (benchmarks/results/shards/README.md), one after another;
# a shard already on disk is skipped, so the script resumes where a previous session stopped.
#   bash benchmarks/run_shards.sh MODEL METHOD PRECISION STEPS [N=20] [THREADS=1] [EXTRA accuracy.py ARGS...]
# e.g. bash benchmarks/run_shards.sh resnet20 msat fixed 128
#      bash benchmarks/run_shards.sh resnet20 const float 64 20 1 --synapse-dtype float32
# BATCH_SIZE sets the reference batch (default 25: ≈ 1.5× faster than 125 on this CPU because the tensors stay in
# cache; results do not depend on it). Several copies may run the same series at once (one per core): each shard
# is claimed first by an atomic mkdir under ${SHARD_CLAIMS:-/tmp/msat-shard-claims}, so no two copies run the same
# shard. A claim left by a killed run makes later copies skip that shard until its directory is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 method=$2 precision=$3 steps=$4 n=${5:-20} threads=${6:-1}
extra=("${@:7}")
py=${PYTHON:-.venv/bin/python}
claims=${SHARD_CLAIMS:-/tmp/msat-shard-claims}
mkdir -p "$claims"
for k in $(seq 1 "$n"); do
  name=${model}_full_T${steps}_${precision}_${method}_s${k}of${n}
  out=benchmarks/results/shards/$name
  [ -f "$out.json" ] && continue
  mkdir "$claims/$name" 2>/dev/null || continue
  echo "shard $k/$n -> $out.json" >&2
  "$py" benchmarks/accuracy.py --model "$model" --samples 0 --steps "$steps" --methods "$method" \
    --precision "$precision" --threads "$threads" --batch-size "${BATCH_SIZE:-25}" --shard "$k/$n" --out "$out" \
    "${extra[@]}"
done
