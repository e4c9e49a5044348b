#!/usr/bin/env bash
# One R_α training step (batch 8 pairs), ByteEdit's trainer next to PyTorch,
# tiny and full-size (ViT-L/16 + BERT-base, random weights), one after the
# other on this machine, 2 threads each. Prints a table and writes
# target/bench-results/reward_step.json. docs/PERFORMANCE.md has the results.
#
#   REF_PYTHON=/path/to/venv/bin/python trainer/benches/run_reward_step.sh [sizes]
#
# REF_PYTHON: a Python with torch and safetensors, in a venv outside the
# repository (`pip install torch safetensors numpy`); without it only the
# Rust side runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$PWD/target/bench-results"
mkdir -p "$out"
sizes="${1:-tiny full}"
: > "$out/reward_step.jsonl"
for size in $sizes; do
  steps=5
  [ "$size" = full ] && steps=2
  RAYON_NUM_THREADS=2 cargo bench -q -p byteedit-trainer --bench reward_step -- --size "$size" --batch 8 --steps "$steps" | tee -a "$out/reward_step.jsonl"
  if [ -n "${REF_PYTHON:-}" ]; then
    "$REF_PYTHON" trainer/benches/reward_step.py --size "$size" --batch 8 --steps "$steps" --threads 2 | tee -a "$out/reward_step.jsonl"
  fi
done
python3 - "$out/reward_step.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["size"], {})["ours" if r["engine"] == "byteedit" else "torch"] = r
print(f"{'size':6} {'ours s/step':>12} {'torch s/step':>13} {'ratio':>6} {'ours MiB':>9} {'torch MiB':>10}")
for size, r in by.items():
    o, t = r.get("ours"), r.get("torch")
    ratio = f"{o['step_seconds'] / t['step_seconds']:.2f}" if o and t else "-"
    fmt = lambda x, k: f"{x[k]:.3f}" if x and k == "step_seconds" else (f"{x[k]:.0f}" if x else "-")
    print(f"{size:6} {fmt(o,'step_seconds'):>12} {fmt(t,'step_seconds'):>13} {ratio:>6} {fmt(o,'peak_rss_mib'):>9} {fmt(t,'peak_rss_mib'):>10}")
json.dump(by, open(sys.argv[1].replace(".jsonl", ".json"), "w"), indent=2)
PY
