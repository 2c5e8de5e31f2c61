"""``ditscale data export``: datasets as ADM-style reference batches; ``class_names`` of every dataset."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ditscale.cli import main
from ditscale.config import from_dict
from ditscale.data import DataConfig, build_dataset
from ditscale.data.info import class_names
from ditscale.data.shapes_grammar import COLOR_NAMES, KINDS
from ditscale.generate import dataset_captions, to_uint8


def _export(capsys, *argv):
    code = main(["data", "export", *argv, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def _arrays(path):
    with np.load(path, allow_pickle=False) as data:  # string arrays must be unicode, not pickled objects
        return {key: data[key] for key in data.files}


def _items(cfg: DataConfig, split: str, n: int) -> list[dict]:
    dataset = build_dataset(cfg, split)
    return [dataset[i] for i in range(n)]


def _error_line(code, out, err):
    assert code == 2 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ditscale: error: ")
    return lines[0]


def test_export_shapes_equals_the_dataset_items(tmp_path, capsys):
    out = tmp_path / "ref.npz"
    code, stdout, err = _export(
        capsys, "shapes", "--num", "6", "--seed", "3", "--out", str(out), "--set", "image_size=8"
    )
    assert code == 0, err
    assert (
        stdout.strip()
        == f"wrote 6 images (8x8 px) of shapes, val split, seed 3 to {out} (keys arr_0, labels, label_names, captions)"
    )
    got = _arrays(out)
    assert list(got) == ["arr_0", "labels", "label_names", "captions"]
    assert got["arr_0"].dtype == np.uint8 and got["arr_0"].shape == (6, 8, 8, 3)
    assert got["labels"].dtype == np.int64 and got["labels"].shape == (6,)
    assert got["label_names"].dtype.kind == "U" and got["label_names"].tolist() == list(KINDS)
    assert got["captions"].dtype.kind == "U"
    items = _items(DataConfig(image_size=8, seed=3, captions=True), "val", 6)
    assert np.array_equal(got["arr_0"], to_uint8(torch.stack([it["x"] for it in items])))
    assert got["labels"].tolist() == [int(it["y"]) for it in items]
    assert got["captions"].tolist() == [it["caption"] for it in items]
    # the captions `ditscale sample --num-samples` prompts a text run with by default: the same items
    assert got["captions"].tolist() == dataset_captions(DataConfig(image_size=8, seed=3), 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npz"]  # written atomically, no temp file left


def test_export_shapes_with_four_objects_and_kind_color_labels(tmp_path, capsys):
    out = tmp_path / "ref.npz"
    code, _, err = _export(
        capsys,
        "shapes",
        "--num",
        "12",
        "--out",
        str(out),
        "--split",
        "train",
        "--image-size",
        "16",
        "--set",
        "shapes_objects=4",
        "--set",
        "data.shapes_label=kind_color",
    )
    assert code == 0, err
    got = _arrays(out)
    assert got["arr_0"].shape == (12, 16, 16, 3)
    assert len(got["label_names"]) == 48 and got["label_names"][1 * 8 + 0] == "red square"
    items = _items(DataConfig(image_size=16, shapes_objects=4, shapes_label="kind_color", captions=True), "train", 12)
    assert np.array_equal(got["arr_0"], to_uint8(torch.stack([it["x"] for it in items])))
    assert got["captions"].tolist() == [it["caption"] for it in items]
    assert any(c.split()[1] == "shapes:" for c in got["captions"])  # several objects in some images
    for label, caption in zip(got["labels"], got["captions"]):  # the label names the caption's first (top) object
        words = str(got["label_names"][label]).split()
        assert caption.split(": ")[-1].split()[2:4] == words  # "[two shapes: ]a small red square ..."


def test_export_takes_the_data_section_of_a_preset_or_config(tmp_path, capsys):
    assert _export(capsys, "--preset", "tiny", "--num", "4", "--out", str(tmp_path / "p.npz"))[0] == 0
    assert _export(capsys, "shapes", "--num", "4", "--out", str(tmp_path / "n.npz"), "--image-size", "16")[0] == 0
    preset, named = _arrays(tmp_path / "p.npz"), _arrays(tmp_path / "n.npz")
    assert preset["arr_0"].shape == (4, 16, 16, 3)  # the tiny preset's data: shapes at 16 px
    assert all(np.array_equal(preset[k], named[k]) for k in named)
    # a training config's flips are augmentation: dropped unless --set asks for them
    (tmp_path / "train.yaml").write_text("data:\n  name: shapes\n  image_size: 16\n  random_flip: true\nmax_steps: 5\n")
    assert (
        _export(capsys, "--config", str(tmp_path / "train.yaml"), "--num", "4", "--out", str(tmp_path / "c.npz"))[0]
        == 0
    )
    assert np.array_equal(_arrays(tmp_path / "c.npz")["arr_0"], named["arr_0"])
    code, _, err = _export(
        capsys,
        "--config",
        str(tmp_path / "train.yaml"),
        "--num",
        "4",
        "--out",
        str(tmp_path / "f.npz"),
        "--set",
        "random_flip=true",
    )
    assert code == 0, err
    flipped = _items(DataConfig(image_size=16, random_flip=True, captions=True), "val", 4)
    assert np.array_equal(_arrays(tmp_path / "f.npz")["arr_0"], to_uint8(torch.stack([it["x"] for it in flipped])))
    assert not np.array_equal(_arrays(tmp_path / "f.npz")["arr_0"], named["arr_0"])  # seed 0 flips some of the 4


def test_export_grey_digits(tmp_path, capsys):
    code, _, err = _export(capsys, "digits", "--num", "5", "--out", str(tmp_path / "d.npz"), "--set", "channels=1")
    assert code == 0, err
    got = _arrays(tmp_path / "d.npz")
    assert got["arr_0"].shape == (5, 32, 32, 3) and (got["arr_0"][..., 0] == got["arr_0"][..., 2]).all()  # grey RGB
    items = _items(DataConfig(name="digits", channels=1), "val", 5)
    assert np.array_equal(got["arr_0"], to_uint8(torch.stack([it["x"] for it in items])))
    assert got["label_names"][got["labels"]].tolist() == [c.split()[-1] for c in got["captions"]]  # "the digit seven"


def test_export_image_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "root" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(
                tmp_path / "root" / name / f"{i}.png"
            )
    code, _, err = _export(
        capsys,
        "folder",
        "--set",
        f"path={tmp_path / 'root'}",
        "--num",
        "5",
        "--split",
        "train",
        "--image-size",
        "8",
        "--out",
        str(tmp_path / "f.npz"),
    )
    assert code == 0, err
    got = _arrays(tmp_path / "f.npz")
    assert list(got) == ["arr_0", "labels", "label_names"]  # a folder has no captions
    assert got["label_names"].tolist() == ["cat", "dog"] and sorted(set(got["labels"].tolist())) == [0, 1]
    items = _items(DataConfig(name="folder", path=str(tmp_path / "root"), image_size=8, random_flip=False), "train", 5)
    assert np.array_equal(got["arr_0"], to_uint8(torch.stack([it["x"] for it in items])))


def test_export_errors(tmp_path, capsys):
    out = str(tmp_path / "e.npz")
    assert "unknown dataset 'imagenet'; give one of shapes, digits, folder, captions" in _error_line(
        *_export(capsys, "imagenet", "--num", "2", "--out", out)
    )
    assert "is a store of VAE latents, not images" in _error_line(
        *_export(capsys, "latents", "--num", "2", "--out", out)
    )
    line = _error_line(*_export(capsys, "shapes", "--num", "2", "--out", out, "--set", "imagesize=8"))
    assert "unknown key 'imagesize' in data (did you mean 'image_size'?)" in line
    line = _error_line(*_export(capsys, "digits", "--num", "500", "--out", out))
    assert "the val split of this digits dataset has 180 images, fewer than the 500 asked for" in line
    assert "give a dataset NAME" in _error_line(*_export(capsys, "--num", "2", "--out", out))
    assert "unknown training preset 'nope'" in _error_line(
        *_export(capsys, "--preset", "nope", "--num", "2", "--out", out)
    )
    assert "argument --num: must be between 1 and" in _error_line(
        *_export(capsys, "shapes", "--num", "0", "--out", out)
    )
    assert not (tmp_path / "e.npz").exists()


# class_names -------------------------------------------------------------------------------------
def _latent_store(path, **meta):
    path.mkdir()
    (path / "meta.json").write_text(json.dumps({"format": "ditscale-latents", "version": 1, **meta}))
    return DataConfig(name="latents", path=str(path), channels=4, image_size=4)


def test_class_names_of_every_dataset(tmp_path):
    assert class_names(DataConfig()) == KINDS
    kind_color = class_names(DataConfig(shapes_label="kind_color"))
    assert len(kind_color) == 48 and kind_color[KINDS.index("ring") * 8 + COLOR_NAMES.index("white")] == "white ring"
    assert class_names(DataConfig(name="digits"))[7] == "seven"
    (tmp_path / "root" / "b").mkdir(parents=True)
    (tmp_path / "root" / "a").mkdir()
    assert class_names(DataConfig(name="folder", path=str(tmp_path / "root"))) == ("a", "b")
    assert class_names(DataConfig(name="captions", path=str(tmp_path / "root"))) is None
    source = from_dict(DataConfig, {"shapes_label": "kind_color"})
    from ditscale.config import to_dict

    assert class_names(_latent_store(tmp_path / "s1", source=to_dict(source))) == kind_color
    assert class_names(_latent_store(tmp_path / "s2", classes=["x", "y"], source={"name": "folder"})) == ("x", "y")
    assert class_names(_latent_store(tmp_path / "s3", source={"name": "captions", "path": "p"})) is None


def test_class_names_does_not_import_torch():
    code = (
        "import sys; from ditscale.data import DataConfig; from ditscale.data.info import class_names; "
        "print(class_names(DataConfig(name='digits'))[2], 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["two", "False"]


@pytest.mark.parametrize("split", ["train", "val"])
def test_dataset_captions_cycle_a_finite_split(split):
    cfg = DataConfig(name="digits")
    n = len(build_dataset(cfg, split))
    captions = dataset_captions(cfg, n + 2, split)
    assert captions[n:] == captions[:2] and captions[0].startswith("the digit ")
