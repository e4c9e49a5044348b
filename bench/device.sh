#!/usr/bin/env bash
# GPU check: the first thing to run on a machine with an NVIDIA GPU.
#
#   bash bench/device.sh            # from the repository root
#
# Needs bash, coreutils, the NVIDIA driver, NVRTC and the CUDA headers (the
# kernels are compiled at run time; found on their own when not on the loader's
# path) and a byteedit binary built elsewhere with `--features cuda`; no Rust
# toolchain, no registry, no Python packages:
#
#   cargo build --release -p byteedit --features cuda
#   mkdir -p bench/bin && strip -o bench/bin/byteedit target/release/byteedit
#   gzip -9 bench/bin/byteedit   # 58 MB -> 18 MB: with the tree (39 MB) within 64 MiB
#
# 1. Both tiny fixtures (models/tests/fixtures/sd15-inpaint-tiny and
#    sd2-vpred-tiny), every reference case: `byteedit edit --device $DEVICE`
#    from the reference latents, compared with the committed diffusers PNG
#    (at most 1 level in any channel, the CPU tests' tolerance).
# 2. An SD-1.5-inpainting-size model with random fp16 weights, written here by
#    the binary (`byteedit bench model`, ~2.1 GB in a temporary folder): a
#    1-step and a 20-step 512x512 edit, timed by the edit's own summary line.
#
# Prints one summary line on stdout (details on stderr) and exits 1 on a
# mismatch or any failure. Settings (environment):
#   DEVICE=cuda         `--device` for every edit (cpu for a smoke test anywhere)
#   BYTEEDIT_BIN=bench/bin/byteedit
#   BENCH_MODEL=sd15    sd15 (full size, timed at 512x512), tiny (the same steps
#                       on a random model with the tiny fixture's configs, at
#                       64x64: seconds on a CPU) or skip
#   BENCH_STEPS=20      steps of the timed edit
#   KEEP=DIR            keep the logs and output PNGs in DIR (default: deleted)
#   CASE_TIMEOUT=300    seconds allowed for each command before it counts as failed
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi

DEVICE=${DEVICE:-cuda}
BIN=${BYTEEDIT_BIN:-bench/bin/byteedit}
BENCH_MODEL=${BENCH_MODEL:-sd15}
BENCH_STEPS=${BENCH_STEPS:-20}
CASE_TIMEOUT=${CASE_TIMEOUT:-300}
FIXTURES=(sd15-inpaint-tiny sd2-vpred-tiny)

work=$(mktemp -d "${TMPDIR:-/tmp}/byteedit-device.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
if [[ -n ${KEEP:-} ]]; then
  mkdir -p "$KEEP" || exit 1
  logs=$KEEP
else
  logs=$work/logs
  mkdir -p "$logs"
fi

# The stripped binary (58 MB) and the tracked tree (39 MB) are more than a
# 64 MiB transfer allows, so the binary may come compressed (gzip: 18 MB,
# xz: 11 MB); python3's standard library unpacks it where the tools are missing.
unpack() { # FORMAT FILE
  local tool module
  case $1 in
    gz) tool=gzip module=gzip ;;
    xz) tool=xz module=lzma ;;
  esac
  if command -v "$tool" >/dev/null; then
    "$tool" -dc "$2"
  else
    python3 -c "import $module, shutil, sys; shutil.copyfileobj($module.open(sys.argv[1]), sys.stdout.buffer)" "$2"
  fi
}
if [[ ! -x $BIN ]]; then
  for format in xz gz; do
    if [[ -f $BIN.$format ]]; then
      unpack "$format" "$BIN.$format" >"$work/byteedit" && chmod +x "$work/byteedit" ||
        { echo "device: $DEVICE FAILED | cannot unpack $BIN.$format"; exit 1; }
      BIN=$work/byteedit
      break
    fi
  done
fi
if [[ ! -x $BIN ]]; then
  cat >&2 <<EOF
device.sh: no byteedit binary at $BIN (nor $BIN.xz or $BIN.gz). Build one where Rust is installed:
  cargo build --release -p byteedit --features cuda
  mkdir -p bench/bin && strip -o bench/bin/byteedit target/release/byteedit
  gzip -9 bench/bin/byteedit      # when the tree and the binary must fit in 64 MiB
