#!/usr/bin/env bash
# GPU check of the search spine, one script for a lent GPU machine (no installs, no network):
# the gpu-marked tests, the search-step benchmark (fp32 and bf16+channels_last), and a real cell_v1 search
# at the DARTS protocol for a few epochs with the full-search time projected from the measured epochs.
# Usage: PFLNAS_DATA=path/to/cifar10 benchmarks/gpu_search_check.sh [OUT_DIR] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check}
epochs=${2:-2}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
$py -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
$py benchmarks/search_step.py --device cuda --repeats 20 --warmup 5 --json "$out/step_fp32.json"
$py benchmarks/search_step.py --device cuda --repeats 20 --warmup 5 --amp --channels-last --json "$out/step_bf16.json"
$py -m pflnas search --space cell_v1 --device cuda --amp --channels-last --epochs "$epochs" \
  --set run.progress=false --out "$out/search" --overwrite
$py - "$out/search/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
times = [r["epoch_time"] for r in rows]
steady = times[1:] or times
per_epoch = sum(steady) / len(steady)
print(f"epoch times (s): {times}")
print(f"projected 50-epoch DARTS-protocol cell_v1 search: {50 * per_epoch / 60:.1f} min "
      f"({per_epoch:.1f} s/epoch, val acc after {len(rows)} epochs {rows[-1]['val_acc']:.3f})")
PY
