"""What a sampling command asks for, checked before any image is drawn: settings, conditions, the grid.

- :class:`SamplingSettings` (:func:`sampling_settings`): seed, sampler, steps, guidance scale and
  channels, with DiT's defaults (guided 4.0 when the model has a null condition).
- :func:`read_prompts`, :func:`check_prompts`: captions typed or read from a file, for text models only.
- :func:`plan_grid`: the :class:`Conditions` of a grid (its class labels, DiT's demo classes by
  default, or its encoded prompts), with the grid's size and the whole request checked;
  :func:`grid_captions` names each cell.
- :func:`plan_npz`: the same for an evaluation-scale ``.npz`` (:func:`ditscale.generate.sample_npz`
  draws random classes, or cycles captions: the prompts, else the run's own val captions).

A command calls these before it prints anything, so a refused request prints its one-line error alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ditscale.data.config import DataConfig
from ditscale.errors import ConfigError
from ditscale.generate.grid import CAPTION_PX, grid_shape, grid_upscale
from ditscale.generate.load import Sampler
from ditscale.generate.npz import EncodeCaptions
from ditscale.generate.reference import dataset_captions
from ditscale.generate.sample import check_request, draw_labels
from ditscale.io import read_text
from ditscale.models.config import DiTConfig

# Class labels of DiT's sample.py (ImageNet: 207 golden retriever, 360 otter, 387 red panda, ...).
DIT_DEMO_CLASSES = (207, 360, 387, 974, 88, 979, 417, 279)
GRID_IMAGES = 64  # the grid of an .npz run shows this many of its first images


# -- settings -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingSettings:
    """The sampler arguments of :func:`~ditscale.generate.sample_images` and ``sample_npz``."""

    seed: int = 0
    sampler: str | None = None
    steps: int | str | None = None
    cfg_scale: float = 1.0
    guided_channels: int | str | None = "auto"

    def request(self) -> dict[str, Any]:
        """The settings :func:`~ditscale.generate.check_request` checks."""
        return {"sampler": self.sampler, "steps": self.steps, "cfg_scale": self.cfg_scale}

    def kwargs(self) -> dict[str, Any]:
        """All the settings, as keyword arguments of ``sample_images`` / ``sample_npz``."""
        return asdict(self)


def sampling_settings(
    config: DiTConfig,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | str | None = None,
    cfg_scale: float | None = None,
    guided_channels: int | None = None,
) -> SamplingSettings:
    """The settings asked for, defaults filled: ``cfg_scale`` 4.0 (DiT's ``sample.py``) for a model
    trained with a null condition (label or caption dropout), else 1.0 (no guidance); ``steps`` given
    as digits become a count ("250" -> 250; "ddim25" stays a respacing); ``guided_channels`` the
    diffusion config's ("auto")."""
    has_null = config.conditioning in ("class", "text") and config.class_dropout_prob > 0
    scale = cfg_scale if cfg_scale is not None else (4.0 if has_null else 1.0)
    steps = int(steps) if isinstance(steps, str) and steps.isdigit() else steps
    return SamplingSettings(seed, sampler, steps, scale, "auto" if guided_channels is None else guided_channels)


# -- prompts ------------------------------------------------------------------------------------------
def read_prompts(prompts: Sequence[str] | None = None, path: str | None = None) -> list[str] | None:
    """The captions of a file ``path`` (one per non-blank line), else ``prompts``; None when neither."""
    if path is None:
        return None if prompts is None else list(prompts)
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"--prompts file '{path}' does not exist; give a text file with one caption per line")
    found = [line.strip() for line in read_text(file, ConfigError).splitlines() if line.strip()]
    if not found:
        raise ConfigError(f"--prompts file '{path}' holds no captions; write one caption per line")
    return found