and bring it along (bench/bin/ is git-ignored), or set BYTEEDIT_BIN.
EOF
  echo "device: $DEVICE FAILED | no binary at $BIN"
  exit 1
fi
case $BENCH_MODEL in
  sd15) bench_config=models/benches/sd15-inpaint-config; bench_size=512 ;;
  tiny) bench_config=models/tests/fixtures/sd15-inpaint-tiny; bench_size=64 ;;
  skip) ;;
  *) echo "device.sh: BENCH_MODEL must be sd15, tiny or skip, not '$BENCH_MODEL'" >&2; exit 2 ;;
esac

failed=0
summary=()
note() { echo "device.sh: $*" >&2; }

# Runs a command with a time limit, its output into $logs/NAME.log; on failure
# prints the log's end, so a remote run's output shows what went wrong.
step() {
  local name=$1
  shift
  local started=$SECONDS
  timeout "$CASE_TIMEOUT" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  if ((rc != 0)); then
    if ((rc == 124)); then
      note "$name: timed out after ${CASE_TIMEOUT}s"
    else
      note "$name: failed (exit $rc) after $((SECONDS - started))s"
    fi
    tail -n 20 "$logs/$name.log" | sed 's/^/    /' >&2
  fi
  return $rc
}

# Adds the folder of library $1 to LD_LIBRARY_PATH unless the loader finds it
# already (ldconfig's cache or LD_LIBRARY_PATH), looking under the folders given.
need_lib() {
  local lib=$1 dir found
  shift
  ldconfig -p 2>/dev/null | grep -q "$lib" && return 0
  IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
  for dir in "${dirs[@]}"; do
    compgen -G "$dir/$lib*" >/dev/null && return 0
  done
  found=$(find "$@" -maxdepth 8 -name "$lib*" -not -name '*builtins*' 2>/dev/null | head -1)
  if [[ -z $found ]]; then
    note "$lib not found: the CUDA edits will fail"
    return 1
  fi
  export LD_LIBRARY_PATH=$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  note "$lib: $found"
}

# cubecl compiles its kernels at run time with NVRTC and the CUDA headers
# (CUDA_PATH, else /usr/local/cuda), and cudarc finds libnvrtc through the
# loader's path: point both at the toolkit when they are not set up.
if [[ $DEVICE == cuda* ]]; then
  if command -v nvidia-smi >/dev/null; then
    gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
    note "GPU: ${gpu:-nvidia-smi found no GPU}"
  fi
  if [[ -z ${CUDA_PATH:-} && ! -d /usr/local/cuda ]] && command -v nvcc >/dev/null; then
    CUDA_PATH=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    export CUDA_PATH
  fi
  if [[ -f ${CUDA_PATH:-/usr/local/cuda}/include/cuda_runtime.h ]]; then
    note "CUDA headers: ${CUDA_PATH:-/usr/local/cuda}/include"
  else
    note "no cuda_runtime.h under ${CUDA_PATH:-/usr/local/cuda}/include: set CUDA_PATH to the toolkit"
  fi
  need_lib libcuda.so.1 /usr/local/nvidia /usr/lib /usr/local
  need_lib libnvrtc.so "${CUDA_PATH:-/usr/local/cuda}/" /usr/local /opt /usr/lib
fi

levels() { if (($1 == 1)); then echo "1 level"; else echo "$1 levels"; fi; }
# The edit's summary line: "edited ... in 3.20s: 20 steps x ..., model load 1.23s -> out.png".
seconds_of() { sed -n "s/.* in \([0-9.]*\)s: .*/\1/p" "$1" | head -1; }
load_of() { sed -n 's/.*model load \([0-9.]*\)s.*/\1/p' "$1" | head -1; }

