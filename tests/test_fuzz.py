"""The fuzz catalogue (issue 12): every command, run on bad input, ends in one line and exit status 2.

Each case builds its bad input in a fresh folder and runs ``ditscale ...`` in-process. It passes when
the command returns 2, prints exactly one line on stderr, ``ditscale: error: ...`` holding the
expected words, no traceback, and leaves the run or study folder it was pointed at unchanged (every
file's bytes and mode hashed before and after). A hang fails the case after :data:`TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import io
import pickle
import resource
import shutil
import signal
import socket
import struct
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ditscale.cli import main
from ditscale.models.diffusers_io import save_transformer, scheduler_config
from ditscale.models.io import load_model, read_metadata
from ditscale.train.config import load_train_config
from ditscale.train.loop import train
from test_laws_study import SPEC as STUDY_SPEC
from test_laws_study import synthetic_study
from test_train import MICRO

TIMEOUT_S = 60  # no case needs more than a few seconds; a hang becomes a failure
HEADROOM = 3 * 2**30  # address space a case may add to the process (RLIMIT_AS): a few GB


# -- the world the cases point at -----------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished 2-step micro run, a finished synthetic study (no training), a good runs CSV and a
    good sample batch."""
    root = tmp_path_factory.mktemp("fuzz")
    torch.set_num_threads(1)
    train(load_train_config("tiny", [*MICRO, "max_steps=2"]), root / "run", progress=False)
    synthetic_study(root / "study", STUDY_SPEC)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    np.savez(root / "batch.npz", arr_0=images)
    weights = next((root / "run").rglob("ema.safetensors"))
    return SimpleNamespace(
        root=root,
        run=root / "run",
        study=root / "study",
        csv=root / "study" / "runs.csv",
        batch=root / "batch.npz",
        weights=weights,
        diffusers=_diffusers_folder(weights, root / "diffusers"),
    )


def _diffusers_folder(weights: Path, folder: Path) -> Path:
    """The micro run's weights as a diffusers DiT folder: transformer/ (config.json, weights) and scheduler/."""
    model = load_model(weights)
    save_transformer(model.state_dict(), model.config, folder / "transformer")
    scheduler = scheduler_config({"noise_schedule": "linear", "diffusion_steps": 1000, "predict": "epsilon"})
    _write(folder / "scheduler" / "scheduler_config.json", json.dumps(scheduler))
    assert read_metadata(folder)["model"] == model.config.to_dict()
    return folder


