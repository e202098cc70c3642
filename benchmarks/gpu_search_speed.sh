#!/usr/bin/env bash
# Search speed on a lent GPU (issue 17), one call under 8 minutes on one H200, no installs, no network:
#   * the first-order DARTS step eager / graphed (run.cuda_graph) in every layout (per_edge, per_source,
#     batched) at the DARTS settings (cell_v1, C=16, 8 cells, batch 64, fp32);
#   * darts2 batched graphed (the target: second order <= 2.5x first order, batched graphed);
#   * bf16 + channels_last batched graphed;
#   * 3 real search epochs (`pflnas search`) of the batched layout under run.cuda_graph on $PFLNAS_DATA, and
#     the projected 50-epoch search time from their epoch_time (metrics.jsonl);
#   * issue 18: 10 seeds as one grouped network (`search --seeds`) against 10 separate supernets, graphed
#     (benchmarks/seed_batch.py, rows in seed_batch.json);
#   * last (compiling is slow): graphed + torch.compile in every layout, as time allows: the whole forward
#     (run.compile) and, for batched, each cell compiled on its own (search_step.py --compile cells).
# Every stage runs under `timeout`, capped by what is left of BUDGET_S (default 450 s); a failing or skipped
# stage prints one line and the script goes on. OUT_DIR gets four files: rows.json (every row, tagged with
# its stage; the darts2/darts ratio; the projection; the failed stages), log.txt (every stage's output),
# search_metrics.jsonl and seed_batch.json; scratch files go to a temporary folder.
# Usage: PFLNAS_DATA=path/to/cifar10 benchmarks/gpu_search_speed.sh [OUT_DIR]
#        On the lent machine (only the repo travels): copy the archive into an ignored folder of the checkout
#        (`mkdir -p .gpu-data && cp "$PFLNAS_DATA" .gpu-data/ && echo /.gpu-data/ >>.git/info/exclude`), carry
#        .gpu-data, and run `PFLNAS_DATA=.gpu-data/cifar10-jpeg.tar.gz benchmarks/gpu_search_speed.sh $OUT`
#        with timeout_s 480 (the files in OUT_DIR come back).
#        benchmarks/gpu_search_speed.sh --dry-run [OUT_DIR]   (or SMOKE=1): on the CPU with tiny settings
#        (no graphs: they need CUDA; the compile stage of the batched layout only), to test the script.
#        COMPILE_STAGES="batched:forward batched:cells ..." picks the compiled stages ("" for none),
#        COMPILE_CAP their time limit each (default 150 s; inductor on a few CPU cores needs minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=${SMOKE:-0}
if [[ ${1:-} == --dry-run ]]; then
  smoke=1
  shift
fi
if [[ ${1:-} == -* ]]; then
  echo "gpu_search_speed.sh: unknown option $1 (usage: [--dry-run] [OUT_DIR])" >&2
  exit 2
fi
out=${1:-runs/gpu-search-speed}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-search-speed.XXXXXX")
trap 'rm -rf "$work"' EXIT
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
budget=${BUDGET_S:-450}
log=$out/log.txt
: >"$log"
rm -f "$out/rows.json" "$out/search_metrics.jsonl"  # nothing stale from an earlier run
: >"$work/failed.txt"

if [[ $smoke == 1 ]]; then
  device=cpu
  shape=(--batch-size 4 --init-channels 4 --layers 3 --repeats 1 --warmup 1)
  graph=()  # CUDA graphs need a GPU: the smoke run measures the same stages eagerly
  search_sets=(space.init_channels=4 space.layers=3 data.subset=64 data.batch_size=8 data.eval_limit=16
    run.threads=1)
  compile_stages=${COMPILE_STAGES-batched:forward}
else
  device=cuda
  shape=(--batch-size 64 --init-channels 16 --layers 8 --repeats 10 --warmup 3)
  graph=(--cuda-graph)
  search_sets=(run.cuda_graph=true)
  compile_stages=${COMPILE_STAGES-batched:forward batched:cells per_source:forward per_edge:forward}
  if [[ -z ${PFLNAS_DATA:-} ]]; then
    echo "gpu_search_speed.sh: set PFLNAS_DATA to the CIFAR-10 archive or folder" >&2
    exit 2
  fi
fi
if ! $py - "$device" <<'EOF' | tee -a "$log"; then
import sys, torch
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_search_speed.sh: no CUDA device visible (on a CPU: --dry-run)")
print("torch", torch.__version__, torch.cuda.get_device_name() if sys.argv[1] == "cuda" else "cpu")
EOF
  exit 2
fi

# stage NAME CAP COMMAND...: run COMMAND under timeout (CAP seconds, at most what the budget has left),
# its output into the log; on failure one line, and the script goes on.
stage() {
  local name=$1 cap=$2 left limit rc=0
  shift 2
  left=$((budget - SECONDS))
  limit=$((cap < left ? cap : left))
  if ((limit < 10)); then
    echo "$name: skipped (${left}s of the ${budget}s budget left)" | tee -a "$work/failed.txt"
    return 0
  fi
  echo "== $name (limit ${limit}s)" >>"$log"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$work/$name.log" 2>&1 || rc=$?
  cat "$work/$name.log" >>"$log"
  if ((rc == 124 || rc == 137)); then
    echo "$name: timed out after ${limit}s" | tee -a "$work/failed.txt"
  elif ((rc != 0)); then
    echo "$name: failed (exit code $rc): $(grep -v '^\s*$' "$work/$name.log" | tail -n 1)" | tee -a "$work/failed.txt"
  else
    echo "$name: done in $((SECONDS - t0))s"
  fi
}

