#!/usr/bin/env bash
# ByteEdit against diffusers on this machine's CPU, in one run: the same
# SD-1.5-inpainting-size model with random weights (written once as fp16
# safetensors by the engine and loaded from those files by both sides), the
# same cases, one side after the other, with the same thread count.
#
#   bash bench/compare.sh                       # from the repository root
#
# Cases (each at every size): unet (one guided step: a batch-2 UNet call),
# vae_encode, vae_decode, text (prompt + negative prompt), edit8, edit20 and
# edit8x4 (8 steps, 4 outputs: one job of 4 against 4 jobs of 1 is
# edit8x4 / (4 x edit8)); also jobs8x4 on request (4 separate jobs in one
# batch, as a batching worker runs them). Writes to $OUT:
#   sd15-flex.json, sd15-diffusers.json   each side's figures (min/mean s, peak RSS)
#   comparison.json                       both, with ours/theirs per case
#   table.md                              the table of docs/PERFORMANCE.md
#   ratios.png                            time ratios and peak memory as a chart
#
# Settings (environment):
#   SIZES=256,512  CASES=unet,vae_encode,vae_decode,text,edit8,edit8x4,edit20
#   REPS=1 (after one warm-up; edits at 512 px run once, unwarmed)
#   THREADS=$(nproc)   torch threads (the engine's pool uses every core)
#   REF_PYTHON=...     a Python with torch, diffusers, transformers; by default a
#                      venv at target/bench-venv is made with the pinned versions
#                      below (PyPI only; about 1 GB, once)
#   OUT=target/bench-compare
# Run it on an otherwise idle machine: a busy core skews either side.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-256,512}
CASES=${CASES:-unet,vae_encode,vae_decode,text,edit8,edit8x4,edit20}
REPS=${REPS:-1}
THREADS=${THREADS:-$(nproc)}
OUT=${OUT:-target/bench-compare}
mkdir -p "$OUT"
# Absolute: cargo runs the benchmark from the crate's folder.
OUT=$(cd "$OUT" && pwd)

if [[ -z ${REF_PYTHON:-} ]]; then
  venv=target/bench-venv
  if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "import diffusers, torch, matplotlib" 2>/dev/null; then
    echo "compare.sh: making the reference venv in $venv (once)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.15.0 diffusers==0.42.1 transformers==5.24.0 \
      safetensors numpy pillow matplotlib
  fi
  REF_PYTHON=$venv/bin/python
fi

bench() { cargo bench -q -p byteedit-models --bench engine -- --model sd15 --backend flex "$@"; }
model=target/bench-models/sd15-inpaint-random-fp16

# 1. The random weights, once (the first load writes them).
[[ -f $model/model_index.json ]] || bench --sizes 64 --cases load --reps 1 >/dev/null
# 2. Ours, then theirs, on the same files.
bench --sizes "$SIZES" --cases "load,$CASES" --reps "$REPS" --no-warmup-over 512 --json "$OUT/sd15-flex.json"
"$REF_PYTHON" models/benches/reference_timing.py --model-dir "$model" --sizes "$SIZES" \
  --cases "$CASES" --reps "$REPS" --no-warmup-over 512 --threads "$THREADS" --out "$OUT/sd15-diffusers.json"
# 3. The table, the JSON and the chart.
"$REF_PYTHON" models/benches/report.py "$OUT" --plot "$OUT/ratios.png" --json "$OUT/comparison.json" |
  tee "$OUT/table.md"