def tree_hash(path: Path) -> str:
    """SHA-256 over every file below ``path``: relative name, mode and bytes."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + oct(p.stat().st_mode).encode() + p.read_bytes())
    return h.hexdigest()


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def _flip_byte(path: Path, at: int = 10) -> Path:
    data = bytearray(path.read_bytes())
    data[at] = 0xFF
    path.write_bytes(bytes(data))
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


class _Hostile:
    def __reduce__(self):  # runs `true` if unpickled
        return (os.system, ("true",))


def _safetensors(path: Path, metadata: dict | None) -> Path:
    save_file({"x": torch.zeros(2)}, str(path), metadata=metadata)
    return path


# -- the catalogue --------------------------------------------------------------------------------
# name -> (build(world, tmp) -> (argv, folder that must stay unchanged or None), words in the error)
Case = Callable[[SimpleNamespace, Path], tuple[list[str], Path | None]]
CASES: dict[str, tuple[Case, str]] = {}


def case(name: str, words: str):
    def register(build: Case) -> Case:
        CASES[name] = (build, words)
        return build

    return register


def simple(name: str, words: str, *argv: str) -> None:
    case(name, words)(lambda w, t: ([a.format(w=w, t=t) for a in argv], None))


# flops
simple("flops mlp-ratio nan", "must be a finite number", "flops", "DiT-S/2", "--mlp-ratio", "nan")
simple("flops mlp-ratio inf", "must be a finite number", "flops", "DiT-S/2", "--mlp-ratio", "inf")
simple("flops negative depth", "must be between 1", "flops", "custom", "--depth", "-3")
simple("flops huge input", "must be between 1", "flops", "DiT-S/2", "--input-size", "1e30")
simple("flops word for number", "is not an integer", "flops", "DiT-S/2", "--hidden-size", "wide")
simple("flops unknown model", "unknown model", "flops", "DiT-XXL/2")
simple("flops negative budget", "must be >= 0", "flops", "DiT-S/2", "--flops", "-1")
simple("flops unknown option", "unrecognized arguments", "flops", "DiT-S/2", "--bogus")
simple("flops missing preset file", "does not exist", "flops", "{t}/none.yaml")
case("flops non-utf8 preset", "is not UTF-8")(
    lambda w, t: (["flops", str(_write(t / "c.yaml", b"model: \xff\n"))], None)
)

# fit
simple("fit missing csv", "", "fit", "isoflop", "{t}/none.csv")
simple("fit bootstrap huge", "must be between 0 and 100,000", "fit", "isoflop", "x.csv", "--bootstrap", "1000000000")
simple("fit seed negative", "must be between 0", "fit", "isoflop", "x.csv", "--seed", "-1")
simple("fit predict nan", "must be a finite number", "fit", "isoflop", "x.csv", "--predict", "nan")
simple("fit csv is a folder", "", "fit", "isoflop", "{t}")
case("fit out is a folder", "is a folder")(lambda w, t: (["fit", "isoflop", str(w.csv), "--out", str(t)], None))
case("fit non-utf8 csv", "UTF-8")(
    lambda w, t: (["fit", "isoflop", str(_flip_byte(Path(shutil.copy(w.csv, t / "r.csv"))))], None)
)
case("fit empty csv", "")(lambda w, t: (["fit", "isoflop", str(_write(t / "r.csv", ""))], None))
case("fit truncated csv", "")(
    lambda w, t: (["fit", "isoflop", str(_truncate(Path(shutil.copy(w.csv, t / "r.csv")), 0.03))], None)
)
case("fit nan loss", "")(
    lambda w, t: (
        [
            "fit",
            "isoflop",
            str(_write(t / "r.csv", "flops,params,tokens,loss\n1e9,10,10,nan\n1e9,20,5,0.5\n1e9,40,2,0.6\n")),
        ],
        None,
    )
)

# eval
simple("eval missing batch", "", "eval", "{t}/none.npz", "--ref", "{t}/none2.npz")
case("eval batch is an empty folder", "")(lambda w, t: (["eval", str(t), "--ref", str(w.batch)], None))
case("eval not an npz", "")(
    lambda w, t: (["eval", str(_write(t / "s.npz", b"not a zip")), "--ref", str(w.batch)], None)
)
case("eval truncated npz", "")(
    lambda w, t: (["eval", str(_truncate(Path(shutil.copy(w.batch, t / "s.npz")))), "--ref", str(w.batch)], None)
)
case("eval pickled npz", "")(lambda w, t: (["eval", str(_pickled_npz(t / "s.npz")), "--ref", str(w.batch)], None))
case("eval batch size 0", "must be between 1")(
    lambda w, t: (["eval", str(w.batch), "--ref", str(w.batch), "--batch-size", "0"], None)
)
case("eval unknown device", "is not a device")(
    lambda w, t: (["eval", str(w.batch), "--ref", str(w.batch), "--device", "tpu:7"], None)
)
case("eval ref stats to a folder", "is a folder")(
    lambda w, t: (
        ["eval", str(w.batch), "--ref", str(w.batch), "--evaluator", "inception", "--save-ref-stats", str(t)],
        None,
    )
)


def _pickled_npz(path: Path) -> Path:
    np.savez(path, arr_0=np.array([_Hostile()], dtype=object))
    return path


# data export
simple("data export num 0", "must be between 1", "data", "export", "shapes", "--num", "0", "--out", "{t}/x.npz")
simple("data export num huge", "must be between 1", "data", "export", "shapes", "--num", "1e12", "--out", "{t}/x.npz")
simple("data export out is a folder", "is a folder", "data", "export", "shapes", "--num", "2", "--out", "{t}")
simple(
    "data export unknown dataset", "unknown dataset", "data", "export", "imagenet", "--num", "2", "--out", "{t}/x.npz"
)
simple(
    "data export seed negative",
    "must be between 0",
    "data",
    "export",
    "shapes",
    "--num",
    "2",
    "--seed",
    "-4",
    "--out",
    "{t}/x.npz",
)
case("data export out under a file", "is a file, not a folder")(
    lambda w, t: (["data", "export", "shapes", "--num", "2", "--out", str(_write(t / "f", "x") / "x.npz")], None)
)

case("data export non-utf8 file name", "")(
    lambda w, t: (
        ["data", "export", "folder", "--set", f"path={_odd_names(t)}", "--num", "1", "--out", str(t / "x.npz")],
        None,
    )
)


def _odd_names(t: Path) -> Path:
    """An image folder with one class whose only file name is not UTF-8 (and not an image)."""
    (t / "imgs" / "cat").mkdir(parents=True)
    Path(os.fsdecode(bytes(t / "imgs" / "cat") + b"/\xff\xfe.png")).write_bytes(b"not a png")
    return t / "imgs"


# extract-latents
simple(
    "extract count negative",
    "must be between 1",
    "extract-latents",
    "shapes",
    "--vae",
    "v",
    "--out",
    "{t}/s",
    "--count",
    "-5",
)
simple(
    "extract device cuda",
    "CUDA is not available",
    "extract-latents",
    "shapes",
    "--vae",
    "v",
    "--out",
    "{t}/s",
    "--device",
    "cuda",
)
case("extract out is a file", "is a file, not a folder")(
    lambda w, t: (["extract-latents", "shapes", "--vae", "v", "--out", str(_write(t / "f", "x")), "--count", "4"], None)
)

# train
case("train config is a folder", "")(lambda w, t: (["train", str(t), "--out", str(t / "r")], None))
TRAIN = ["train", "tiny", "--out"]
simple("train lr nan", "must be a finite number", *TRAIN, "{t}/r", "optim.lr=nan")
simple("train lr inf", "must be a finite number", *TRAIN, "{t}/r", "optim.lr=.inf")
simple("train seed huge", "must be between 0", *TRAIN, "{t}/r", "--seed", "999999999999999999999999")
simple("train steps and flops", "not allowed with", *TRAIN, "{t}/r", "--max-steps", "3", "--flops", "1e9")
simple("train steps negative", "must be between 1", *TRAIN, "{t}/r", "--max-steps", "-1")
simple("train batch beyond memory", "GiB available; lower batch_size", *TRAIN, "{t}/r", "batch_size=10000000")
simple("train unknown key", "unknown key", *TRAIN, "{t}/r", "optim.learning_rate=1")
simple("train unknown preset", "unknown training config", "train", "tinyy", "--out", "{t}/r")
case("train out is a file", "is a file, not a folder")(lambda w, t: ([*TRAIN, str(_write(t / "f", "x"))], None))
case("train empty config", "max_steps")(
    lambda w, t: (["train", str(_write(t / "c.yaml", "")), "--out", str(t / "r")], None)
)
case("train duplicate keys", "duplicate key 'max_steps'")(
    lambda w, t: (["train", str(_write(t / "c.yaml", "max_steps: 3\nmax_steps: 4\n")), "--out", str(t / "r")], None)
)
case("train yaml tag", "is not allowed")(
    lambda w, t: (
        ["train", str(_write(t / "c.yaml", "seed: !!python/object/apply:os.system ['true']\n")), "--out", str(t / "r")],
        None,
    )
)
case("train non-utf8 config", "is not UTF-8")(
    lambda w, t: (["train", str(_write(t / "c.yaml", b"max_steps: 3\n# \xff\xfe\n")), "--out", str(t / "r")], None)
)
case("train negative seed in config", "seed")(
    lambda w, t: (["train", str(_write(t / "c.yaml", "max_steps: 3\nseed: -1\n")), "--out", str(t / "r")], None)
)
case("train text without an encoder", "no text_encoder is set")(
    lambda w, t: ([*TRAIN, str(t / "r"), "model.conditioning=text", "model.block=cross_attn", "data.captions=true"], t)
)
case("train a held run folder", "is being trained by another process")(
    lambda w, t: ([*TRAIN, str(_held_run(t))], t / "held")
)


def _held_run(t: Path) -> Path:
    """A run folder whose lock a live process (this one's parent) holds."""
    run = t / "held"
    _write(run / "run.lock", json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "time": 0}))
    return run


