"""Random-weight feedback models at their released sizes, for measuring what
a real SD-1.5 fine-tuning run needs (docs/PERFORMANCE.md, "PeFL step"):

- OUT/imagereward: ImageReward v1.0's names and shapes
  (rewards/tests/fixtures/imagereward-layout.json: BLIP ViT-L/16 at 224 px,
  BERT-base with cross-attention, the MLP head), BERT-base's config, the
  fixture's vocabulary; no reward_config.json, so it loads as the released
  model does;
- OUT/vgg16.safetensors: torchvision's vgg16().features, `features.{i}`.

Values are uniform in +-0.02 (a repeated random block, as the checkpoint
test does: the sizes matter here, not the numbers).

python trainer/benches/make_full_size_feedback.py OUT
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).parents[2]
out = Path(sys.argv[1])
rng = np.random.default_rng(7)
block = rng.uniform(-0.02, 0.02, 1 << 20).astype(np.float32)


def tensor(shape):
    count = int(np.prod(shape))
    return np.resize(block, count).reshape(shape)


reward = out / "imagereward"
reward.mkdir(parents=True, exist_ok=True)
layout = json.loads((ROOT / "rewards/tests/fixtures/imagereward-layout.json").read_text())["parameters"]
save_file({name: tensor(shape) for name, shape in layout.items()}, reward / "model.safetensors")
(reward / "med_config.json").write_text(json.dumps({
    "architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 768, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2,
    "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": True}))
shutil.copy(ROOT / "rewards/tests/fixtures/imagereward-tiny/vocab.txt", reward / "vocab.txt")

# vgg16().features: 13 3x3 convolutions between ReLUs and max-pools.
widths = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
vgg, index, channels = {}, 0, 3
for w in widths:
    if w == "M":
        index += 1
        continue
    vgg[f"features.{index}.weight"] = tensor((w, channels, 3, 3))
    vgg[f"features.{index}.bias"] = tensor((w,))
    channels, index = w, index + 2
save_file(vgg, out / "vgg16.safetensors")
print(f"wrote {reward} ({sum(np.prod(s) for s in layout.values()) / 1e6:.0f} M parameters) and {out / 'vgg16.safetensors'}")