def check_prompts(config: DiTConfig, prompts: Sequence[str] | None, *, optional: bool = False) -> None:
    """Prompts go with text-conditional models, and only with them (``optional``: may be left out)."""
    if config.conditioning == "text" and prompts is None and not optional:
        raise ConfigError("this model is text-conditional: pass --prompt TEXT (repeatable) or --prompts FILE")
    if config.conditioning != "text" and prompts is not None:
        raise ConfigError(
            f"--prompt/--prompts are for text-conditional models; this one has conditioning={config.conditioning!r}: "
            "use --classes or --num-images"
        )


# -- a grid -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Conditions:
    """What a grid draws: class ``labels`` (one per image), or ``num_images`` unlabelled ones, or the
    ``prompts`` encoded as ``context`` ``(N, L, D)`` and its keep-mask ``context_mask`` ``(N, L)``."""

    labels: list[int] | None = None
    num_images: int | None = None
    context: torch.Tensor | None = None
    context_mask: torch.Tensor | None = None
    prompts: list[str] | None = None

    @property
    def count(self) -> int:
        return len(self.labels) if self.labels is not None else self.num_images

    def kwargs(self) -> dict[str, Any]:
        """The condition arguments of :func:`~ditscale.generate.sample_images`."""
        return {
            "labels": self.labels,
            "num_images": self.num_images,
            "context": self.context,
            "context_mask": self.context_mask,
        }


def parse_classes(text: str) -> list[int]:
    """Comma-separated class labels: ``"207, 360"`` -> ``[207, 360]``."""
    try:
        return [int(c) for c in text.replace(" ", "").split(",") if c]
    except ValueError:
        raise ConfigError(f"--classes must be comma-separated integers, got {text!r}") from None


def _class_conditions(model: torch.nn.Module, classes: str | None, num_images: int | None, seed: int) -> Conditions:
    """``classes``, or ``num_images`` random classes drawn from ``seed`` (named, so the grid can show
    them), or by default DiT's demo classes (a 1000-class model) or 8 random ones."""
    config, labels = model.config, None
    if classes is not None:
        labels = parse_classes(classes)
    elif num_images is None:
        num_images = len(DIT_DEMO_CLASSES)
        if config.conditioning == "class" and config.num_classes == 1000:
            labels = list(DIT_DEMO_CLASSES)
    if config.conditioning != "class" and labels is not None:
        raise ConfigError("this model is unconditional and takes no --classes; use --num-images N")
    if config.conditioning == "class" and labels is None:
        labels = draw_labels(model, num_images, seed).tolist()
    return Conditions(labels=labels, num_images=None if labels is not None else num_images)


def _text_conditions(sampler: Sampler, prompts: list[str]) -> Conditions:
    encoder = sampler.text_encoder()
    with torch.no_grad():
        context, context_mask = encoder.encode(prompts)
    return Conditions(num_images=len(prompts), context=context, context_mask=context_mask, prompts=list(prompts))


def check_grid(side: int, n: int, nrow: int | None = None, upscale: int | None = None) -> None:
    """A grid of ``n`` images of ``side`` pixels fits (:func:`~ditscale.generate.grid_shape`), shown at
    ``upscale`` (default :func:`~ditscale.generate.grid.grid_upscale`)."""
    grid_shape(n, side, side, nrow, upscale=grid_upscale(upscale, side, side), caption_px=CAPTION_PX)


def plan_grid(
    sampler: Sampler,
    settings: SamplingSettings,
    *,
    prompts: list[str] | None = None,
    classes: str | None = None,
    num_images: int | None = None,
    nrow: int | None = None,
    upscale: int | None = None,
) -> Conditions:
    """The conditions of a grid of ``prompts`` (encoded by :meth:`Sampler.text_encoder`), of
    ``classes`` ("207,360") or of ``num_images``, with the grid (``nrow``, ``upscale``) and the
    settings checked, so sampling then raises no user error."""
    if prompts is not None:
        conditions = _text_conditions(sampler, prompts)
    else:
        conditions = _class_conditions(sampler.model, classes, num_images, settings.seed)
    check_grid(sampler.image_side, conditions.count, nrow, upscale)
    check_request(
        sampler.model,
        sampler.diffusion,
        **settings.request(),
        labels=conditions.labels,
        num_images=conditions.num_images,
        context=conditions.context,
    )
    return conditions