# sample
case("sample missing ckpt", "does not exist")(
    lambda w, t: (["sample", str(t / "none.safetensors"), "--out", str(t / "g.png")], None)
)
case("sample folder not a run", "")(lambda w, t: (["sample", str(t), "--out", str(t / "g.png")], None))
case("sample out is a folder", "is a folder")(lambda w, t: (["sample", str(w.run), "--out", str(t)], w.run))
case("sample npz is a folder", "is a folder")(
    lambda w, t: (["sample", str(w.run), "--out", str(t / "g.png"), "--npz", str(t)], w.run)
)
case("sample device cuda", "CUDA is not available")(lambda w, t: (["sample", str(w.run), "--device", "cuda"], w.run))
case("sample device tpu", "is not a device")(lambda w, t: (["sample", str(w.run), "--device", "tpu:7"], w.run))
case("sample upscale huge", "must be between 1 and 64")(
    lambda w, t: (["sample", str(w.run), "--upscale", "100000"], w.run)
)
case("sample grid too large", "lower --upscale or the number of images")(
    lambda w, t: (["sample", str(w.run), "--num-images", "4096", "--upscale", "64", "--out", str(t / "g.png")], w.run)
)
case("sample cfg nan", "must be a finite number")(lambda w, t: (["sample", str(w.run), "--cfg-scale", "nan"], w.run))
case("sample num-images 0", "must be between 1")(lambda w, t: (["sample", str(w.run), "--num-images", "0"], w.run))
case("sample steps a word", "")(
    lambda w, t: (["sample", str(w.run), "--steps", "many", "--out", str(t / "g.png")], w.run)
)
case("sample classes out of range", "")(
    lambda w, t: (["sample", str(w.run), "--classes", "0,99999", "--out", str(t / "g.png")], w.run)
)
case("sample bad classes", "")(
    lambda w, t: (["sample", str(w.run), "--classes", "a,b", "--out", str(t / "g.png")], w.run)
)
case("sample metadata not json", "")(
    lambda w, t: (
        ["sample", str(_safetensors(t / "m.safetensors", {"ditscale": "not json"})), "--out", str(t / "g.png")],
        None,
    )
)
case("sample metadata a list", "")(
    lambda w, t: (
        ["sample", str(_safetensors(t / "m.safetensors", {"ditscale": "[1, 2]"})), "--out", str(t / "g.png")],
        None,
    )
)
case("sample metadata absurd sizes", "GiB of memory")(
    lambda w, t: (
        [
            "sample",
            str(
                _safetensors(
                    t / "m.safetensors",
                    {
                        "ditscale": json.dumps(
                            {
                                "model": {
                                    "depth": 10**9,
                                    "hidden_size": 10**9,
                                    "num_heads": 1,
                                    "patch_size": 2,
                                    "input_size": 8,
                                    "in_channels": 3,
                                }
                            }
                        )
                    },
                )
            ),
            "--out",
            str(t / "g.png"),
        ],
        None,
    )
)
case("sample header absurd length", "")(
    lambda w, t: (
        ["sample", str(_write(t / "m.safetensors", struct.pack("<Q", 2**60) + b"{}")), "--out", str(t / "g.png")],
        None,
    )
)
case("sample truncated weights", "")(
    lambda w, t: (
        ["sample", str(_truncate(Path(shutil.copy(w.weights, t / "m.safetensors")))), "--out", str(t / "g.png")],
        None,
    )
)
case("sample hostile pickle", "pickles posix.system, not just tensors")(
    lambda w, t: (
        [  # pixel-space and sized, so the weights are what is refused (not the missing --vae or --image-size)
            "sample",
            str(_write(t / "m.pt", pickle.dumps({"model": _Hostile()}))),
            "--model",
            "DiT-S/2",
            "--image-size",
            "32",
            "--model-opt",
            "in_channels=3",
            "--out",
            str(t / "g.png"),
        ],
        None,
    )
)

# export
case("export missing run", "")(lambda w, t: (["export", str(t / "none"), "--out", str(t / "e")], None))
case("export a folder that is not a run", "")(lambda w, t: (["export", str(t), "--out", str(t / "e")], None))
case("export out exists", "already exists")(lambda w, t: (["export", str(w.run), "--out", str(t)], w.run))
case("export unknown format", "invalid choice")(
    lambda w, t: (["export", str(w.run), "--format", "onnx", "--out", str(t / "e")], w.run)
)

# outputs never overlap inputs (issue 24: `export RUN --out RUN --overwrite` deleted the run it exported)
case("export out is the run", "is the input RUN")(
    lambda w, t: (["export", str(_copy(w.run, t / "r")), "--out", str(t / "r"), "--overwrite"], t / "r")
)
case("export out contains the run", "contains the input RUN")(
    lambda w, t: (["export", str(_copy(w.run, t / "r")), "--out", str(t), "--overwrite", "--format", "safetensors"], t)
)
case("export out inside the run", "lies inside the input RUN")(
    lambda w, t: (["export", str(_copy(w.run, t / "r")), "--out", str(t / "r" / "checkpoints"), "--overwrite"], t)
)
case("export out a link to the run", "is the input RUN")(
    lambda w, t: (["export", str(_copy(w.run, t / "r")), "--out", str(_link(t / "l", t / "r")), "--overwrite"], t)
)
case("export out contains the checkpoint", "contains the input RUN")(
    lambda w, t: (
        ["export", str(next(_copy(w.run, t / "r").glob("checkpoints/step_*"))), "--out", str(t / "r"), "--overwrite"],
        t,
    )
)
case("sample npz inside the run", "lies inside the input CKPT")(
    lambda w, t: (["sample", str(_copy(w.run, t / "r")), "--out", str(t / "g.png"), "--npz", str(t / "r" / "x.npz")], t)
)
case("sample out inside the checkpoint's run", "lies inside the input CKPT's run folder")(
    lambda w, t: (
        ["sample", str(next(_copy(w.run, t / "r").glob("checkpoints/step_*"))), "--out", str(t / "r" / "config.yaml")],
        t,
    )
)
case("fit out is the csv", "is the input CSV")(
    lambda w, t: (["fit", "isoflop", str(Path(shutil.copy(w.csv, t / "r.csv"))), "--out", str(t / "r.csv")], t)
)
case("eval ref stats over the reference", "is the input --ref")(
    lambda w, t: (
        ["eval", str(w.batch), "--ref", str(Path(shutil.copy(w.batch, t / "ref.npz"))), "--evaluator", "inception"]
        + ["--inception", str(t / "none.pth"), "--save-ref-stats", str(t / "ref.npz")],
        t,
    )
)
case("data export out is the config", "is the input --config")(
    lambda w, t: (
        ["data", "export", "--config", str(_write(t / "c.yaml", "data: {name: shapes, image_size: 8}\n"))]
        + ["--num", "2", "--out", str(t / "c.yaml")],
        t,
    )
)
case("extract out is the image folder", "is the input DATA")(
    lambda w, t: (["extract-latents", str(_images(t)), "--vae", "v", "--out", str(t / "imgs")], t)
)
case("train out is the data folder", "is the input data.path")(
    lambda w, t: ([*TRAIN, str(_images(t)), *MICRO, "max_steps=2", "data.name=folder", f"data.path={t / 'imgs'}"], t)
)


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _images(t: Path) -> Path:
    """An image folder with one class of two 8x8 PNGs."""
    from PIL import Image

    (t / "imgs" / "cat").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(t / "imgs" / "cat" / f"{i}.png")
    return t / "imgs"


