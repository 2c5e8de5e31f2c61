"""Does each word of a caption reach a trained text-to-image DiT? A probe of its word encoder and model.

A caption study's model can only draw what its text encoder passes on. This script loads the EMA
DiT and the EMA word encoder of each checkpoint given (a run folder: its newest checkpoint) and
prints, for captions that differ in one word of one attribute (shape, colour, size, position):

- ``enc``: the norm of the difference of the encoder's outputs (all positions), averaged over
  the pairs of that attribute's words;
- ``dit``: the norm of the difference of the DiT's outputs for one noisy image (a red square at
  the centre, t = 0.5, fixed noise), averaged the same way; what the model does with the word;
- ``stream``: for an encoder with layers, the mean norm of its residual stream before the final
  LayerNorm (its growth is what drowned the shape word, docs/training.md).

docs/training.md ("The word encoder") quotes it::

    python scripts/word_encoder_probe.py runs/quickstart-t2i/runs/c*-d2w96h3-s0
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from ditscale.data.shapes import caption_of, render
from ditscale.data.shapes_grammar import COLOR_NAMES, KINDS, SIZE_NAMES
from ditscale.data.text import load_word_encoder
from ditscale.errors import CheckpointError
from ditscale.models.io import load_model, resolve_weights, text_encoder_beside
from ditscale.train.rundir import RunDir

BASE = {"size": "large", "color": "red", "kind": "square", "position": "center", "background": "white"}
WORDS = {"shape": ("kind", KINDS), "colour": ("color", COLOR_NAMES[:6]), "size": ("size", SIZE_NAMES)}
WORDS["position"] = ("position", ("center", "top left", "bottom", "right"))


def caption(**change) -> str:
    """The base scene's caption with ``change``d attributes (the data's own wording)."""
    return caption_of({**BASE, **change})


def ema_weights(path: Path) -> Path:
    """The EMA DiT weights of a run folder's newest checkpoint, or of a checkpoint folder (as `ditscale sample`)."""
    try:
        return resolve_weights(path, run_checkpoints=lambda folder: RunDir(folder).checkpoint_folders()).path
    except CheckpointError as err:
        raise SystemExit(f"word_encoder_probe: error: {err}") from None


@torch.no_grad()
def probe(weights: Path) -> dict[str, float]:
    """``{attribute}_enc``, ``{attribute}_dit`` (mean output differences) and ``stream`` of one model's
    EMA ``weights`` and the EMA word encoder beside them."""
    encoder = load_word_encoder(text_encoder_beside(weights))
    net = load_model(weights)
    side = net.config.input_size
    x0 = torch.from_numpy(render({**BASE, "cx": 0.5, "cy": 0.5, "r": 0.22}, side))[None]
    xt = 0.5 * x0 + 0.5 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, (key, words) in WORDS.items():
        context, mask = encoder.encode([caption(**{key: w}) for w in words])
        pred = net(xt.repeat(len(words), 1, 1, 1), torch.full((len(words),), 500.0), context=context, context_mask=mask)
        pairs = list(itertools.combinations(range(len(words)), 2))
        out[f"{name}_enc"] = sum(float((context[i] - context[j]).norm()) for i, j in pairs) / len(pairs)
        out[f"{name}_dit"] = sum(float((pred[i] - pred[j]).norm()) for i, j in pairs) / len(pairs)
    out["stream"] = float("nan")
    if encoder.layers is not None:
        ids, mask = encoder.tokenizer.encode([caption()], encoder.max_length)
        h = encoder.tok_emb(ids) + encoder.pos_emb[:, : ids.shape[1]]
        out["stream"] = float(encoder.layers(h, src_key_padding_mask=~mask)[mask].norm(dim=-1).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (newest checkpoint) or checkpoint folders")
    args = parser.parse_args()
    names = [f"{a}_{w}" for w in ("enc", "dit") for a in WORDS]
    print("| run | " + " | ".join(names) + " | stream |")
    print("|---" * (len(names) + 2) + "|")
    for run in args.runs:
        got = probe(ema_weights(run))
        print(f"| {run.name} | " + " | ".join(f"{got[n]:.3f}" for n in names) + f" | {got['stream']:.0f} |")


if __name__ == "__main__":
    main()
