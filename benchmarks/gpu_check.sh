#!/usr/bin/env bash
# GPU check (issue 7), one script for a lent GPU machine, under 8 minutes on one H100/H200, no installs, no
# network: the gpu-marked tests, then one table (benchmarks/check.py --device cuda): DARTS first/second-order
# step time and peak memory (pflnas vs NNI 3.0 when NNI_PYTHON has the nni extra), the projected full
# cell_v1 search time from a real 2-epoch search, R50-hybrid retrain images/s vs a timm-style loop, and
# `pflnas profile` of R50 / R50-max / R50-hybrid; the table is also written as OUT_DIR/check.json.
# Usage: PFLNAS_DATA=path/to/cifar10 benchmarks/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
$py -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider || echo "gpu tests FAILED (continuing)"
$py benchmarks/check.py --device cuda --out "$out" ${NNI_PYTHON:+--nni-python "$NNI_PYTHON"} \
  --search-epochs "${SEARCH_EPOCHS:-2}"