# a resumed run never writes through a link planted in its folder (issue 24: train.log -> outside file)
def _planted(w: SimpleNamespace, t: Path, name: str) -> list[str]:
    """A copy of the world's run to resume (its result.json removed), ``name`` a link to a file outside."""
    run = _copy(w.run, t / "r")
    (run / "result.json").unlink()
    _write(t / "outside.txt", "not the run's\n")
    (run / name).unlink()
    (run / name).symlink_to(t / "outside.txt")
    return [*TRAIN, str(run), "--no-progress", *MICRO, "max_steps=2"]


case("train resume through a train.log link", "is a symbolic link")(lambda w, t: (_planted(w, t, "train.log"), t))
case("train resume through a metrics.jsonl link", "is a symbolic link")(
    lambda w, t: (_planted(w, t, "metrics.jsonl"), t)
)

# train --force with another architecture: refused before config.yaml is rewritten (issue 24)
case("train force another architecture", "another architecture")(
    lambda w, t: (
        [*TRAIN, str(_copy(w.run, t / "r")), "--force", "--no-progress", *MICRO, "max_steps=3", "model.hidden_size=64"],
        t / "r",
    )
)

# a FIFO where a file is read is refused, never read (it would block forever; issue 24)
case("fit csv is a fifo", "is a FIFO")(lambda w, t: (["fit", "isoflop", str(_fifo(t / "r.csv"))], None))
case("train config.yaml is a fifo", "is a FIFO")(
    lambda w, t: ([*TRAIN, str(_fifo_in(_copy(w.run, t / "r"), "config.yaml")), *MICRO, "max_steps=2"], t / "r")
)
case("report runs.csv is a fifo", "is a FIFO")(
    lambda w, t: (["study", "report", str(_fifo_in(_copy(w.study, t / "study"), "runs.csv"))], t / "study")
)


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _fifo_in(folder: Path, name: str) -> Path:
    (folder / name).unlink()
    _fifo(folder / name)
    return folder


# study plan / run
simple("study plan unknown preset", "unknown study", "study", "plan", "--preset", "nope")
simple(
    "study plan prior nan",
    "must be a finite number",
    "study",
    "plan",
    "--preset",
    "quickstart",
    "--set",
    "prior.coefficient=nan",
)
simple(
    "study plan target inf",
    "must be a finite number",
    "study",
    "plan",
    "--preset",
    "quickstart",
    "--set",
    "target_flops=.inf",
)
simple(
    "study plan lr nan", "must be a finite number", "study", "plan", "--preset", "quickstart", "--set", "hparams.lr=nan"
)
simple("study plan unknown key", "unknown key", "study", "plan", "--preset", "quickstart", "--set", "hparams.lrr=1")
simple("study plan mfu above 1", "must be at most 1", "study", "plan", "--preset", "quickstart", "--mfu", "2")
case("study plan non-utf8 spec", "is not UTF-8")(
    lambda w, t: (["study", "plan", str(_write(t / "s.yaml", b"name: x\xff\n"))], None)
)
case("study plan spec tag", "is not allowed")(
    lambda w, t: (["study", "plan", str(_write(t / "s.yaml", "name: !!python/object:os.system x\n"))], None)
)
case("study plan duplicate keys", "duplicate key")(
    lambda w, t: (["study", "plan", str(_write(t / "s.yaml", "name: a\nname: b\n"))], None)
)
case("study plan truncated plan.csv", "plan.csv")(
    lambda w, t: (["study", "plan", "--preset", "quickstart", "--out", str(_cut_plan(t))], t / "study")
)
simple(
    "study run max-runs negative",
    "must be between 0",
    "study",
    "run",
    "--preset",
    "quickstart",
    "--out",
    "{t}/s",
    "--max-runs",
    "-1",
)
simple(
    "study run workers negative",
    "must be between 0",
    "study",
    "run",
    "--preset",
    "quickstart",
    "--out",
    "{t}/s",
    "--workers",
    "-1",
)
case("study run out is a file", "is a file, not a folder")(
    lambda w, t: (["study", "run", "--preset", "quickstart", "--out", str(_write(t / "f", "x"))], None)
)
case("study run bad run id", "is not a run name")(
    lambda w, t: (["study", "run", "--preset", "quickstart", "--out", str(_evil_plan(t))], t / "study")
)
case("study run plans no run", "the spec plans no run")(  # refused before the folder is created
    lambda w, t: (["study", "run", "--preset", "quickstart", "--set", "min_steps=10000000", "--out", f"{t}/s"], t / "s")
)
case("study run duplicate run id", "is given twice (row 7)")(  # refused before any run trains
    lambda w, t: (["study", "run", "--preset", "quickstart", "--out", str(_twice_plan(t))], t / "study")
)


def _quickstart_folder(t: Path) -> Path:
    """A started quickstart study folder (spec.yaml and plan.csv, nothing trained)."""
    from ditscale.study import load_spec
    from ditscale.study.folder import StudyFolder
    from ditscale.study.replan import current_plan

    spec = load_spec("quickstart")
    folder = StudyFolder(t / "study")
    folder.create()
    folder.write_spec(spec)
    folder.write_plan(current_plan(spec, None).runs)
    return folder.root


def _cut_plan(t: Path) -> Path:
    root = _quickstart_folder(t)
    _truncate(root / "plan.csv", 0.5)
    return root


def _flipped_plan(t: Path) -> Path:
    root = _quickstart_folder(t)
    _flip_byte(root / "plan.csv", 200)
    return root


def _evil_plan(t: Path) -> Path:
    root = _quickstart_folder(t)
    text = (root / "plan.csv").read_text().splitlines()
    first = text[1].split(",")
    first[0] = "../../../escaped"
    (root / "plan.csv").write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    return root


def _twice_plan(t: Path) -> Path:
    """A started quickstart folder whose plan.csv gives its first run again as its 6th row."""
    root = _quickstart_folder(t)
    text = (root / "plan.csv").read_text().splitlines()
    (root / "plan.csv").write_text("\n".join([*text[:6], text[1], *text[6:]]) + "\n")
    return root