# 1. The fixtures against their references.
for fixture in "${FIXTURES[@]}"; do
  dir=models/tests/fixtures/$fixture
  cases_dir=$work/cases/$fixture
  if ! step "$fixture-cases" "$BIN" bench cases --fixture "$dir" --out "$cases_dir"; then
    failed=1
    summary+=("$fixture FAILED (no cases)")
    continue
  fi
  worst=0
  bad=()
  count=0
  compared=0
  while IFS=$'\t' read -r name args_file reference; do
    count=$((count + 1))
    mapfile -t edit_args <"$args_file"
    png=$logs/$fixture-$name.png
    if ! step "$fixture-$name" "$BIN" edit "${edit_args[@]}" --device "$DEVICE" --out "$png"; then
      bad+=("$name: edit failed")
      continue
    fi
    step "$fixture-$name-compare" "$BIN" bench compare-png "$png" "$reference" --max-diff 1
    rc=$?
    diff=$(sed -n 's/^max diff \([0-9]*\) levels.*/\1/p' "$logs/$fixture-$name-compare.log")
    if [[ -z $diff ]]; then
      why=$(grep -m1 '^sizes differ' "$logs/$fixture-$name-compare.log")
      bad+=("$name: ${why:-not compared}")
      continue
    fi
    compared=$((compared + 1))
    ((diff > worst)) && worst=$diff
    ((rc != 0)) && bad+=("$name: $diff > 1")
    note "$fixture $name: max diff $(levels "$diff") (edit $(seconds_of "$logs/$fixture-$name.log")s)"
  done <"$logs/$fixture-cases.log"
  if ((compared == count)); then
    line="$fixture $count cases max diff $(levels "$worst")"
  elif ((compared > 0)); then
    line="$fixture $compared of $count cases compared, max diff $(levels "$worst")"
  else
    line="$fixture none of $count cases compared"
  fi
  if ((${#bad[@]} > 0)); then
    failed=1
    line+=" FAILED ($(IFS=,; echo "${bad[*]}" | sed 's/,/, /g'))"
  fi
  summary+=("$line")
done

# 2. The timed edit on a full-size random model.
if [[ $BENCH_MODEL != skip ]]; then
  model=$work/$BENCH_MODEL-random
  image=models/tests/fixtures/sd15-inpaint-tiny/expected_image.png
  mask=models/tests/fixtures/sd15-inpaint-tiny/expected_mask.png
  # The 64x64 fixture image with --region full is edited at the model's
  # native size (512x512 for SD-1.5), which the summary line reports.
  timed=(--model "$model" --image "$image" --mask "$mask" --prompt "a red apple on a wooden table"
    --guidance 7.5 --scheduler dpmpp-2m --seed 0 --region full --device "$DEVICE")
  if ! step bench-model "$BIN" bench model --config "$bench_config" \
    --tokenizer models/tests/fixtures/sd15-inpaint-tiny/tokenizer --out "$model" --seed 1; then
    failed=1
    summary+=("$BENCH_MODEL FAILED (random model not written)")
  elif ! step bench-edit-1 "$BIN" edit "${timed[@]}" --steps 1 --out "$logs/bench-1.png" ||
    ! step bench-edit "$BIN" edit "${timed[@]}" --steps "$BENCH_STEPS" --out "$logs/bench.png"; then
    failed=1
    summary+=("$BENCH_MODEL ${bench_size}x$bench_size FAILED (edit)")
  elif ! grep -q " at ${bench_size}x$bench_size)" "$logs/bench-edit.log"; then
    failed=1
    summary+=("$BENCH_MODEL FAILED (not edited at ${bench_size}x$bench_size: $(head -1 "$logs/bench-edit.log"))")
  else
    cat "$logs/bench-model.log" "$logs/bench-edit-1.log" "$logs/bench-edit.log" >&2
    total=$(seconds_of "$logs/bench-edit.log")
    one=$(seconds_of "$logs/bench-edit-1.log")
    load=$(load_of "$logs/bench-edit.log")
    written=$(sed -n 's/.* in \([0-9.]*\)s$/\1/p' "$logs/bench-model.log")
    # The difference of the two runs leaves out what both pay once (kernel
    # compilation, text encoder, VAE): the time of one more step.
    timing=$(awk -v t="$total" -v o="$one" -v n="$BENCH_STEPS" 'BEGIN {
      printf "%.2f s (%.3f s/step; %.3f s/step beyond the first)", t, t / n, (n > 1) ? (t - o) / (n - 1) : t }')
    summary+=("$BENCH_MODEL ${bench_size}x$bench_size $BENCH_STEPS steps: $timing, load ${load}s, weights written in ${written}s")
  fi
fi

status=ok
((failed)) && status=FAILED
line="device: $DEVICE $status"
for part in "${summary[@]}"; do line+=" | $part"; done
[[ -n ${gpu:-} ]] && line+=" | $gpu"
echo "$line"
[[ -n ${KEEP:-} ]] && echo "$line" >"$KEEP/summary.txt"
exit "$failed"
