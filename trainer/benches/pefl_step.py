"""One PeFL training step in PyTorch with diffusers' modules: the same
work as trainer/benches/pefl_step.rs (stage 2 from T1 down to a fixed t'
without gradient, stage 3 with gradient, VAE decode, the tiny R_alpha and
R_gamma terms, L1 and the denoising loss, backward, AdamW; then the
discriminator step and its AdamW), on the same model folder. Prints one
JSON line: median seconds per step after --warmup untimed ones, with
its parts (forward, backward, update, discriminator), peak RSS.

python trainer/benches/pefl_step.py --model DIR --size 64 --lora 0 --steps 2 --threads 2
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "trainer/tests/fixtures/pefl"))
from pefl_torch import Coherence, ImageRewardTorch, add_lora, discriminator_loss, normalise, resize  # noqa: E402

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=str(ROOT / "models/tests/fixtures/sd15-inpaint-tiny"))
ap.add_argument("--size", type=int, default=64)
ap.add_argument("--lora", type=int, default=0)
ap.add_argument("--steps", type=int, default=2)
ap.add_argument("--t-prime", type=int, default=10)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--warmup", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
model = Path(a.model)
unet = UNet2DConditionModel.from_pretrained(model / "unet")
vae = AutoencoderKL.from_pretrained(model / "vae")
text_encoder = CLIPTextModel.from_pretrained(model / "text_encoder")
tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer")
scheduler = DDIMScheduler.from_pretrained(model / "scheduler", timestep_spacing="leading")
T, T1 = 20, 15
scheduler.set_timesteps(T)
for p in list(vae.parameters()) + list(text_encoder.parameters()):
    p.requires_grad_(False)
gen = torch.Generator().manual_seed(0)
if a.lora:
    for p in unet.parameters():
        p.requires_grad_(False)
    trained = list(add_lora(unet, a.lora, float(a.lora), gen, b_scale=0.0).values())
else:
    trained = list(unet.parameters())
reward_dir = ROOT / "rewards/tests/fixtures/imagereward-tiny"
RW = {k: v.float() for k, v in load_file(reward_dir / "model.safetensors").items()}
RC = json.loads((reward_dir / "reward_config.json").read_text())
MED = json.loads((reward_dir / "med_config.json").read_text())
reward = ImageRewardTorch(RW, RC, MED)
ids = load_file(reward_dir / "expected.safetensors")["case0.input_ids"].long()
ids_mask = load_file(reward_dir / "expected.safetensors")["case0.attention_mask"].float()
coh_dir = ROOT / "trainer/tests/fixtures/pefl/coherence"
CW = {k: v.clone().requires_grad_(True) for k, v in load_file(coh_dir / "model.safetensors").items()}
coherence = Coherence(CW, json.loads((coh_dir / "reward_config.json").read_text()), MED)
g_opt = torch.optim.AdamW(trained, lr=2e-6, weight_decay=0.0)
d_opt = torch.optim.AdamW(list(CW.values()), lr=2e-6, weight_decay=0.0)

s = a.size
x = torch.rand(1, 3, s, s, generator=gen)
m = torch.zeros(1, 1, s, s)
m[..., s // 4:3 * s // 4, s // 4:3 * s // 4] = 1
sf, lat = vae.config.scaling_factor, s // 8
times = []
for i in range(a.warmup + a.steps):
    start = time.perf_counter()
    with torch.no_grad():
        tokens = tokenizer(["a red apple on the table"], padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
        context = text_encoder(tokens.input_ids)[0]
        masked = vae.encode(x * 2 - 1 - (x * 2 - 1) * m).latent_dist.mean * sf
        condition = torch.cat([F.interpolate(m, size=(lat, lat)), masked], 1)
        ts = scheduler.timesteps
        latents = scheduler.add_noise(masked, torch.randn(masked.shape, generator=gen), ts[T - T1].reshape(1))
        for k in range(T - T1, T - a.t_prime):
            out = unet(torch.cat([latents, condition], 1), ts[k], context).sample
            latents = scheduler.step(out, ts[k], latents).prev_sample
    t = ts[T - a.t_prime]
    eps = unet(torch.cat([latents, condition], 1), t, context).sample
    al = scheduler.alphas_cumprod[t]
    G = vae.decode(((latents - (1 - al).sqrt() * eps) / al.sqrt()) / sf).sample / 2 + 0.5
    inp = normalise(resize(G, RC["vision"]["img_size"]), RC["image_mean"], RC["image_std"])
    r = (reward.raw_score(inp, ids, ids_mask) - RC["score_mean"]) / RC["score_std"]
    ms = coherence.generated_pixels(m)
    lg = coherence.logits(x * (1 - m) + G * m, m)
    loss = 0.01 * -F.logsigmoid(r).mean() + 0.05 * -(ms * F.logsigmoid(lg)).sum() / (ms.sum() + 1e-6) + (x - G).abs().mean()
    with torch.no_grad():
        clean = vae.encode(x * 2 - 1).latent_dist.mean * sf
        noise = torch.randn(clean.shape, generator=gen)
        noisy = scheduler.add_noise(clean, noise, torch.tensor([500]))
    loss = loss + ((unet(torch.cat([noisy, condition], 1), 500, context).sample - noise) ** 2).mean()
    forward = time.perf_counter() - start
    g_opt.zero_grad(set_to_none=True)
    loss.backward()
    backward = time.perf_counter() - start
    g_opt.step()
    update = time.perf_counter() - start
    d_opt.zero_grad(set_to_none=True)
    discriminator_loss(coherence, x, G.detach(), m).backward()
    d_opt.step()
    if i >= a.warmup:
        total = time.perf_counter() - start
        times.append((total, forward, backward - forward, update - backward, total - update))
times.sort()
print(json.dumps({"engine": "torch", "model": model.name, "size": s, "lora": a.lora, "t_prime": a.t_prime,
                  "warmup": a.warmup, **dict(zip(["step_seconds", "forward_s", "backward_s", "update_s", "discriminator_s"],
                                                 times[len(times) // 2])),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