# study predict / compare / report
case("predict not a study", "is not a study folder")(lambda w, t: (["study", "predict", str(t)], None))
case("predict flops nan", "must be a finite number")(
    lambda w, t: (["study", "predict", str(w.study), "--flops", "nan"], w.study)
)
case("predict flops negative", "must be > 0")(
    lambda w, t: (["study", "predict", str(w.study), "--flops", "-1"], w.study)
)
case("predict non-utf8 runs.csv", "UTF-8")(
    lambda w, t: (["study", "predict", str(_damaged_study(w, t, "runs.csv", _flip_byte))], t / "study")
)
case("predict truncated spec", "truncated")(
    lambda w, t: (["study", "predict", str(_damaged_study(w, t, "spec.yaml", _truncate))], t / "study")
)
case("predict spec tag", "is not allowed")(
    lambda w, t: (["study", "predict", str(_damaged_study(w, t, "spec.yaml", _tagged))], t / "study")
)
case("predict non-utf8 spec", "is not UTF-8")(
    lambda w, t: (["study", "predict", str(_damaged_study(w, t, "spec.yaml", _flip_byte))], t / "study")
)
case("study plan non-utf8 plan.csv", "is not UTF-8")(
    lambda w, t: (["study", "plan", "--preset", "quickstart", "--out", str(_flipped_plan(t))], t / "study")
)
case("compare missing study", "is not a study folder")(
    lambda w, t: (["study", "compare", str(w.study), str(t)], w.study)
)
case("compare flops inf", "must be a finite number")(
    lambda w, t: (["study", "compare", str(w.study), str(w.study), "--flops", "inf"], w.study)
)
case("report truncated runs.csv", "runs.csv")(
    lambda w, t: (["study", "report", str(_damaged_study(w, t, "runs.csv", lambda p: _truncate(p, 0.02)))], t / "study")
)
case("report spec tag", "is not allowed")(
    lambda w, t: (["study", "report", str(_damaged_study(w, t, "spec.yaml", _tagged))], t / "study")
)
case("report laws.json is a folder", "laws.json")(
    lambda w, t: (["study", "report", str(_damaged_study(w, t, "laws.json", _folder))], t / "study")
)
case("report runs.csv binary", "")(
    lambda w, t: (
        ["study", "report", str(_damaged_study(w, t, "runs.csv", lambda p: _write(p, os.urandom(300))))],
        t / "study",
    )
)


def _damaged_study(w: SimpleNamespace, t: Path, name: str, damage: Callable[[Path], Path]) -> Path:
    root = _copy(w.study, t / "study")
    damage(root / name)
    return root


def _folder(path: Path) -> Path:
    path.unlink()
    path.mkdir()
    return path


def _tagged(path: Path) -> Path:
    path.write_text("name: !!python/object/apply:os.system ['true']\n")
    return path


# sizes bounded before anything is allocated, from every source (issue 24.4); diffusers folders (24.3)
def _diffusers_edit(w: SimpleNamespace, t: Path, file: str, **changes) -> Path:
    """A copy of the world's diffusers folder with ``changes`` made to the JSON ``file`` (text values
    given as ``RAW:...`` are written as they are: NaN, Infinity)."""
    folder = _copy(w.diffusers, t / "d")
    data = json.loads((folder / file).read_text())
    data.update(changes)
    text = json.dumps(data)
    for value in changes.values():
        if isinstance(value, str) and value.startswith("RAW:"):
            text = text.replace(json.dumps(value), value[4:])
    (folder / file).write_text(text)
    return folder


