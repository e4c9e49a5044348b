#!/usr/bin/env bash
# One PeFL step (generator + discriminator, batch 1), ByteEdit's trainer
# next to PyTorch + diffusers on the same model folder, one after the other
# on this machine, 2 threads each. Prints a table and writes
# target/bench-results/pefl_step.json. docs/PERFORMANCE.md has the results.
#
#   REF_PYTHON=/path/to/venv/bin/python [PROFILE=dev] trainer/benches/run_pefl_step.sh [CASE ...]
# (PROFILE=dev reuses the test build: the engine crates are opt-level 3 there too.)
#
# A CASE is MODEL:SIZE:LORA[:T_PRIME] with MODEL `tiny` (the fixture) or
# `sd15` (an SD-1.5-inpainting-size folder with random weights, written once
# to target/bench-models/sd15-inpaint by `byteedit bench model`), LORA 0 for
# full fine-tuning, T_PRIME the step stage 3 runs at (default 10: five
# stage-2 steps from T1=15; 14 leaves one). Default: tiny:64:0 tiny:64:4.
# The tiny model times the median of 2 steps after one untimed; an sd15 step
# takes minutes on a CPU, so there one step is timed, with no warm-up.
# CASE_TIMEOUT: seconds allowed to each side of a case (default: no limit;
# a side stopped by it is recorded as `exit 124`).
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
  IFS=: read -r name size lora t_prime <<< "$case"
  t_prime=${t_prime:-10}
  model=$PWD/models/tests/fixtures/sd15-inpaint-tiny
  if [ "$name" = sd15 ]; then
    model=$PWD/target/bench-models/sd15-inpaint
    [ -f "$model/model_index.json" ] || cargo run -q --profile "${PROFILE:-release}" -p byteedit -- bench model \
      --config models/benches/sd15-inpaint-config --tokenizer models/tests/fixtures/sd15-inpaint-tiny/tokenizer \
      --out "$model" --dtype f32
  fi
  steps=2 warmup=1
  [ "$name" = sd15 ] && steps=1 warmup=0
  # A side that fails (killed for memory, say) is recorded as such and the
  # other cases still run.
  failed() {
    echo "{\"engine\": \"$1\", \"model\": \"$(basename "$model")\", \"size\": $size, \"lora\": $lora, \"t_prime\": $t_prime, \"failed\": \"exit $2\"}" \
      | tee -a "$out/pefl_step.jsonl"
  }
  RAYON_NUM_THREADS=2 timeout "${CASE_TIMEOUT:-0}" cargo bench -q --profile "${PROFILE:-release}" -p byteedit-trainer --bench pefl_step -- \
    --model "$model" --size "$size" --lora "$lora" --t-prime "$t_prime" --steps "$steps" --warmup "$warmup" \
    | tee -a "$out/pefl_step.jsonl" || failed byteedit $?
  if [ -n "${REF_PYTHON:-}" ]; then
    timeout "${CASE_TIMEOUT:-0}" "$REF_PYTHON" trainer/benches/pefl_step.py --model "$model" --size "$size" --lora "$lora" \
      --t-prime "$t_prime" --steps "$steps" --warmup "$warmup" --threads 2 2>/dev/null \
      | tee -a "$out/pefl_step.jsonl" || failed torch $?
  fi
done
python3 - "$out/pefl_step.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
by = {}
for r in rows:
    by.setdefault(f"{r['model']} {r['size']}px lora={r['lora']} t'={r['t_prime']}", {})["ours" if r["engine"] == "byteedit" else "torch"] = r
print(f"{'case':36} {'ours s':>8} {'torch s':>8} {'ratio':>6} {'ours MiB':>9} {'torch MiB':>10}")
for case, r in by.items():
    o, t = r.get("ours"), r.get("torch")
    ok = lambda x: x is not None and "failed" not in x
    ratio = f"{o['step_seconds'] / t['step_seconds']:.2f}" if ok(o) and ok(t) else "-"
    f = lambda x, k, p: (f"{x[k]:.{p}f}" if ok(x) else (x or {}).get("failed", "-"))
    print(f"{case:36} {f(o,'step_seconds',3):>8} {f(t,'step_seconds',3):>8} {ratio:>6} {f(o,'peak_rss_mib',0):>9} {f(t,'peak_rss_mib',0):>10}")
    for part in ("forward_s", "backward_s", "update_s", "discriminator_s"):
        if ok(o) and ok(t):
            print(f"  {part:34} {o[part]:8.3f} {t[part]:8.3f} {o[part] / max(t[part], 1e-9):6.2f}")
json.dump(by, open(sys.argv[1].replace(".jsonl", ".json"), "w"), indent=2)
PY
