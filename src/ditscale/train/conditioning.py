"""What a training step passes to the model as its condition: class labels, or caption embeddings.

- Class-conditional models get ``y`` (and, in training, the seeded label-drop mask ``force_drop_ids``).
- Text-conditional models get ``context`` + ``context_mask`` from a frozen encoder, or the raw
  ``captions`` when the encoder is trained with the model (:class:`JointTextModel` encodes them
  inside the wrapped module, so DDP/FSDP see one module and one optimizer covers both).

Training steps and validation build their model arguments with the same :func:`model_kwargs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ditscale.data import text as T
from ditscale.errors import ConfigError
from ditscale.train.config import TrainConfig, word_encoder_sizes

EncodeFn = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]


def build_text_encoder(cfg: TrainConfig, has_captions: bool, cache_dir: str, device: torch.device):
    """The text encoder of a text-conditioned run (None without ``text_encoder``).

    "word": a :class:`~ditscale.data.text.WordTextEncoder` (:data:`WORD_ENCODER` sizes) trained with
    the model, its vocabulary from :meth:`~ditscale.data.text.WordTokenizer.for_dataset`. Anything
    else: a frozen Hugging Face encoder (path or hub id), its embeddings cached in ``cache_dir``.
    """
    if not cfg.text_encoder:  # text conditioning without an encoder is refused by train.config.check_config
        return None
    if not has_captions:
        raise ConfigError(f"text_encoder={cfg.text_encoder!r} needs captions; set data.captions=true")
    if cfg.text_encoder == "word":
        tokenizer = T.WordTokenizer.for_dataset(
            cfg.data_config()
        )  # shapes grammar, digit words, or the captions' words
        torch.manual_seed(cfg.seed + 1)
        return T.WordTextEncoder(tokenizer, **word_encoder_sizes(cfg.model)).to(device)
    return T.HFTextEncoder(cfg.text_encoder, cache_dir=cache_dir, device=device)


def is_trainable(text) -> bool:
    """Whether a text encoder is trained with the model (it has parameters that need gradients)."""
    return isinstance(text, torch.nn.Module) and any(p.requires_grad for p in text.parameters())


def word_encoder_spec(text) -> dict[str, Any]:
    """The metadata that rebuilds a trained word encoder (sizes and vocabulary) at sampling time."""
    sizes = {k: int(getattr(text, k)) for k in T.WORD_SIZES}
    return {"text_encoder": "word", **sizes, "vocab": text.tokenizer.vocab}


class JointTextModel(torch.nn.Module):
    """DiT + a trainable text encoder as one module (one DDP wrapper, one optimizer, one EMA).

    Its state-dict keys are the DiT's under ``dit.`` and the encoder's under ``text.``
    (:data:`ditscale.train.checkpoint.JOINT_PREFIXES` splits them into their own files).
    """

    def __init__(self, dit: torch.nn.Module, text: torch.nn.Module):
        super().__init__()
        self.dit, self.text = dit, text

    def forward(self, x, t, captions=None, force_drop_ids=None):
        context, mask = self.text.encode(captions)
        return self.dit(
            x, t, context=context.to(x.device), context_mask=mask.to(x.device), force_drop_ids=force_drop_ids
        )


def frozen_encode_fn(text) -> EncodeFn | None:
    """``captions -> (context, mask)`` without gradients for a frozen encoder; None when there is
    no encoder or when it is trained with the model (then the model takes the captions)."""
    if text is None or is_trainable(text):
        return None

    def encode(captions: list[str]):
        with torch.no_grad():
            return text.encode(captions)

    return encode


def model_kwargs(
    conditioning: str,
    *,
    labels: torch.Tensor | None,
    captions: list[str] | None,
    encode: EncodeFn | None,
    device: torch.device,
    drop: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The condition arguments of ``model(x, t, **kwargs)``.

    ``encode`` None with text conditioning passes ``captions`` (a :class:`JointTextModel`);
    ``drop`` (training only) is the per-image null-condition mask.
    """
    if conditioning == "class":
        out: dict[str, Any] = {"y": labels.to(device)}
    elif conditioning == "text":
        if encode is None:
            out = {"captions": list(captions)}
        else:
            context, mask = encode(list(captions))
            out = {"context": context.to(device), "context_mask": mask.to(device)}
    else:
        return {}
    if drop is not None:
        out["force_drop_ids"] = drop
    return out