def grid_captions(conditions: Conditions, class_names: Sequence[str] | None = None) -> list[str] | None:
    """Each cell's caption: its prompt, or its class (``3 ring`` with ``class_names``, else ``3``);
    None for an unconditional model."""
    if conditions.prompts is not None:
        return list(conditions.prompts)
    if conditions.labels is None:
        return None
    return [f"{y} {class_names[y]}" if class_names else str(y) for y in conditions.labels]


# -- an .npz at evaluation scale ----------------------------------------------------------------------
def check_npz_request(
    num_samples: int | None, npz: str | None, *, classes: str | None = None, num_images: int | None = None
) -> None:
    """An ``.npz`` of ``num_samples`` random classes or cycled captions needs a file ``npz`` to go to,
    and takes no ``classes`` nor ``num_images`` (checked first, before anything is read)."""
    if num_samples is None:
        return
    if not npz:
        raise ConfigError("--num-samples needs --npz FILE to write the images to (the grid shows only the first 64)")
    if classes is not None or num_images is not None:
        raise ConfigError("--num-samples draws uniform random classes (as sample_ddp.py); drop --classes/--num-images")


@dataclass(frozen=True)
class NpzPlan:
    """The captions a text model's ``.npz`` cycles and the encoder of them (None for other models),
    with ``notes`` for the user."""

    captions: list[str] | None = None
    encode_captions: EncodeCaptions | None = None
    notes: tuple[str, ...] = ()


def _npz_captions(
    sampler: Sampler, prompts: list[str] | None, data_config: DataConfig | None, num_samples: int
) -> NpzPlan:
    """``prompts``, else the captions of items 0..N-1 of the run's val split, and their encoder."""
    if prompts is None and data_config is None:
        raise ConfigError(
            "this text-conditional model has no run config to take captions from; "
            "pass --prompts FILE (cycled over the samples)"
        )
    encoder = sampler.text_encoder()
    if prompts is not None:
        return NpzPlan(prompts, encoder.encode)
    captions = dataset_captions(data_config, num_samples, split="val")
    note = f"prompting with the captions of items 0..{num_samples - 1} of the run's {data_config.name} val split"
    return NpzPlan(captions, encoder.encode, (note,))


def plan_npz(
    sampler: Sampler,
    settings: SamplingSettings,
    *,
    num_samples: int,
    prompts: list[str] | None = None,
    data_config: DataConfig | None = None,
    nrow: int | None = None,
    upscale: int | None = None,
) -> NpzPlan:
    """Check an ``.npz`` of ``num_samples`` images (its grid of the first :data:`GRID_IMAGES`, the
    settings); a text model's captions are ``prompts``, else those of its run's ``data_config``."""
    check_grid(sampler.image_side, min(num_samples, GRID_IMAGES), nrow, upscale)
    check_request(sampler.model, sampler.diffusion, **settings.request(), conditions=False)
    if sampler.config.conditioning != "text":
        return NpzPlan()
    return _npz_captions(sampler, prompts, data_config, num_samples)


def exported_class_names(path: str | Path) -> list[str] | None:
    """The class names an exported folder records (``ditscale export``: ``model_index.json``'s
    ``id2label``), in label order; None when ``path`` is not such a folder or names none."""
    index = Path(path) / "model_index.json"
    try:
        labels = json.loads(index.read_text()).get("id2label") if index.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(labels, dict) or not labels:
        return None
    try:
        return [str(labels[str(i)]) for i in range(len(labels))]
    except KeyError:  # not 0 .. n-1: the labels cannot be named in order
        return None
