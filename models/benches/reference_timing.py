#!/usr/bin/env python3
"""Time the diffusers reference on the same cases as ByteEdit's Rust benchmark.

What it measures (float32, CPU, torch.inference_mode, `--threads` torch threads),
for every image size S in `--sizes` (latent S/8):
  unet        one denoising step's UNet work with classifier-free guidance: one
              UNet call on a batch of 2, sample [2, 9, S/8, S/8], timestep 500,
              random encoder_hidden_states [2, 77, cross_attention_dim]
  vae_encode  vae.encode([1, 3, S, S]).latent_dist.mean
  vae_decode  vae.decode([1, 4, S/8, S/8]).sample
  text        pipe.encode_prompt of the prompt and the empty negative prompt
  editS[xN]   the full StableDiffusionInpaintPipeline call (N images per prompt), prompt "a red apple on
              a wooden table", guidance 7.5, DPM-Solver++ order 2 (multistep), 8 or
              20 steps, output_type="np", a fixed random image, a mask over the
              centre half, seeded generator
  jobsSxN     N one-image requests in one pipeline call (a list of N prompts, N
              copies of the image and mask, one generator each): the diffusers
              way to batch separate jobs
Each case gets one warm-up run (none for edit cases with S >= --no-warmup-over;
default 512 for an SD-1.5-size UNet, never for smaller ones), then --reps runs
timed with time.perf_counter (mean and min reported; with 2 torch threads on 2
cores any other busy process, e.g. a cargo build, causes multi-second stalls, so
run on an otherwise idle machine; the load average at start is recorded). The
process peak RSS (VmHWM, reset via /proc/self/clear_refs before the case) is
reported per case.

--model-dir is a diffusers StableDiffusionInpaintPipeline folder. With weights
(*.safetensors / *.bin) it is loaded with from_pretrained; with config files only
(e.g. benches/sd15-inpaint-config) each component is built from its config with
random weights (seed 0). A missing tokenizer is taken from
tests/fixtures/sd15-inpaint-tiny/tokenizer (same CLIP vocabulary).

Run it with a Python venv that lives OUTSIDE the repository (torch, diffusers,
transformers), e.g.:
  /tmp/refenv/bin/python models/benches/reference_timing.py \
      --model-dir models/tests/fixtures/sd15-inpaint-tiny --sizes 64,256 --reps 2 \
      --cases unet,vae_encode,vae_decode,edit8,edit20 --out results.json --threads 2
The JSON written to --out: {"reference", "threads", "machine", "model",
"results": [{"case", "size", "mean_s", "min_s", "reps", "peak_rss_mib"}, ...]}.
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

ALL_CASES = ["unet", "vae_encode", "vae_decode", "text", "edit8", "edit8x4", "jobs8x4", "edit20"]
PROMPT = "a red apple on a wooden table"
FIXTURE_TOKENIZER = Path(__file__).resolve().parent.parent / "tests/fixtures/sd15-inpaint-tiny/tokenizer"


def has_weights(d: Path) -> bool:
    return any(d.rglob("*.safetensors")) or any(d.rglob("*.bin"))


def load_pipeline(model_dir: Path):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if has_weights(model_dir):
        # The engine writes its random model as fp16 files (`*.fp16.safetensors`,
        # diffusers' "fp16" variant); both sides compute in float32.
        variant = "fp16" if any(model_dir.rglob("*.fp16.safetensors")) else None
        pipe = StableDiffusionInpaintPipeline.from_pretrained(
            model_dir, safety_checker=None, requires_safety_checker=False, torch_dtype=torch.float32,
            variant=variant)
    else:  # config only: random weights, same architecture
        torch.manual_seed(0)
        tok_dir = model_dir / "tokenizer"
        tok_dir = tok_dir if (tok_dir / "vocab.json").exists() else FIXTURE_TOKENIZER
        pipe = StableDiffusionInpaintPipeline(
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(model_dir / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_json_file(model_dir / "text_encoder/config.json")),
            tokenizer=CLIPTokenizer.from_pretrained(tok_dir),
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model_dir / "unet")),
            scheduler=DDIMScheduler.from_config(DDIMScheduler.load_config(model_dir / "scheduler")),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_case(pipe, case: str, size: int):
    """Returns a zero-argument callable running one instance of the case."""
    from diffusers import DPMSolverMultistepScheduler
    from PIL import Image

    lat = size // pipe.vae_scale_factor
    g = torch.Generator("cpu").manual_seed(0)
    if case == "unet":
        cfg = pipe.unet.config
        x = torch.randn(2, cfg.in_channels, lat, lat, generator=g)
        ctx = torch.randn(2, 77, cfg.cross_attention_dim, generator=g)
        t = torch.tensor(500)
        return lambda: pipe.unet(x, t, encoder_hidden_states=ctx).sample
    if case == "vae_encode":
        img = torch.rand(1, 3, size, size, generator=g) * 2 - 1
        return lambda: pipe.vae.encode(img).latent_dist.mean
    if case == "vae_decode":
        z = torch.randn(1, pipe.vae.config.latent_channels, lat, lat, generator=g)
        return lambda: pipe.vae.decode(z).sample
    if case == "text":
        # The pipeline's own prompt encoding: prompt and empty negative prompt.
        return lambda: pipe.encode_prompt(PROMPT, "cpu", 1, True, "")
    if case.startswith("edit") or case.startswith("jobs"):
        steps, _, outputs = case[4:].partition("x")
        steps, outputs = int(steps), int(outputs or 1)
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2)
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
        mask = Image.fromarray(mask)
        if case.startswith("jobs"):
            return lambda: pipe(
                prompt=[f"{PROMPT} {i}" for i in range(outputs)], image=[image] * outputs,
                mask_image=[mask] * outputs, height=size, width=size,
                num_inference_steps=steps, guidance_scale=7.5, output_type="np",
                generator=[torch.Generator("cpu").manual_seed(i) for i in range(outputs)]).images
        return lambda: pipe(
            prompt=PROMPT, image=image, mask_image=mask, height=size, width=size,
            num_inference_steps=steps, guidance_scale=7.5, output_type="np",
            num_images_per_prompt=outputs,
            generator=torch.Generator("cpu").manual_seed(0)).images
    raise SystemExit(f"unknown case {case!r}; known: {','.join(ALL_CASES)}")


def peak_rss_reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def machine() -> str:
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0))} CPUs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True, type=Path)
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", default=",".join(ALL_CASES))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-warmup-over", type=int, default=None, metavar="SIZE",
                    help="no warm-up for edit cases at sizes >= SIZE "
                         "(default: 512 for an SD-1.5-size UNet, otherwise never)")
    args = ap.parse_args()

    import diffusers
    import transformers

    torch.set_num_threads(args.threads)
    loadavg = [round(x, 2) for x in os.getloadavg()]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    model_dir = args.model_dir.resolve()

    t0 = time.perf_counter()
    pipe = load_pipeline(model_dir)
    print(f"loaded {model_dir.name} in {time.perf_counter() - t0:.1f} s "
          f"({sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.1f} M UNet params)", flush=True)
    no_warmup_over = args.no_warmup_over
    if no_warmup_over is None:
        no_warmup_over = 512 if pipe.unet.config.block_out_channels[0] >= 320 else 1 << 30

    results = []
    with torch.inference_mode():
        for size in sizes:
            for case in cases:
                peak_rss_reset()
                run = make_case(pipe, case, size)
                warm = not (case[:4] in ("edit", "jobs") and size >= no_warmup_over)
                if warm:
                    run()
                times = []
                for _ in range(args.reps):
                    t = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - t)
                r = {"case": case, "size": size, "mean_s": sum(times) / len(times), "min_s": min(times),
                     "reps": args.reps, "peak_rss_mib": round(peak_rss_mib(), 1)}
                if not warm:
                    r["warmup"] = False
                results.append(r)
                print(f"  {case:<11}{size:>5}  mean {r['mean_s']:9.4f} s  min {r['min_s']:9.4f} s  "
                      f"peak {r['peak_rss_mib']:8.1f} MiB{'' if warm else '  (no warm-up)'}", flush=True)

    report = {
        "reference": f"diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
                     f"torch {torch.__version__}",
        "threads": args.threads,
        "machine": machine(),
        "model": model_dir.name,
        "loadavg_at_start": loadavg,  # other work on the machine skews timings
        "results": results,
    }
    print(f"\n{report['reference']} | {report['machine']} | {args.threads} threads | {report['model']}")
    print(f"{'case':<11}{'size':>5}{'mean s':>11}{'min s':>11}{'reps':>6}{'peak MiB':>10}")
    for r in results:
        print(f"{r['case']:<11}{r['size']:>5}{r['mean_s']:>11.4f}{r['min_s']:>11.4f}{r['reps']:>6}"
              f"{r['peak_rss_mib']:>10.1f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