def _sharded(w: SimpleNamespace, t: Path, shard) -> Path:
    """The diffusers folder with its weights moved out, beside it, and an index naming ``shard`` for every tensor."""
    folder = _copy(w.diffusers, t / "d")
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    keys = list(_safetensors_keys(weights))
    weights.rename(t / "outside.safetensors")
    shard = str(t / "outside.safetensors") if shard == "ABSOLUTE" else shard
    index = {"metadata": {}, "weight_map": {k: shard for k in keys}}
    _write(folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json", json.dumps(index))
    return folder


def _safetensors_keys(path: Path) -> list[str]:
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    return [k for k in json.loads(path.read_bytes()[8 : 8 + length]) if k != "__metadata__"]


TRANSFORMER = "transformer/config.json"
SCHEDULER = "scheduler/scheduler_config.json"
for _name, _shard in (
    ("outside the folder", "../../outside.safetensors"),
    ("an absolute path", "ABSOLUTE"),
    ("the folder itself", "."),
    ("a number", 5),
    ("a list", ["a.safetensors"]),
):
    case(f"sample diffusers shard {_name}", "not a file name inside")(
        lambda w, t, s=_shard: (["sample", str(_sharded(w, t, s)), "--out", str(t / "g.png")], t / "d")
    )
case("export diffusers shard outside the folder", "not a file name inside")(
    lambda w, t: (["export", str(_sharded(w, t, "../../outside.safetensors")), "--out", str(t / "e")], t / "d")
)
for _key, _value, _words in (
    ("num_layers", 1_000_000, "GiB of memory"),
    ("attention_head_dim", 5e8, "GiB of memory"),
    ("sample_size", 100_000, "GiB of memory"),
    ("num_embeds_ada_norm", 1e12, "GiB of memory"),
    ("num_layers", "many", "num_layers must be an integer"),
    ("num_layers", "RAW:NaN", "num_layers must be an integer"),
    ("sample_size", "RAW:Infinity", "sample_size must be an integer"),
):
    case(f"sample diffusers {_key} {_value}", _words)(
        lambda w, t, k=_key, v=_value: (  # a stock diffusers config: no class count of ours beside the table
            [
                "sample",
                str(_diffusers_edit(w, t, TRANSFORMER, **{k: v, "_ditscale_num_classes": None})),
                "--out",
                str(t / "g.png"),
            ],
            t / "d",
        )
    )
case("sample diffusers table rows disagree with our class count", "do not match")(
    lambda w, t: (
        ["sample", str(_diffusers_edit(w, t, TRANSFORMER, num_embeds_ada_norm=10**12)), "--out", str(t / "g.png")],
        t / "d",
    )
)
for _what, _changes, _words in (
    (
        "steps 1e10",
        {"num_train_timesteps": 1e10, "beta_schedule": "squaredcos_cap_v2"},
        "diffusion_steps must be between 1 and 100,000",
    ),
    ("steps a word", {"num_train_timesteps": "x"}, "num_train_timesteps must be an integer"),
    ("steps 0", {"num_train_timesteps": 0}, "num_train_timesteps must be >= 1"),
    ("prediction_type a list", {"prediction_type": ["epsilon"]}, "prediction_type must be a string"),
):
    case(f"sample diffusers scheduler {_what}", _words)(
        lambda w, t, c=_changes: (
            ["sample", str(_diffusers_edit(w, t, SCHEDULER, **c)), "--out", str(t / "g.png")],
            t / "d",
        )
    )
case("export diffusers num_layers a million", "GiB of memory")(
    lambda w, t: (["export", str(_diffusers_edit(w, t, TRANSFORMER, num_layers=10**6)), "--out", str(t / "e")], t / "d")
)
case("sample metadata depth a million", "GiB of memory")(
    lambda w, t: (
        [
            "sample",
            str(_metadata_model(t / "m.safetensors", depth=10**6, hidden_size=32, num_heads=2, in_channels=3)),
            "--out",
            str(t / "g.png"),
        ],
        None,
    )
)
case("sample metadata diffusion steps 1e10", "diffusion_steps must be between")(
    lambda w, t: (
        [
            "sample",
            str(_metadata_model(t / "m.safetensors", {"diffusion_steps": 10**10}, depth=1, in_channels=3)),
            "--out",
            str(t / "g.png"),
        ],
        None,
    )
)


def _metadata_model(path: Path, diffusion: dict | None = None, **model) -> Path:
    base = {"hidden_size": 32, "num_heads": 2, "patch_size": 2, "input_size": 8}
    info = {"model": {**base, **model}, **({"diffusion": diffusion} if diffusion else {})}
    return _safetensors(path, {"ditscale": json.dumps(info)})


# a YAML alias bomb (541 bytes as the issue's: 9**7 strings) in a string field
BOMB = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdef", "bcdefg"))
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB
case("train yaml alias bomb", "aliases")(
    lambda w, t: (
        ["train", str(_write(t / "c.yaml", f"max_steps: 3\n{BOMB}device: *g\n")), "--out", str(t / "r")],
        None,
    )
)
case("study plan yaml alias bomb", "aliases")(
    lambda w, t: (["study", "plan", str(_write(t / "s.yaml", BOMB.replace("a:", "x:", 1) + "name: *g\n"))], None)
)


def _npz_declaring(path: Path, shape: tuple[int, ...], others: dict | None = None) -> Path:
    """An .npz whose ``arr_0`` (or first member) header declares ``shape`` of uint8 over a few bytes of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in (others or {}).items():
            buf = io.BytesIO()
            np.save(buf, value)
            zf.writestr(f"{key}.npy", buf.getvalue())
        zf.writestr(f"{'draws_0' if others else 'arr_0'}.npy", header.getvalue() + bytes(64))
    return path


case("eval npz declaring 273 TiB", "declares shape")(
    lambda w, t: (
        ["eval", str(_npz_declaring(t / "s.npz", (10**10, 10**2, 10**2, 3))), "--ref", str(w.batch)],
        None,
    )
)
case("eval image bomb in a folder", "cannot decode image")(
    lambda w, t: (["eval", str(_bomb_png(t)), "--ref", str(w.batch)], None)
)


def _bomb_png(t: Path) -> Path:
    """A folder holding one PNG of 15000 x 15000 pixels in a few hundred bytes (PIL's decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 15000, 15000, 1, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    _write(t / "imgs" / "bomb.png", png)
    return t / "imgs"


case("eval sparse inception weights", "not dense weights")(
    lambda w, t: (["eval", str(w.batch), "--ref", str(w.batch), "--inception", str(_sparse_inception(t))], None)
)


def _sparse_inception(t: Path) -> Path:
    """The FID-Inception state dict's keys and shapes, every tensor sparse (no stored values)."""
    from ditscale.metrics.inception import FIDInceptionV3

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in FIDInceptionV3().state_dict().items()}
    sparse = {
        k: torch.sparse_coo_tensor(torch.zeros(len(s), 0, dtype=torch.long), torch.zeros(0), s, check_invariants=True)
        for k, s in shapes.items()
    }
    torch.save(sparse, t / "pt_inception.pth")
    return t / "pt_inception.pth"


case("fit csv field over the csv limit", "is not a readable CSV")(
    lambda w, t: (
        ["fit", "isoflop", str(_write(t / "r.csv", "flops,params,tokens,loss\n" + "1" * 140_000 + ",1,1,1\n"))],
        None,
    )
)


# damaged study and run files (issue 24.5) and silent wrong results (24.10): a latent store whose
# meta.json does not describe its shards, or scales every latent to 0, is refused before the run folder
def _latent_store(t: Path, **changes) -> Path:
    """A finished 10-item latent store of (4, 8, 8) latents in one shard (8 train, 2 val items), with
    ``changes`` made to its meta.json (the whole tmp folder is guarded: no run folder may appear)."""
    store = t / "store"
    store.mkdir()
    np.save(store / "shard-00000.npy", np.zeros((10, 2, 2, 4, 8, 8), dtype=np.float16))
    _write(store / "shard-00000.json", json.dumps({"labels": [0] * 10, "captions": None}))
    meta = {
        "format": "ditscale-latents",
        "version": 1,
        "vae": "v",
        "scale": 0.18215,
        "dtype": "float16",
        "shape": [4, 8, 8],
        "image_size": 64,
        "count": 10,
        "splits": {"train": 8, "val": 2},
        "shard_size": 10,
        "num_classes": 1,
        "has_captions": False,
        "shards": [{"file": "shard-00000.npy", "start": 0, "count": 10, "sha256": "0" * 64}],
        **changes,
    }
    _write(store / "meta.json", json.dumps(meta))
    return store


def _train_on_store(t: Path, **changes) -> list[str]:
    store = _latent_store(t, **changes)
    data = ["data.name=latents", f"data.path={store}", "data.channels=4"]
    return ["train", "tiny", "--out", str(t / "r"), "--no-progress", *MICRO, *data, "max_steps=2"]


case("train latent store count beyond its shards", "shards listed for 20 items")(
    lambda w, t: (_train_on_store(t, count=20, splits={"train": 18, "val": 2}), t)
)
case("train latent store without shards", "0 shards listed")(lambda w, t: (_train_on_store(t, shards=[]), t))
case("train latent store scale 0", "scale 0 is not a finite number > 0")(lambda w, t: (_train_on_store(t, scale=0), t))


case("fit equal losses", "equal losses say nothing")(
    lambda w, t: (
        [
            "fit",
            "parametric",
            str(
                _write(
                    t / "r.csv",
                    "flops,params,tokens,loss\n"
                    + "".join(f"1e{9 + i % 2},{10 * (i + 1)},{100 // (i + 1)},2.0\n" for i in range(8)),
                )
            ),
        ],
        None,
    )
)


def _tiny_samples(path: Path) -> Path:
    np.savez(path, arr_0=np.random.default_rng(1).integers(0, 256, (4, 1, 1, 3), dtype=np.uint8))
    return path


# -- the test -------------------------------------------------------------------------------------
@pytest.fixture
def deadline():
    def hang(*_):
        raise TimeoutError(f"the command ran past {TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(TIMEOUT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _vm_size() -> int:
    """This process's address-space size now (VmSize, bytes)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


@contextlib.contextmanager
def memory_ceiling(headroom: int = HEADROOM):
    """Run the block under an address-space limit (RLIMIT_AS) of the process's current size plus
    ``headroom``: an allocation beyond it fails at once instead of exhausting the machine. The soft
    limit is lowered, then restored within the hard one, so no subprocess is needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line(name, world, tmp_path, capsys, deadline):
    build, words = CASES[name]
    argv, guarded = build(world, tmp_path)
    before = tree_hash(guarded) if guarded else None
    with memory_ceiling():
        code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"exit status {code}; stderr: {err[-2000:]}"
    assert err.startswith("ditscale: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and words in err, err
    if guarded:
        assert tree_hash(guarded) == before, f"{guarded} changed"


def test_catalogue_covers_every_command():
    from ditscale.cli import COMMANDS

    first = {"extract": "extract-latents", "predict": "study", "compare": "study", "report": "study"}
    covered = {first.get(name.split()[0], name.split()[0]) for name in CASES}
    assert covered == set(COMMANDS)
    assert len(CASES) >= 130


def test_memory_ceiling_refuses_what_exceeds_it():
    """The ceiling the cases run under is real: inside it an allocation of more than its headroom
    fails, and the limit is lifted again afterwards."""
    before = resource.getrlimit(resource.RLIMIT_AS)
    with memory_ceiling(2**30), pytest.raises(MemoryError):
        np.ones(2 * 2**30, dtype=np.uint8)
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert np.ones(2**20, dtype=np.uint8).sum() == 2**20


def test_a_bootstrap_npz_declaring_a_huge_shape_is_unreadable(world, tmp_path):
    """A bootstrap.npz whose draws declare 10**12 x 10**3 values (a crafted or damaged header) reads as
    unreadable (``study predict`` then redraws and says so), within the memory ceiling, never allocated."""
    from ditscale.study.analyze import load_draws

    study = _copy(world.study, tmp_path / "study")
    with np.load(study / "bootstrap.npz", allow_pickle=False) as arrays:
        meta = arrays["meta"]
    assert load_draws(study).entries  # the study's own draws read
    _npz_declaring(study / "bootstrap.npz", (10**12, 10**3), {"meta": meta})
    with memory_ceiling():
        draws = load_draws(study)
    assert draws.loaded and not draws.entries


# -- damaged study and run files read by their one reader (issue 24.5, 24.10) ----------------------
def _draws_meta(study: Path) -> list[dict]:
    with np.load(study / "bootstrap.npz", allow_pickle=False) as arrays:
        return json.loads(str(arrays["meta"]))


def _resave_draws(path: Path, meta, **arrays) -> Path:
    with np.load(path, allow_pickle=False) as old:
        kept = {k: old[k] for k in old.files if k != "meta"}
    np.savez(path, meta=np.array(meta if isinstance(meta, str) else json.dumps(meta)), **{**kept, **arrays})
    return path


def _entry(meta: list[dict], i: int = 0, **changes) -> list[dict]:
    return [dict(m, **changes) if j == i else m for j, m in enumerate(meta)]


DAMAGED_DRAWS = {
    "truncated": (lambda p, m: _truncate(p, 0.5), "not a zip file"),
    "empty": (lambda p, m: _write(p, b""), "not a zip file"),
    "meta not json": (lambda p, m: _resave_draws(p, "{not json"), "Expecting"),
    "meta nested 100k deep": (lambda p, m: _resave_draws(p, "[" * 100_000 + "]" * 100_000), "nested too deeply"),
    "meta an object": (lambda p, m: _resave_draws(p, {"key": 1}), "not a JSON list"),
    "a list key": (lambda p, m: _resave_draws(p, _entry(m, key=[1])), "'key' is not a str"),
    "a text seed": (lambda p, m: _resave_draws(p, _entry(m, seed="0")), "'seed' is not a int"),
    "1-D draws": (lambda p, m: _resave_draws(p, m, draws_0=np.ones(100)), "not (resamples, 9)"),
    "NaN draws of a matching key": (
        lambda p, m: _resave_draws(p, m, draws_0=np.full((100, 9), np.nan)),
        "100 resamples without a finite value but 0 failed refits",
    ),
}


@pytest.mark.parametrize("name", list(DAMAGED_DRAWS))
def test_a_damaged_bootstrap_npz_is_redrawn_and_said_why(name, world, tmp_path):
    """bootstrap.npz truncated, empty, with a crafted ``meta`` (not JSON, nested 100k deep, a list key,
    a text seed), 1-D draws, or NaN draws under a matching key: unreadable (old code: tracebacks, or
    the NaN draws reused), so ``study predict`` / ``compare`` redraw and the note names the reason."""
    from ditscale.study.analyze import draws_note, load_draws

    study = _copy(world.study, tmp_path / "study")
    meta = _draws_meta(study)
    damage, words = DAMAGED_DRAWS[name]
    damage(study / "bootstrap.npz", meta)
    with memory_ceiling():
        draws = load_draws(study)
    assert draws.loaded and not draws.entries and words in draws.unreadable, draws.unreadable
    draws.redrawn.append("isoflop")
    assert f"bootstrap.npz is unreadable ({draws.unreadable})" in draws_note(study, draws)


def test_intact_bootstrap_draws_still_read_with_their_nan_resamples(world, tmp_path):
    """The checks keep valid draws: the study's own (a column with a NaN resample included) read whole."""
    from ditscale.study.analyze import load_draws

    draws = load_draws(world.study)
    assert not draws.unreadable and len(draws.entries) == len(_draws_meta(world.study)) == 4
    samples = [boot.samples for _, boot in draws.entries.values()]
    assert all(len(v) == 100 for s in samples for v in s.values())


@pytest.mark.parametrize(
    "text",
    [
        "[1]",
        '{"schema_version": 1, "params_law": 5}',
        "[" * 100_000 + "]" * 100_000,
        '{"a": ' * 100_000 + "1" + "}" * 100_000,
    ],
    ids=["a list", "a field of the wrong type", "nested 100k deep", "objects nested 100k deep"],
)
def test_a_laws_json_of_the_wrong_shape_is_one_line(text, world, tmp_path):
    """laws.json of the wrong shape or nested 100k deep: a one-line DataError from both readers (the
    study folder's, which `study run` on a finished study uses, and LawsSummary.read), never a
    traceback (old code: the dict returned as it was, a RecursionError)."""
    from ditscale.errors import DataError
    from ditscale.laws.results import LawsSummary
    from ditscale.study.folder import StudyFolder

    study = _copy(world.study, tmp_path / "study")
    (study / "laws.json").write_text(text)
    for read in (StudyFolder(study).read_laws, lambda: LawsSummary.read(study / "laws.json")):
        with pytest.raises(DataError) as err:
            read()
        assert "laws.json" in str(err.value) and "\n" not in str(err.value)
    intact = LawsSummary.from_dict(StudyFolder(world.study).read_laws()).to_dict()
    assert json.dumps(intact) == json.dumps(LawsSummary.read(world.study / "laws.json").to_dict())


def test_a_result_json_nested_100k_deep_is_unreadable(tmp_path):
    """result.json nested 100k deep reads as unreadable (None), as a damaged one does (old code: RecursionError)."""
    from ditscale.train.rundir import RunDir

    run = RunDir(tmp_path)
    run.result.write_text("[" * 100_000 + "]" * 100_000)
    assert run.read_result() is None
    run.result.write_text('{"status": "done"}')
    assert run.read_result() == {"status": "done"}


def test_damaged_quality_scores_and_stamps_are_redone(tmp_path):
    """quality/scores/<id>.json that is ``[1]``, lacks the metric, or is nested 100k deep is not a
    score (the model is scored again; old code: AttributeError / KeyError); a non-UTF-8 ``.sha``
    stamp is a stale stamp (old code: UnicodeDecodeError)."""
    from ditscale.study.folder import StudyFolder
    from ditscale.study.quality import QualityFiles, _restamp

    files = QualityFiles(StudyFolder(tmp_path))
    files.scores("r").parent.mkdir(parents=True)
    for text in ("[1]", '{"settings_sha": "s", "accuracy": 0.5}', '{"settings_sha": "s", "fd": "x"}', "[" * 100_000):
        files.scores("r").write_text(text)
        assert files.read_scores("r", "s", "fd") is None
    files.scores("r").write_text('{"settings_sha": "s", "fd": 2.5}')
    assert files.read_scores("r", "s", "fd") == {"settings_sha": "s", "fd": 2.5}
    samples = _write(files.samples("r"), b"old samples")
    _write(samples.with_suffix(".sha"), b"\xff\xfe")
    _restamp(samples, "s")
    assert not samples.exists() and samples.with_suffix(".sha").read_text() == "s"


def _empty_scores(files) -> dict[str, str]:
    """The empty cells of quality.csv's optional score columns (every column but the first eight)."""
    return {c: "" for c in files.csv.read_text().splitlines()[0].split(",")[8:]}


def _drop_column(text: str, name: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    at = rows[0].index(name)
    return "".join(",".join(r[:at] + r[at + 1 :]) + "\n" for r in rows)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda text: text.replace(",3.5,", ",abc,"), "value 'abc' is not a number"),
        (lambda text: _drop_column(text, "loss"), "has no column loss"),
        (lambda text: text.replace("a,1000,", "a,inf,"), "budget 'inf' is not a finite number"),
    ],
    ids=["value abc", "no loss column", "budget inf"],
)
def test_a_damaged_quality_csv_is_one_line(edit, words, tmp_path):
    """quality.csv with ``value=abc``, a missing column or an infinite budget: a one-line DataError
    naming the file, the line and the cell (old code: ValueError / KeyError tracebacks)."""
    from ditscale.errors import DataError
    from ditscale.study.folder import StudyFolder
    from ditscale.study.quality import QualityFiles

    files = QualityFiles(StudyFolder(tmp_path))
    row = {"run_id": "a", "budget": 1000, "flops": 1000, "params": 10, "loss": 0.5, "optimal": 1, "metric": "fd"}
    files.write_csv([dict(row, value=3.5, accuracy="")])
    assert files.read_csv() == [{**{k: str(v) for k, v in row.items()}, "value": "3.5"} | _empty_scores(files)]
    files.csv.write_text(edit(files.csv.read_text()))
    with pytest.raises(DataError, match="quality.csv is damaged") as err:
        files.read_csv()
    assert words in str(err.value) and "\n" not in str(err.value)


# -- silent wrong results (issue 24.10) -----------------------------------------------------------
def test_a_parametric_fit_without_finite_allocation_laws_is_refused():
    """The fit the issue's 1e308 losses gave (B = 1e308, alpha = 4639, beta ~ -1.5e-15): its N_opt law is
    NaN, and the check refuses it in one line instead of printing NaN laws with exit 0."""
    from ditscale.errors import DataError
    from ditscale.laws.fit import check_finite_laws
    from ditscale.laws.parametric import ParametricFit
    from ditscale.laws.runs import Runs

    runs = Runs(flops=[1e9] * 6, params=[1.0 + i for i in range(6)], tokens=[6.0] * 6, loss=[1e308] * 5 + [9e307])
    fit = ParametricFit(
        E=2.71828, A=1.36437e-113, B=1e308, alpha=4639.0, beta=-1.51578e-15, objective=0.0, n_runs=6, options={}
    )
    assert not np.isfinite(fit.n_opt_law.coefficient)
    with pytest.raises(DataError, match="gives no usable N_opt law .* \\(from 9e\\+307 to 1e\\+308"):
        check_finite_laws("parametric", fit, runs)
    good = ParametricFit(E=1.0, A=400.0, B=400.0, alpha=0.34, beta=0.28, objective=0.0, n_runs=6, options={})
    check_finite_laws("parametric", good, runs)  # a usable fit passes
    assert np.isfinite(good.n_opt_law.coefficient) and good.n_opt_law.coefficient > 0


def test_a_prediction_far_below_the_sweep_warns(world, tmp_path, capsys):
    """`study predict --flops 1`, 17 decades below the smallest budget, warns as one far above it does
    (old code: answered 0.011 parameters without a word); at the sweep's own budgets it does not."""
    from ditscale.laws.fit import fit_runs
    from ditscale.laws.predict import predict
    from ditscale.laws.runs import read_runs_csv

    fit, _ = fit_runs(read_runs_csv(world.csv), {"bootstrap": 0})
    assert any("below the smallest trained budget 1e+17 FLOPs" in w for w in predict(fit, 1.0).warnings)
    assert not any("below the smallest" in w for w in predict(fit, 1e17).warnings)
    study = _copy(world.study, tmp_path / "study")
    assert main(["study", "predict", str(study), "--flops", "1"]) == 0
    said = capsys.readouterr()
    assert "17.0 decades of compute) below the smallest trained budget 1e+17 FLOPs" in said.err, said.err


def test_eval_of_samples_of_another_size_than_the_reference_warns(world, tmp_path, capsys):
    """`eval` of 1x1 samples against the 8x8 reference says so on stderr (old code: scored without
    comment); samples of the reference's size get no such warning."""
    assert main(["eval", str(_tiny_samples(tmp_path / "s.npz")), "--ref", str(world.batch), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: the samples are 1x1 images but the reference's are 8x8" in err, err
    assert main(["eval", str(world.batch), "--ref", str(world.batch), "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err