# step NAME CAP ARGS...: one benchmarks/search_step.py run, its rows in $work/NAME.json
step() {
  local name=$1 cap=$2
  shift 2
  stage "$name" "$cap" "$py" benchmarks/search_step.py --device "$device" "${shape[@]}" --json "$work/$name.json" "$@"
}

for layout in per_edge per_source batched; do
  step "darts_${layout}_eager_graphed" 90 --configs "darts:$layout" "${graph[@]}" ${graph[@]:+--compare}
done
step darts2_batched_graphed 60 --configs darts2:batched "${graph[@]}"
step darts_batched_bf16_channels_last_graphed 45 --configs darts:batched --amp --channels-last "${graph[@]}"

sets=()
for s in space.layout=batched run.progress=false "${search_sets[@]}"; do sets+=(--set "$s"); done
# the data: --data-dir's default, $PFLNAS_DATA
stage search_batched_3_epochs 150 "$py" -m pflnas search --space cell_v1 --strategy darts --device "$device" \
  --epochs 3 --out "$work/search" "${sets[@]}"
if [[ -f $work/search/metrics.jsonl ]]; then
  cp "$work/search/metrics.jsonl" "$out/search_metrics.jsonl"
fi

# pflnas search --seeds: 10 seeds in one grouped network against 10 separate supernets (issue 18's target:
# at most 2x one seed's step, graphed); its rows go to $out/seed_batch.json, its table to the log
if [[ $smoke == 1 ]]; then seed_counts=1,2; else seed_counts=1,10; fi
stage seeds_grouped_graphed 90 "$py" benchmarks/seed_batch.py --seeds "$seed_counts" --device "$device" \
  "${shape[@]}" "${graph[@]}" --json "$out/seed_batch.json"

for item in $compile_stages; do  # layout:forward (run.compile) or layout:cells (each cell compiled)
  layout=${item%%:*} how=${item#*:} name=darts_${item%%:*}_graphed_compiled
  if [[ $how == cells ]]; then name+=_cells; fi
  step "$name" "${COMPILE_CAP:-150}" --configs "darts:$layout" "${graph[@]}" --compile "$how"
done

$py - "$work" "$out" "$smoke" "$budget" "$SECONDS" <<'EOF'
import json, sys
from pathlib import Path

work, out, smoke, budget, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", *sys.argv[4:]
rows = []
for path in sorted(work.glob("*.json")):
    for row in json.loads(path.read_text())["rows"]:
        rows.append({"stage": path.stem, **row})
summary = {}
darts = [r for r in rows if (r["strategy"], r["layout"], r["cuda_graph"], r["amp"], r["compile"])
         == ("darts", "batched", not smoke, False, False)]
darts2 = [r for r in rows if r["stage"] == "darts2_batched_graphed"]
if darts and darts2:
    ratio = darts2[0]["step_s"] / darts[0]["step_s"]
    summary["darts2_vs_darts_batched"] = {"ratio": ratio, "target": 2.5, "met": ratio <= 2.5}
metrics = work / "search" / "metrics.jsonl"
if metrics.exists():
    times = [json.loads(line)["epoch_time"] for line in metrics.read_text().splitlines() if line.strip()]
    if times:
        # the first epoch pays the warm-up steps and the capture; later epochs are what the rest costs
        later = times[1:] or times
        per_epoch = sum(later) / len(later)
        projected = times[0] + (50 - 1) * per_epoch
        summary["search_batched"] = {"epoch_times_s": times, "per_epoch_s": per_epoch,
                                     "projected_50_epochs_s": projected}
failed = [line for line in (work / "failed.txt").read_text().splitlines() if line.strip()]
result = {"smoke": smoke, "budget_s": int(budget), "elapsed_s": int(seconds), "rows": rows,
          "summary": summary, "failed": failed}
(out / "rows.json").write_text(json.dumps(result, indent=2) + "\n")

print(f"\n{'stage':<44} {'layout':<11} {'graph':<6} {'amp':<4} {'compile':<8} {'step (s)':>9} {'peak MB':>9}")
for r in rows:
    print(f"{r['stage']:<44} {r['layout']:<11} {'yes' if r['cuda_graph'] else 'no':<6} "
          f"{'bf16' if r['amp'] else 'fp32':<4} {str(r['compile'] or 'no'):<8} {r['step_s']:>9.4f} "
          f"{r['peak_mb']:>9.0f}")
if "darts2_vs_darts_batched" in summary:
    s = summary["darts2_vs_darts_batched"]
    print(f"darts2 / darts (batched): {s['ratio']:.2f}x (target <= 2.5x: {'met' if s['met'] else 'NOT met'})")
if "search_batched" in summary:
    s = summary["search_batched"]
    print(f"search epochs {', '.join(f'{t:.1f}' for t in s['epoch_times_s'])} s -> projected 50 epochs "
          f"{s['projected_50_epochs_s']:.0f} s ({s['projected_50_epochs_s'] / 3600:.2f} h)")
for line in failed:
    print(line)
print(f"rows: {out / 'rows.json'}")
EOF
