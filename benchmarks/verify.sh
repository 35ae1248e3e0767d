#!/usr/bin/env bash
# Lava fixed point vs reference, bit for bit (issue "vertical slice", acceptance 1):
# converts the MNIST CNN and the CIFAR-10 ResNet20 from ../shared/data with MSAT, then runs
# `msat-lava verify` on 50 MNIST test images x 64 steps and 20 CIFAR-10 test images x 64 steps.
# Reports land in benchmarks/results/verify_*.json. Usage: bash benchmarks/verify.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MSAT_SHARED_DATA:-../shared/data}
OUT=${1:-$(mktemp -d)}
BIN=.venv/bin/msat-lava
mkdir -p "$OUT" benchmarks/results
CIFAR_NORM=(--norm-mean 0.485,0.456,0.406 --norm-std 0.229,0.224,0.225)
MNIST_NORM=(--norm-mean 0.1307 --norm-std 0.3081)

$BIN convert --model tests/models.py:MnistNet --weights "$DATA/models/shrinkbench_mnistnet.pt" \
    --data "$DATA/mnist.npz" "${MNIST_NORM[@]}" --method msat --preset resnet20 --out "$OUT/mnist.net" --overwrite --quiet
$BIN convert --model tests/models.py:resnet20 --weights "$DATA/models/akamaster_resnet20-12fca82f.th" \
    --data "$DATA/cifar10.npz" "${CIFAR_NORM[@]}" --method msat --preset resnet20 --out "$OUT/resnet20.net" --overwrite --quiet

$BIN verify "$OUT/mnist.net" --data "$DATA/mnist.npz" "${MNIST_NORM[@]}" --samples 50 --steps 64 \
    --report benchmarks/results/verify_mnist_n50_T64.json --overwrite
$BIN verify "$OUT/resnet20.net" --data "$DATA/cifar10.npz" "${CIFAR_NORM[@]}" --samples 20 --steps 64 \
    --report benchmarks/results/verify_resnet20_n20_T64.json --overwrite
