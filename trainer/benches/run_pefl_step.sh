#!/usr/bin/env bash
# One PeFL step (generator + discriminator, batch 1), ByteEdit's trainer
# next to PyTorch + diffusers on the same model folder, one after the other
# on this machine, 2 threads each. Prints a table and writes
# target/bench-results/pefl_step.json. docs/PERFORMANCE.md has the results.
#
#   REF_PYTHON=/path/to/venv/bin/python [PROFILE=dev] trainer/benches/run_pefl_step.sh [CASE ...]
# (PROFILE=dev reuses the test build: the engine crates are opt-level 3 there too.)
#
# A CASE is MODEL:SIZE:LORA with MODEL `tiny` (the fixture) or `sd15` (an
# SD-1.5-inpainting-size folder with random weights, written once to
# target/bench-models/sd15-inpaint by `byteedit bench model`), LORA
# 0 for full fine-tuning. Default: tiny:64:0 tiny:64:4.
# REF_PYTHON: a venv with torch, diffusers, transformers, safetensors
# (models/tests/fixtures/make_reference.py names the versions).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$PWD/target/bench-results"
mkdir -p "$out"
cases="${*:-tiny:64:0 tiny:64:4}"
: > "$out/pefl_step.jsonl.new"
mv "$out/pefl_step.jsonl.new" "$out/pefl_step.jsonl"
for case in $cases; do
  IFS=: read -r name size lora <<< "$case"
  model=$PWD/models/tests/fixtures/sd15-inpaint-tiny
  if [ "$name" = sd15 ]; then
    model=$PWD/target/bench-models/sd15-inpaint
    [ -f "$model/model_index.json" ] || cargo run -q --profile "${PROFILE:-release}" -p byteedit -- bench model \
      --config models/benches/sd15-inpaint-config --tokenizer models/tests/fixtures/sd15-inpaint-tiny/tokenizer \
      --out "$model" --dtype f32
  fi
  steps=2
  [ "$name" = sd15 ] && steps=1
  RAYON_NUM_THREADS=2 cargo bench -q --profile "${PROFILE:-release}" -p byteedit-trainer --bench pefl_step -- \
    --model "$model" --size "$size" --lora "$lora" --steps "$steps" | tee -a "$out/pefl_step.jsonl"
  if [ -n "${REF_PYTHON:-}" ]; then
    "$REF_PYTHON" trainer/benches/pefl_step.py --model "$model" --size "$size" --lora "$lora" \
      --steps "$steps" --threads 2 2>/dev/null | tee -a "$out/pefl_step.jsonl"
  fi
done
python3 - "$out/pefl_step.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
by = {}
for r in rows:
    by.setdefault(f"{r['model']} {r['size']}px lora={r['lora']}", {})["ours" if r["engine"] == "byteedit" else "torch"] = r
print(f"{'case':36} {'ours s':>8} {'torch s':>8} {'ratio':>6} {'ours MiB':>9} {'torch MiB':>10}")
for case, r in by.items():
    o, t = r.get("ours"), r.get("torch")
    ratio = f"{o['step_seconds'] / t['step_seconds']:.2f}" if o and t else "-"
    f = lambda x, k, p: (f"{x[k]:.{p}f}" if x else "-")
    print(f"{case:36} {f(o,'step_seconds',3):>8} {f(t,'step_seconds',3):>8} {ratio:>6} {f(o,'peak_rss_mib',0):>9} {f(t,'peak_rss_mib',0):>10}")
json.dump(by, open(sys.argv[1].replace(".jsonl", ".json"), "w"), indent=2)
PY
