"""Regenerate dit_xl2_256_keys.json: the state_dict of the reference DiT-XL/2 at 256x256 (latent 32).

Written out by hand from facebookresearch/DiT models.py (DiT.__init__, DiTBlock, FinalLayer and
timm's PatchEmbed / Attention(qkv_bias=True) / Mlp), in the reference registration order, so that
the test compares our model against the reference layout rather than against itself.
Run: python tests/data/models/make_reference_keys.py
"""

import json
from pathlib import Path

D, DEPTH, PATCH, IN_CH, LATENT, CLASSES, FREQ = 1152, 28, 2, 4, 32, 1000, 256
OUT_CH = 2 * IN_CH  # learn_sigma=True
TOKENS = (LATENT // PATCH) ** 2


def linear(name, fan_in, fan_out):
    return [[f"{name}.weight", [fan_out, fan_in]], [f"{name}.bias", [fan_out]]]


keys = [["pos_embed", [1, TOKENS, D]]]  # a Parameter of DiT itself, so first in the state_dict
keys += [["x_embedder.proj.weight", [D, IN_CH, PATCH, PATCH]], ["x_embedder.proj.bias", [D]]]
keys += linear("t_embedder.mlp.0", FREQ, D) + linear("t_embedder.mlp.2", D, D)
keys += [["y_embedder.embedding_table.weight", [CLASSES + 1, D]]]  # +1: the CFG null class
for i in range(DEPTH):
    b = f"blocks.{i}"
    keys += linear(f"{b}.attn.qkv", D, 3 * D) + linear(f"{b}.attn.proj", D, D)
    keys += linear(f"{b}.mlp.fc1", D, 4 * D) + linear(f"{b}.mlp.fc2", 4 * D, D)
    keys += linear(f"{b}.adaLN_modulation.1", D, 6 * D)
keys += linear("final_layer.linear", D, PATCH * PATCH * OUT_CH)
keys += linear("final_layer.adaLN_modulation.1", D, 2 * D)

out = Path(__file__).with_name("dit_xl2_256_keys.json")
lines = ",\n".join(f"  {json.dumps(k)}" for k in keys)
out.write_text(f'{{"model": "DiT-XL/2", "image_size": 256, "keys": [\n{lines}\n]}}\n')
total = 0
for _, shape in keys:
    n = 1
    for s in shape:
        n *= s
    total += n
print(f"{len(keys)} keys, {total:,} parameters -> {out}")
