#!/usr/bin/env bash
# Runs every engine benchmark and the diffusers reference on the same cases,
# one after another (nothing else should run on the machine meanwhile), and
# writes JSON to target/bench-results/. docs/PERFORMANCE.md holds the results.
#
#   REF_PYTHON=/path/to/venv/bin/python models/benches/run_all.sh
#
# REF_PYTHON: a Python with torch, diffusers and transformers, in a venv
# outside the repository; without it only the Rust side runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$PWD/target/bench-results"
mkdir -p "$out"
bench() { cargo bench -q -p byteedit-models --features ndarray --bench engine -- "$@"; }
ref() {
  if [ -n "${REF_PYTHON:-}" ]; then "$REF_PYTHON" models/benches/reference_timing.py --threads 2 "$@"; fi
}
all=unet,vae_encode,vae_decode,edit8,edit20

# Tiny fixture model: flex, diffusers, and ndarray for the backend choice.
bench --model tiny --backend flex --sizes 64,256 --cases load,$all --reps 3 --json $out/tiny-flex.json
ref --model-dir models/tests/fixtures/sd15-inpaint-tiny --sizes 64,256 --cases $all --reps 3 --out $out/tiny-diffusers.json
bench --model tiny --backend ndarray --sizes 64,256 --cases unet,vae_encode,vae_decode --reps 3 --json $out/tiny-ndarray.json

# SD-1.5-inpainting size, random weights. The first call writes the fp16
# checkpoint (once); the second loads it as a fresh process would.
bench --model sd15 --backend flex --sizes 64 --cases load --reps 1 > /dev/null
bench --model sd15 --backend flex --sizes 256,512 --cases load,$all --reps 1 --no-warmup-over 256 --json $out/sd15-flex.json
ref --model-dir models/benches/sd15-inpaint-config --sizes 256,512 --cases $all --reps 1 --no-warmup-over 256 --out $out/sd15-diffusers.json
bench --model sd15 --backend ndarray --sizes 256 --cases unet --reps 1 --json $out/sd15-ndarray.json
