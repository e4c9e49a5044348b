#!/usr/bin/env bash
# What a real SD-1.5 fine-tuning run needs at a given resolution: one step of
# `byteedit finetune` (batch 1) with the feedback models at their released
# sizes (random weights: ImageReward v1.0 as R_α and R_β, a fresh ViT-S/16
# R_γ, torchvision's VGG16 features), the EMA, the checkpoint save and the
# export, under /usr/bin/time. Prints one JSON line per case (peak RSS, wall
# seconds) and writes target/bench-results/finetune_memory.jsonl.
#
#   REF_PYTHON=/path/to/venv/bin/python [PROFILE=dev] trainer/benches/run_finetune_memory.sh [SIZE:LORA ...]
# Default: 512:4 512:0. REF_PYTHON needs numpy and safetensors (to write the
# random feedback models once, trainer/benches/make_full_size_feedback.py).
# The schedule is T=20, T1=2, T2=1, so stage 2 is one step: the peak is set
# by stage 3 (gradient through the UNet, the VAE decoder and the rewards),
# not by how many steps stage 2 runs. STEPS (default 2): the second step is
# the steady state, where AdamW's moments and the EMA already exist (after
# one step a full run's peak lacks them).
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${PROFILE:-release}
bin=$PWD/target/$([ "$profile" = dev ] && echo debug || echo "$profile")/byteedit
cargo build -q --profile "$profile" -p byteedit
models=$PWD/target/bench-models
model=$models/sd15-inpaint
[ -f "$model/model_index.json" ] || "$bin" bench model --config models/benches/sd15-inpaint-config \
  --tokenizer models/tests/fixtures/sd15-inpaint-tiny/tokenizer --out "$model" --dtype f32
[ -f "$models/feedback/vgg16.safetensors" ] || "${REF_PYTHON:?set REF_PYTHON}" \
  trainer/benches/make_full_size_feedback.py "$models/feedback"
out=$PWD/target/bench-results
mkdir -p "$out"
: > "$out/finetune_memory.jsonl"
for case in ${*:-512:4 512:0}; do
  IFS=: read -r size lora <<< "$case"
  work=$(mktemp -d)
  python3 - "$work" "$size" "${STEPS:-2}" <<'PY'
import sys, zlib, struct
work, size, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# A size x size gradient PNG, written without dependencies.
raw = b"".join(b"\0" + bytes((x * 255 // size, y * 255 // size, 128)[c] for x in range(size) for c in range(3)) for y in range(size))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(f"{work}/image.png", "wb").write(png)
open(f"{work}/data.jsonl", "w").write('{"image": "image.png", "caption": "a red apple on the table"}\n')
open(f"{work}/config.toml", "w").write(
    f"steps = {steps}\nheld_out = 0\nresolution = {size}\nsave_every = {steps}\n[schedule]\nsteps = 20\nskip_from = 2\ngrad_max = 1\n")
PY
  lora_flag=()
  [ "$lora" != 0 ] && lora_flag=(--lora "$lora")
  set +e
  RAYON_NUM_THREADS=2 /usr/bin/time -f '%M %e' -o "$work/time" timeout "${CASE_TIMEOUT:-0}" "$bin" finetune \
    --model "$model" --data "$work/data.jsonl" --out "$work/out" --config "$work/config.toml" \
    --reward "aesthetic=$models/feedback/imagereward" --reward "alignment=$models/feedback/imagereward" \
    --coherence fresh --vgg "$models/feedback/vgg16.safetensors" "${lora_flag[@]}" > "$work/log" 2>&1
  status=$?
  set -e
  read -r kib seconds < <(tail -1 "$work/time")
  echo "{\"size\": $size, \"lora\": $lora, \"steps\": ${STEPS:-2}, \"exit\": $status, \"peak_rss_mib\": $((kib / 1024)), \"wall_seconds\": $seconds}" \
    | tee -a "$out/finetune_memory.jsonl"
  [ "$status" = 0 ] || tail -5 "$work/log" >&2
  rm -rf "$work"
done
