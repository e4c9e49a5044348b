"""The same R_α training step as trainer/benches/reward_step.rs, in PyTorch:
the preference loss of BATCH pairs through ImageReward's BLIP (plain torch,
rewards/tests/fixtures/imagereward-tiny/imagereward_torch.py), backward and
torch.optim.AdamW, ImageReward's fix_rate 0.7 freezing, 2 threads. Prints
one JSON line: seconds per step (median after a warm-up) and peak RSS.

python reward_step.py --size tiny|full --batch 8 --steps 3
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "rewards/tests/fixtures/imagereward-tiny"
sys.path.insert(0, str(FIXTURE))
from imagereward_torch import ImageRewardTorch  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--size", default="tiny", choices=["tiny", "full"])
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

if args.size == "tiny":
    from safetensors.torch import load_file

    weights = {k: v.float() for k, v in load_file(FIXTURE / "model.safetensors").items()}
    reward_config = json.loads((FIXTURE / "reward_config.json").read_text())
    med = json.loads((FIXTURE / "med_config.json").read_text())
else:
    layout = json.loads((REPO / "rewards/tests/fixtures/imagereward-layout.json").read_text())["parameters"]
    weights = {k: torch.randn(shape) * 0.02 for k, shape in layout.items() if not k.endswith("position_ids")}
    for k in weights:
        if "norm" in k.lower() and k.endswith(".weight"):
            weights[k] = torch.ones_like(weights[k])
    reward_config = {"vision": {"img_size": 224, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16}}
    med = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "layer_norm_eps": 1e-12}

vision, layers = reward_config["vision"], med["num_hidden_layers"]


def frozen(key):
    def index_after(prefix):
        if key.startswith(prefix):
            return int(key[len(prefix):].split(".")[0])
        return None

    if key.startswith(("blip.text_encoder.embeddings.", "blip.visual_encoder.patch_embed.", "blip.vision_proj", "blip.text_proj")):
        return True
    if key.endswith(("cls_token", "pos_embed")):
        return True
    i = index_after("blip.text_encoder.encoder.layer.")
    if i is not None:
        return i < int(layers * 0.7)
    i = index_after("blip.visual_encoder.blocks.")
    if i is not None:
        return i < int(vision["depth"] * 0.7)
    return False


trained = []
for k, v in weights.items():
    v.requires_grad_(not frozen(k))
    if not frozen(k):
        trained.append(v)
model = ImageRewardTorch(weights, reward_config, med)
optimizer = torch.optim.AdamW(trained, lr=1e-5, weight_decay=0.0)
s, b = vision["img_size"], args.batch
pixels = torch.randn(2 * b, 3, s, s)
ids = torch.tensor([[100 + i if i < 12 else 0 for i in range(35)]] * (2 * b))
mask = (ids != 0).float()
times = []
for step in range(args.steps + 1):
    start = time.perf_counter()
    raw = model.raw_score(pixels, ids, mask)
    loss = -torch.nn.functional.logsigmoid(raw[:b] - raw[b:]).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step > 0:
        times.append(time.perf_counter() - start)
times.sort()
print(json.dumps({
    "engine": "pytorch " + torch.__version__, "size": args.size, "batch": b,
    "step_seconds": times[len(times) // 2],
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
