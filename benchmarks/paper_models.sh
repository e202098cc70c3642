#!/usr/bin/env bash
# The paper's speed claim, measured on this machine (Han et al., ICLR 2022: max-pool saves real time,
# depthwise conv saves parameters and FLOPs but little time):
#   1. R50 vs R50-max vs R50-hybrid, and ViT-S / PiT-S with and without the max-pool token mixer
#      (params, MACs, latency at batch 1, throughput at batch $BATCH, peak memory; ratios to the first row);
#   2. every candidate op of resnet50_block and vit_s_mixer at the shapes those networks use, forward and
#      forward+backward, with the ratio to conv_3x3 (attention for the mixers).
# Usage: benchmarks/paper_models.sh [--device cuda] [--amp] [--channels-last] [--threads N]
# Environment: BATCH (default 16), REPEATS (default 20), PFLNAS (default .venv/bin/pflnas).
set -euo pipefail
cd "$(dirname "$0")/.."
PFLNAS="${PFLNAS:-.venv/bin/pflnas}"
BATCH="${BATCH:-16}"
REPEATS="${REPEATS:-20}"
A=experiments/archs
COMMON=(--batch-size "$BATCH" --repeats "$REPEATS" "$@")

echo "== R50 family (ImageNet 224x224) =="
$PFLNAS profile --arch $A/r50.json $A/r50_max.json $A/r50_hybrid.json --dataset imagenet "${COMMON[@]}"
echo
echo "== ViT-S / PiT-S, attention only vs alternating max-pool mixer (ImageNet 224x224) =="
$PFLNAS profile --arch $A/vit_s.json $A/vit_s_max.json $A/pit_s.json $A/pit_s_max.json --dataset imagenet \
    "${COMMON[@]}"
echo
echo "== per-op table: resnet50_block =="
$PFLNAS profile --ops --space resnet50_block "${COMMON[@]}"
echo
echo "== per-op table: vit_s_mixer =="
$PFLNAS profile --ops --space vit_s_mixer "${COMMON[@]}"
