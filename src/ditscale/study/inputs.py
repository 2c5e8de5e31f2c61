"""What a study's runs read, and which of it is missing (pure Python: no torch).

``ditscale study plan`` plans from the spec's declared shapes when the data cannot be read yet (a
latent store not extracted, ``data.path`` not set): ``data.channels`` and ``data.image_size`` give
the latent or pixel grid, the family's ``model.context_len`` / ``context_dim`` the text tokens. The
FLOPs, steps and GPU-hours of every run follow from those shapes alone; the class count (an
embedding table, outside the non-embedding N) is unknown until the data is read.

Beside the plan it lists every input a real run needs -- the image folder or caption set, the
latent store, its captions, the VAE it was encoded with, the text encoder -- each ``ready``,
``missing`` or ``unchecked`` (a hub id this module does not look up), with what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ditscale.config import from_dict
from ditscale.data.config import DataConfig, DataInfo
from ditscale.data.info import dataset_info, declared_info
from ditscale.data.store import read_meta
from ditscale.errors import DitscaleError
from ditscale.study.spec import StudySpec

NEEDS_PATH = ("folder", "captions", "latents")  # the datasets read from data.path
NOT_SET = "(not set)"  # data.path while planning a spec that leaves it out
SD_VAE_DOWN = 8  # pixels per latent cell of the SD VAEs (the usual 4-channel AutoencoderKL)


@dataclass(frozen=True)
class StudyInput:
    """One input of a study's runs.

    Attributes:
        name: what it is ("latent store", "captions", "VAE", "text encoder", "image folder", ...).
        key: the spec key that names it (e.g. ``data.path``), "" when none does.
        value: what the spec or the store gives for it, None when nothing.
        status: "ready", "missing" or "unchecked" (named, but not something this machine can check).
        detail: what was found, or what to do.
    """

    name: str
    key: str
    value: str | None
    status: str
    detail: str

    def line(self) -> str:
        """One line for the console: ``missing  latent store (data.path): ...``."""
        key = f" ({self.key})" if self.key else ""
        return f"{self.status:9s} {self.name}{key}: {self.detail}"

    def to_json(self) -> dict:
        return {"name": self.name, "key": self.key, "value": self.value, "status": self.status, "detail": self.detail}


def data_config(spec: StudySpec) -> DataConfig:
    """The spec's DataConfig, with :data:`NOT_SET` as ``path`` when a dataset that needs one has none."""
    data = dict(spec.data)
    if data.get("name") in NEEDS_PATH and not data.get("path"):
        data["path"] = NOT_SET
    return from_dict(DataConfig, data, where="data")


def planning_info(spec: StudySpec) -> tuple[DataInfo, str | None]:
    """``(DataInfo, None)`` read from the spec's data, or, when it cannot be read yet, the declared
    shape (``data.channels``, ``data.image_size``; classes unknown, 0) and a note saying why."""
    cfg = data_config(spec)
    if cfg.path == NOT_SET:
        info = DataInfo(0, cfg.channels, cfg.image_size, cfg.name == "latents", bool(cfg.captions))
        return info, "data.path is not set (planned from the declared data.channels and data.image_size)"
    return declared_info(cfg)


def study_inputs(spec: StudySpec) -> tuple[StudyInput, ...]:
    """Every input a real run of ``spec`` needs, each with its status (see :class:`StudyInput`)."""
    cfg = data_config(spec)
    if cfg.name == "latents":
        out = list(_latent_inputs(cfg))
    elif cfg.name in ("folder", "captions"):
        out = [_source_input(cfg)]
    else:
        out = [StudyInput(f"{cfg.name} data", "data.name", cfg.name, "ready", "built in (generated or shipped)")]
    if spec.family.model.get("conditioning") == "text":
        out.append(_text_encoder_input(spec))
    return tuple(out)


def _read_error(cfg: DataConfig) -> str | None:
    """Why the data of ``cfg`` cannot be read (the error a run would raise), or None when it can."""
    try:
        dataset_info(cfg)
    except DitscaleError as err:
        return str(err)
    return None


def _source_input(cfg: DataConfig) -> StudyInput:
    what = "image folder" if cfg.name == "folder" else "caption set"
    if cfg.path == NOT_SET:
        hint = "root/<class>/<image>" if cfg.name == "folder" else "image + .txt pairs or a .csv/.parquet index"
        return StudyInput(what, "data.path", None, "missing", f"not set; --set data.path=DIR ({hint})")
    error = _read_error(cfg)
    if error is not None:
        return StudyInput(what, "data.path", cfg.path, "missing", error)
    return StudyInput(what, "data.path", cfg.path, "ready", f"found, {dataset_info(cfg).num_classes} classes")


def _latent_inputs(cfg: DataConfig) -> list[StudyInput]:
    """The latent store, its captions (when asked for) and the VAE it was (or must be) encoded with."""
    error = "not set" if cfg.path == NOT_SET else _read_error(cfg)
    if error is not None:
        return _latents_to_make(cfg, error)
    meta = read_meta(cfg.path)
    out = [StudyInput("latent store", "data.path", cfg.path, "ready", f"{meta['splits']['train']:,} train images")]
    if cfg.captions:
        out.append(StudyInput("captions", "data.captions", "true", "ready", "the store carries captions"))
    vae = meta.get("vae")
    found = "recorded by the store" if vae else "the store names none (needed to decode samples)"
    out.append(StudyInput("VAE", "", vae, "ready" if vae else "missing", found))
    return out


def _latents_to_make(cfg: DataConfig, error: str) -> list[StudyInput]:
    """The inputs of a latent store that cannot be read (``error``): what to extract it from, and with."""
    px = cfg.image_size * SD_VAE_DOWN
    make = (
        f"make it with `ditscale extract-latents IMAGES --vae VAE --image-size {px} --out DIR` "
        f"({cfg.image_size}x{cfg.image_size}x{cfg.channels} latents = {px} px through an {SD_VAE_DOWN}x-down "
        f"{cfg.channels}-channel VAE), then --set data.path=DIR"
    )
    value = None if cfg.path == NOT_SET else cfg.path
    out = [StudyInput("latent store", "data.path", value, "missing", f"{error}; {make}")]
    if cfg.captions:
        caption_set = "a caption set (data.name=captions: image + .txt pairs or a .csv/.parquet index)"
        out.append(StudyInput("captions", "data.captions", "true", "missing", f"extract the store from {caption_set}"))
    vae = (
        f"a diffusers AutoencoderKL (folder or hub id, e.g. stabilityai/sd-vae-ft-ema) with {cfg.channels} "
        "latent channels, for extract-latents --vae and to decode samples"
    )
    out.append(StudyInput("VAE", "", None, "missing", vae))
    return out


def _text_encoder_input(spec: StudySpec) -> StudyInput:
    model = spec.family.model
    shape = f"model.context_len={model.get('context_len', '?')} tokens of width model.context_dim={model.get('context_dim', '?')}"
    enc = spec.train.get("text_encoder")
    if not enc:
        return StudyInput(
            "text encoder",
            "train.text_encoder",
            None,
            "missing",
            f"not set; --set train.text_encoder=PATH (a Hugging Face text encoder folder, or word); the plan counts {shape}",
        )
    if enc == "word" or Path(enc).expanduser().is_dir():
        return StudyInput("text encoder", "train.text_encoder", enc, "ready", f"found; the plan counts {shape}")
    return StudyInput(
        "text encoder",
        "train.text_encoder",
        enc,
        "unchecked",
        f"not a folder here: a hub id must be in the local Hugging Face cache; the plan counts {shape}",
    )
