"""Pixel datasets: shapes, digits, ImageNet-layout folders, image-caption pairs; build_dataset / dataset_info."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ditscale
from ditscale.config import from_dict
from ditscale.data import DataConfig, DataInfo, build_dataset, collate, dataset_info
from ditscale.data.folder import center_crop_arr
from ditscale.data.shapes import COLORS, GRID, POSITIONS, SIZES
from ditscale.errors import ConfigError, DataError


def cfg(**kw) -> DataConfig:
    return from_dict(DataConfig, kw)


def rgb(name: str) -> np.ndarray:
    return np.array(COLORS[name], dtype=np.float32) / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------- config


def test_config_is_strict_and_validated():
    with pytest.raises(ConfigError, match="unknown key 'imagesize'.*did you mean 'image_size'"):
        cfg(name="shapes", imagesize=32)
    with pytest.raises(ConfigError, match="data.name must be one of"):
        cfg(name="imagenet")
    with pytest.raises(ConfigError, match="data.path is required"):
        cfg(name="folder")
    with pytest.raises(ConfigError, match="split must be 'train' or 'val'"):
        build_dataset(cfg(), "test")


# ---------------------------------------------------------------------------------------------- shapes


def test_shapes_stream_is_pinned_and_deterministic():
    ds = build_dataset(cfg(captions=True))
    # The stream is part of the dataset's definition: results of old runs stay comparable.
    assert [ds[i]["caption"] for i in range(3)] == [
        "a large blue square at the bottom right on a purple background",
        "a large green cross at the top right on a red background",
        "a large orange circle at the bottom right on a black background",
    ]
    assert [int(ds[i]["y"]) for i in range(3)] == [1, 4, 0]  # KINDS.index: square 1, cross 4, circle 0
    again = build_dataset(cfg(captions=True))
    other_seed = build_dataset(cfg(captions=True, seed=1))
    for i in (0, 7, 123456789):
        assert ds[i]["x"].numpy().tobytes() == again[i]["x"].numpy().tobytes()
        assert ds[i]["x"].numpy().tobytes() != other_seed[i]["x"].numpy().tobytes()
    x = ds[0]["x"]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert len(ds) == 2**31
    assert build_dataset(cfg(image_size=48))[0]["x"].shape == (3, 48, 48)


def _area(kind: str, r: float) -> float:
    """Analytic area of a shape of half-extent r (fraction of the side), as drawn by shapes.py."""
    return {
        "circle": math.pi * r * r,
        "square": 4 * r * r,
        "diamond": 2 * r * r,
        "triangle": 3 * math.sqrt(3) * (0.6 * r) ** 2,  # equilateral with inradius 0.6 r
        "cross": 20 / 9 * r * r,  # two 2r x 2r/3 bars minus their (2r/3)^2 overlap
        "ring": math.pi * (r * r - (0.4 * r) ** 2),
    }[kind]


def test_shapes_captions_describe_the_pixels():
    """For 60 items, read colour, size and position from the caption *text* and check them in the image."""
    s = 64
    ds = build_dataset(cfg(image_size=s, captions=True))
    centres = (np.arange(s) + 0.5) / s
    for i in range(60):
        item = ds[i]
        words = item["caption"].split()
        size, color, kind = words[1:4]
        position = " ".join(words[words.index("the") + 1 : words.index("on")])
        fg, bg = rgb(color), rgb(words[-2])
        x = item["x"].numpy()
        # Every pixel is a blend bg + a (fg - bg) of the caption's two colours, a in [0, 1].
        d = fg - bg
        a = np.einsum("chw,c->hw", x - bg[:, None, None], d) / (d @ d)
        np.testing.assert_allclose(x, bg[:, None, None] + a[None] * d[:, None, None], atol=1e-5)
        assert a.min() >= -1e-5 and a.max() <= 1 + 1e-5
        # The drawn area matches the caption's size (sizes vary +-10%; the three ranges do not overlap).
        area = a.sum() / s**2
        r0 = SIZES[size]
        assert 0.9 * _area(kind, 0.9 * r0) < area < 1.1 * _area(kind, 1.1 * r0), (i, item["caption"], area)
        # The shape's centroid is in the caption's 3x3 grid cell (centre jitter is +-0.04).
        row, col = divmod(POSITIONS.index(position), 3)
        cy, cx = (a.sum(1) @ centres) / a.sum(), (a.sum(0) @ centres) / a.sum()
        assert abs(cx - GRID[col]) < 0.05 and abs(cy - GRID[row]) < 0.05, (i, item["caption"], cx, cy)


def test_shapes_hand_checked_large_centred_shape():
    ds = build_dataset(cfg(captions=True))
    i = next(
        i
        for i in range(1000)
        if " large " in ds[i]["caption"] and "center" in ds[i]["caption"] and "ring" not in ds[i]["caption"]
    )
    words = ds[i]["caption"].split()
    x = ds[i]["x"].numpy()
    assert x[:, 16, 16].tolist() == rgb(words[2]).tolist()  # the shape's colour at the centre
    assert x[:, 0, 0].tolist() == rgb(words[-2]).tolist()  # the background in the corner


def test_shapes_labels_balanced_and_kind_color():
    ds = build_dataset(cfg())
    counts = Counter(int(ds[i]["y"]) for i in range(3000))
    assert sorted(counts) == [0, 1, 2, 3, 4, 5]
    assert all(400 < c < 600 for c in counts.values()), counts  # 500 expected, sd 20
    kc = build_dataset(cfg(shapes_label="kind_color", captions=True))
    assert kc[2]["caption"].startswith("a large orange circle") and int(kc[2]["y"]) == 0 * 8 + 4
    assert kc[1]["caption"].startswith("a large green cross") and int(kc[1]["y"]) == 4 * 8 + 1
    assert dataset_info(cfg(shapes_label="kind_color")) == DataInfo(48, 3, 32, False, False)
    assert dataset_info(cfg(captions=True)) == DataInfo(6, 3, 32, False, True)


def test_shapes_several_objects():
    """shapes_objects=K: 1..K objects on distinct cells, pinned stream, the label is the top object's kind,
    every caption word is in the closed vocabulary, and K=1 is the original data item for item."""
    from ditscale.data.shapes import KINDS
    from ditscale.data.text import WordTokenizer

    ds = build_dataset(cfg(captions=True, shapes_objects=4, image_size=64))
    assert [ds[i]["caption"] for i in range(2)] == [
        "three shapes: a small orange square at the bottom and a medium white ring at the top and "
        "a small blue diamond at the right on a red background",
        "a small purple ring at the bottom on a white background",
    ]
    vocab = WordTokenizer.for_dataset(cfg(captions=True, shapes_objects=4))
    counts = Counter()
    for i in range(400):
        item, objects = ds[i], ds.scene(i)
        counts[len(objects)] += 1
        assert len({o["position"] for o in objects}) == len(objects)  # distinct cells
        assert len({o["background"] for o in objects}) == 1 and all(o["color"] != o["background"] for o in objects)
        assert int(item["y"]) == KINDS.index(objects[0]["kind"])
        ids, _ = vocab.encode([item["caption"]], 64)
        assert 1 not in ids.tolist()[0]  # no <unk>
        top = objects[0]  # the top object's colour at its centre (nothing covers it; rings are hollow)
        if top["kind"] not in ("ring", "triangle") and top["size"] != "small":
            cy, cx = int(top["cy"] * 64), int(top["cx"] * 64)
            assert item["x"][:, cy, cx].tolist() == rgb(top["color"]).tolist(), (i, item["caption"])
    assert sorted(counts) == [1, 2, 3, 4] and all(70 < c < 130 for c in counts.values()), counts
    one, plain = build_dataset(cfg(captions=True, shapes_objects=1)), build_dataset(cfg(captions=True))
    for i in (0, 5, 99):
        assert one[i]["caption"] == plain[i]["caption"] and torch.equal(one[i]["x"], plain[i]["x"])
    with pytest.raises(ConfigError, match="shapes_objects"):
        cfg(shapes_objects=5)


def test_shapes_val_is_a_different_stream():
    train, val = build_dataset(cfg(), "train"), build_dataset(cfg(), "val")
    train_bytes = {train[i]["x"].numpy().tobytes() for i in range(1000)}
    assert not any(val[i]["x"].numpy().tobytes() in train_bytes for i in range(200))
    assert val[0]["x"].numpy().tobytes() == build_dataset(cfg(), "val")[0]["x"].numpy().tobytes()


def test_shapes_flip_mirrors_image_and_caption_per_epoch():
    plain = build_dataset(cfg(captions=True))
    ds = build_dataset(cfg(captions=True, random_flip=True))
    flips = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(16):
            flipped = not torch.equal(ds[i]["x"], plain[i]["x"])
            flips.append(flipped)
            if flipped:
                assert torch.equal(ds[i]["x"], plain[i]["x"].flip(-1))
                swap = {"left": "right", "right": "left"}
                assert ds[i]["caption"].split() == [swap.get(w, w) for w in plain[i]["caption"].split()]
            else:
                assert ds[i]["caption"] == plain[i]["caption"]
    assert 8 < sum(flips) < 24  # fair coins
    assert flips[:16] != flips[16:]  # a new draw each epoch
    ds.set_epoch(1)
    assert [not torch.equal(ds[i]["x"], plain[i]["x"]) for i in range(16)] == flips[16:]


# ---------------------------------------------------------------------------------------------- digits


def test_digits_split_values_and_labels():
    from sklearn.datasets import load_digits

    ref = load_digits()
    train, val = (
        build_dataset(cfg(name="digits", image_size=8, channels=1)),
        build_dataset(cfg(name="digits", image_size=8, channels=1), "val"),
    )
    assert (len(train), len(val)) == (1617, 180)  # round(0.1 * 1797) held out
    assert not set(train.source_index) & set(val.source_index)
    j = int(train.source_index[5])
    item = train[5]
    assert item["x"].shape == (1, 8, 8)
    np.testing.assert_array_equal(item["x"][0].numpy(), ref.images[j] / 8.0 - 1.0)  # 0 -> -1, 16 -> +1
    assert int(item["y"]) == ref.target[j]
    big = build_dataset(cfg(name="digits", image_size=32, channels=3, captions=True))
    x = big[5]["x"]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[2])
    assert x.min() == -1.0 and x.max() <= 1.0
    assert (
        big[5]["caption"]
        == f"the digit {['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'][ref.target[j]]}"
    )
    big.set_epoch(3)
    assert torch.equal(big[5]["x"], x)  # no random flips for digits by default
    assert dataset_info(cfg(name="digits", channels=1, image_size=16)) == DataInfo(10, 1, 16, False, False)


# ---------------------------------------------------------------------------------------------- folders


def _png(path, size=(20, 12), color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "imgs"
    for name in ("a", "b", "c"):
        _png(root / "cat" / f"{name}.png", color=(200, 10, 10))
    for name in ("d", "e"):
        _png(root / "dog" / f"{name}.jpg", color=(10, 10, 200))
    (root / "dog" / "bad.png").write_bytes(b"not an image at all")
    (root / "dog" / "notes.txt").write_text("ignored")
    return root


def test_center_crop_arr_hand_checked():
    # 12 x 6 (W x H) image made of 2x2 blocks of value 20*(c//2) + 40*(r//2): for a 3 px target it is
    # BOX-halved once to 6 x 3 (min side 6 >= 2 * 3) where pixel (r, c) = 20 c + 40 r, the bicubic
    # resize is to the same size, and the centre crop keeps columns 1..3.
    r, c = np.mgrid[0:6, 0:12]
    arr = (20 * (c // 2) + 40 * (r // 2)).astype(np.uint8)
    out = center_crop_arr(Image.fromarray(arr), 3)
    assert out.tolist() == [[20, 40, 60], [60, 80, 100], [100, 120, 140]]
    # Non-square upscaling: short side -> 8, long side round(23 * 8 / 12) = 15, centre 8 columns.
    assert center_crop_arr(Image.new("RGB", (23, 12), (9, 9, 9)), 8).shape == (8, 8, 3)


def test_folder_classes_split_and_bad_images(image_root):
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        train = build_dataset(cfg(name="folder", path=str(image_root), image_size=8, val_fraction=0.2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = build_dataset(cfg(name="folder", path=str(image_root), image_size=8, val_fraction=0.2), "val")
    assert train.classes == ["cat", "dog"] and [p.name for p in train.skipped] == ["bad.png"]
    assert (len(train), len(val)) == (4, 1)  # 5 readable images, round(0.2 * 5) = 1 held out
    assert sorted(p.name for p in train.files + val.files) == ["a.png", "b.png", "c.png", "d.jpg", "e.jpg"]
    for ds in (train, val):
        for i in range(len(ds)):
            item = ds[i]
            assert item["x"].shape == (3, 8, 8)
            red = ds.files[i].parent.name == "cat"
            assert int(item["y"]) == (0 if red else 1)
            if red:  # solid PNG: exact after the crop; (200, 10, 10) -> 200 / 127.5 - 1
                assert torch.allclose(item["x"][:, 0, 0], torch.tensor([200, 10, 10]) / 127.5 - 1)
    assert dataset_info(cfg(name="folder", path=str(image_root), image_size=8)) == DataInfo(2, 3, 8, False, False)
    with pytest.raises(DataError, match="bad.png"):
        build_dataset(cfg(name="folder", path=str(image_root), on_bad_image="fail"))


def test_folder_truncated_image_is_replaced_or_fails(tmp_path):
    root = tmp_path / "t"
    _png(root / "k" / "a.png", color=(0, 0, 0))
    _png(root / "k" / "b.png", color=(255, 255, 255))
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    noisy.save(root / "k" / "a.png")
    data = (root / "k" / "a.png").read_bytes()
    (root / "k" / "a.png").write_bytes(data[: len(data) // 2])  # header fine, pixels truncated
    ds = build_dataset(cfg(name="folder", path=str(root), image_size=8, val_fraction=0.0, random_flip=False))
    assert [p.name for p in ds.files] == ["a.png", "b.png"]
    with pytest.warns(UserWarning, match="cannot decode image .*a.png"):
        item = ds[0]
    assert torch.equal(item["x"], ds[1]["x"])  # deterministically the next image
    assert [p.name for p in ds.load_failures] == ["a.png"]
    strict = build_dataset(cfg(name="folder", path=str(root), image_size=8, val_fraction=0.0, on_bad_image="fail"))
    with pytest.raises(DataError, match="cannot decode image .*a.png"):
        strict[0]


def test_folder_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="dataset folder '.*nope' does not exist"):
        build_dataset(cfg(name="folder", path=str(tmp_path / "nope")))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no images in class sub-folders \(expected root/<class>/<image>\)"):
        build_dataset(cfg(name="folder", path=str(tmp_path / "empty")))


def test_folder_flips_depend_on_seed_epoch_index(tmp_path):
    root = tmp_path / "f"
    left_white = np.zeros((8, 8, 3), dtype=np.uint8)
    left_white[:, :4] = 255
    for i in range(12):
        (root / "c").mkdir(parents=True, exist_ok=True)
        Image.fromarray(left_white).save(root / "c" / f"{i:02d}.png")
    ds = build_dataset(cfg(name="folder", path=str(root), image_size=8, val_fraction=0.0))

    def flips(epoch):
        ds.set_epoch(epoch)
        return [bool(ds[i]["x"][0, 0, 0] < 0) for i in range(len(ds))]  # left pixel black = mirrored

    e0, e1 = flips(0), flips(1)
    assert e0 == flips(0) and e0 != e1 and 0 < sum(e0) < 12
    other = build_dataset(cfg(name="folder", path=str(root), image_size=8, val_fraction=0.0, seed=5))
    assert [bool(other[i]["x"][0, 0, 0] < 0) for i in range(12)] != e0


# --------------------------------------------------------------------------------------------- captions


@pytest.mark.parametrize("kind", ["folder", "csv", "parquet"])
def test_caption_pairs(tmp_path, kind):
    root = tmp_path / "cap"
    colors = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    for name, color in colors.items():
        _png(root / "img" / f"{name}.png", color=color)
    if kind == "folder":
        for name in colors:
            (root / "img" / f"{name}.png").with_suffix(".txt").write_text(f"a {name} square\n")
        _png(root / "img" / "uncaptioned.png")
        path, labels = root, [0, 0, 0]
    else:
        rows = [{"image": f"img/{n}.png", "caption": f"a {n} square", "label": i} for i, n in enumerate(colors)]
        path, labels = root / f"index.{kind}", [0, 1, 2]
        if kind == "csv":
            path.write_text(
                "image,caption,label\n" + "".join(f"{r['image']},{r['caption']},{r['label']}\n" for r in rows)
            )
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), path)
    c = cfg(name="captions", path=str(path), image_size=4, val_fraction=0.0, random_flip=False)
    ds = build_dataset(c)
    assert len(ds) == 3
    got = {}
    for i in range(3):
        item = ds[i]
        name = item["caption"].split()[1]
        assert item["caption"] == f"a {name} square"
        expected = torch.tensor(colors[name], dtype=torch.float32) / 127.5 - 1
        assert torch.equal(item["x"][:, 2, 2], expected)
        got[name] = int(item["y"])
    assert [got[n] for n in colors] == labels
    assert dataset_info(c) == DataInfo(max(labels) + 1, 3, 4, False, True)
    batch = collate([ds[0], ds[1]])
    assert batch["x"].shape == (2, 3, 4, 4) and batch["y"].dtype == torch.int64 and len(batch["caption"]) == 2


def test_caption_index_without_columns(tmp_path):
    (tmp_path / "i.csv").write_text("file,text\na.png,hello\n")
    with pytest.raises(DataError, match="needs columns 'image' and 'caption'"):
        build_dataset(cfg(name="captions", path=str(tmp_path / "i.csv")))


# ------------------------------------------------------------------------ torch-free dataset description

# Run in a fresh interpreter where importing torch fails (a meta-path finder refuses it): describes
# each DataConfig given as JSON, and lists the heavy modules that got imported anyway.
_DESCRIBE_WITHOUT_TORCH = textwrap.dedent(
    """
    import dataclasses, json, sys

    class RefuseTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, RefuseTorch())
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit("the finder did not block torch")
    from ditscale.data import DataConfig, dataset_info
    from ditscale.errors import DataError

    out = []
    for raw in json.loads(sys.argv[1]):
        try:
            out.append(dataclasses.asdict(dataset_info(DataConfig(**raw))))
        except DataError as err:
            out.append(str(err))
    dataset_modules = ("build", "shapes", "digits", "folder", "latents", "latent_dataset", "base", "text", "vae")
    heavy = [m for m in sys.modules if m.split(".")[0] in ("torch", "numpy", "PIL")]
    heavy += [m for m in sys.modules if m in {"ditscale.data." + d for d in dataset_modules}]
    print(json.dumps({"infos": out, "heavy": sorted(heavy)}))
    """
)


def describe_without_torch(configs: list[DataConfig]) -> list:
    """``dataset_info`` of each config (or its DataError message), computed with torch unimportable."""
    from dataclasses import asdict

    src = str(Path(ditscale.__file__).resolve().parents[1])
    path = [src] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    arg = json.dumps([asdict(c) for c in configs])
    proc = subprocess.run([sys.executable, "-c", _DESCRIBE_WITHOUT_TORCH, arg], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["heavy"] == []  # no torch, numpy, PIL or dataset module was imported
    return [DataInfo(**r) if isinstance(r, dict) else r for r in result["infos"]]


def _caption_folder(root: Path) -> Path:
    for name in ("x", "y"):
        _png(root / f"{name}.png")
        (root / f"{name}.txt").write_text(f"caption {name}")
    return root


def test_dataset_info_without_torch(image_root, tmp_path):
    configs = [
        cfg(shapes_label="kind_color"),
        cfg(captions=True),
        cfg(name="digits", channels=1, image_size=16),
        cfg(name="folder", path=str(image_root), image_size=8),
        cfg(name="captions", path=str(_caption_folder(tmp_path / "cap")), image_size=4),
        cfg(name="folder", path=str(tmp_path / "nope")),
    ]
    infos = describe_without_torch(configs)
    # The values the tests above establish with torch imported.
    assert infos[:5] == [
        DataInfo(48, 3, 32, False, False),
        DataInfo(6, 3, 32, False, True),
        DataInfo(10, 1, 16, False, False),
        DataInfo(2, 3, 8, False, False),
        DataInfo(1, 3, 4, False, True),
    ]
    assert [info.infinite for info in infos[:5]] == [True, True, False, False, False]
    assert infos[:5] == [dataset_info(c) for c in configs[:5]]
    assert infos[5] == f"dataset folder '{tmp_path / 'nope'}' does not exist; set data.path to " + (
        "a folder of class sub-folders (root/<class>/<image>)"
    )


def test_infinite_is_a_dataset_attribute(image_root, tmp_path):
    configs = [
        cfg(),
        cfg(name="digits"),
        cfg(name="folder", path=str(image_root), image_size=8),
        cfg(name="captions", path=str(_caption_folder(tmp_path / "cap")), image_size=4, val_fraction=0.0),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the folder's bad.png
        datasets = [build_dataset(c) for c in configs]
    assert [ds.infinite for ds in datasets] == [True, False, False, False]
    assert [ds.infinite for ds in datasets] == [dataset_info(c).infinite for c in configs]
    assert [ds.num_classes for ds in datasets] == [dataset_info(c).num_classes for c in configs]
    assert len(datasets[0]) == 2**31  # a bound kept for DataLoader compatibility, not the signal
