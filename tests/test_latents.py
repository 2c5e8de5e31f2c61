"""Latent stores: extraction with a tiny random VAE, resume, workers, and the resampling dataset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ditscale.config import from_dict
from ditscale.data import DataConfig, DataInfo, build_dataset, dataset_info
from ditscale.data.base import RNG_LATENT, item_rng
from ditscale.data.latents import extract_latents, read_meta, store_vae, verify_latent_store
from ditscale.data.vae import VAE_SCALE, encode_moments, load_vae, make_tiny_vae
from ditscale.errors import ConfigError, DataError
from ditscale.io import sha256_file
from ditscale.train.rundir import RunDir
from test_data import describe_without_torch

SOURCE = DataConfig(name="digits", image_size=16, channels=1)  # 16 px -> 4x4x4 latents (downsample 4)
KW = dict(count=10, val_count=3, shard_size=4, batch_size=3, dtype="float32", progress=False)


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae")
    make_tiny_vae(downsample=4).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def store(vae_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    meta = extract_latents(SOURCE, vae_dir, out, **KW)
    return out, meta


def latents_cfg(path, **kw):
    return from_dict(DataConfig, dict(name="latents", path=str(path), channels=4, image_size=4, **kw))


def test_store_layout_and_meta(store):
    out, meta = store
    assert (meta["shards_written"], meta["shards_skipped"]) == (4, 0)
    on_disk = read_meta(out)
    assert on_disk["count"] == 13 and on_disk["splits"] == {"train": 10, "val": 3}
    assert on_disk["shape"] == [4, 4, 4] and on_disk["scale"] == VAE_SCALE and on_disk["dtype"] == "float32"
    assert [(s["file"], s["start"], s["count"]) for s in on_disk["shards"]] == [
        ("shard-00000.npy", 0, 4),
        ("shard-00001.npy", 4, 4),
        ("shard-00002.npy", 8, 4),
        ("shard-00003.npy", 12, 1),
    ]
    for s in on_disk["shards"]:
        assert s["sha256"] == sha256_file(out / s["file"])
        assert np.load(out / s["file"], mmap_mode="r").shape == (s["count"], 2, 2, 4, 4, 4)
    assert not list(out.glob(".*.tmp"))
    train, val = build_dataset(SOURCE, "train"), build_dataset(SOURCE, "val")
    labels = sum((json.loads((out / f"shard-0000{s}.json").read_text())["labels"] for s in range(4)), [])
    assert labels == [int(train[i]["y"]) for i in range(10)] + [int(val[i]["y"]) for i in range(3)]
    assert verify_latent_store(out) == []


def test_stored_moments_are_the_encodings_of_image_and_mirror(store, vae_dir):
    out, _ = store
    vae = load_vae(vae_dir)
    val = build_dataset(SOURCE, "val")
    x = val[1]["x"].expand(3, -1, -1)[None]  # global item 11 -> shard 2, row 3
    stored = np.load(out / "shard-00002.npy")[3]
    for flip, image in ((0, x), (1, x.flip(-1))):
        mean, std = encode_moments(vae, image)
        np.testing.assert_allclose(stored[flip, 0], mean[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(stored[flip, 1], std[0].numpy(), atol=1e-5)
    assert not np.allclose(stored[0, 0], stored[1, 0])  # the mirror is a different encoding


def test_resume_skips_finished_shards_and_workers_do_not_change_bytes(store, vae_dir, tmp_path):
    out, _ = store
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {f.name: f.read_bytes() for f in copy.glob("shard-*.npy")}
    kept = (copy / "shard-00000.npy").stat()
    for f in ("shard-00001.json", "shard-00001.npy", "meta.json"):  # as if killed while writing shard 1
        (copy / f).unlink()
    (copy / ".shard-00001.npy.x1y2.tmp").write_bytes(b"partial")
    meta = extract_latents(SOURCE, vae_dir, copy, **KW)
    assert (meta["shards_written"], meta["shards_skipped"]) == (1, 3)
    after = (copy / "shard-00000.npy").stat()
    assert (after.st_ino, after.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)  # not rewritten
    assert {f.name: f.read_bytes() for f in copy.glob("shard-*.npy")} == before
    assert not list(copy.glob(".*.tmp"))
    two = tmp_path / "two"
    extract_latents(SOURCE, vae_dir, two, workers=2, **KW)
    assert {f.name: f.read_bytes() for f in two.glob("shard-*.npy")} == before
    assert json.loads((two / "meta.json").read_text())["shards"] == read_meta(out)["shards"]
    with pytest.raises(DataError, match="holds a different extraction .*count"):
        extract_latents(SOURCE, vae_dir, copy, **dict(KW, count=9))


def test_latent_items_resample_per_epoch_deterministically(store):
    out, _ = store
    ds = build_dataset(latents_cfg(out, seed=7))
    assert len(ds) == 10 and len(build_dataset(latents_cfg(out), "val")) == 3
    m = np.load(out / "shard-00001.npy")[2]  # item 6
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        rng = item_rng(7, RNG_LATENT, epoch, 6)
        flip = int(rng.integers(2))
        eps = rng.standard_normal((4, 4, 4), dtype=np.float32)
        expected = (m[flip, 0] + m[flip, 1] * eps) * np.float32(VAE_SCALE)
        np.testing.assert_array_equal(ds[6]["x"].numpy(), expected)
    ds.set_epoch(0)
    e0 = [ds[i]["x"] for i in range(10)]
    ds.set_epoch(1)
    e1 = [ds[i]["x"] for i in range(10)]
    again = build_dataset(latents_cfg(out, seed=7))
    again.set_epoch(1)
    assert all(torch.equal(a, again[i]["x"]) for i, a in enumerate(e1))
    assert not any(torch.equal(a, b) for a, b in zip(e0, e1))
    val = build_dataset(latents_cfg(out), "val")
    assert int(val[2]["y"]) == int(build_dataset(SOURCE, "val")[2]["y"])
    assert dataset_info(latents_cfg(out)) == DataInfo(10, 4, 4, True, False)


def test_latent_store_errors(store, tmp_path, vae_dir):
    out, _ = store
    with pytest.raises(DataError, match=r"shape \(4, 4, 4\) but the config expects \(3, 32, 32\)"):
        build_dataset(from_dict(DataConfig, {"name": "latents", "path": str(out)}))
    with pytest.raises(DataError, match="has no captions"):
        build_dataset(latents_cfg(out, captions=True))
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    (partial / "meta.json").unlink()
    with pytest.raises(DataError, match="is incomplete .*rerun the same"):
        build_dataset(latents_cfg(partial))
    with pytest.raises(ConfigError, match="give --count"):
        extract_latents(DataConfig(name="shapes", image_size=16), vae_dir, tmp_path / "s", progress=False)
    with pytest.raises(ConfigError, match="not divisible by the VAE's downsampling 4"):
        extract_latents(DataConfig(name="digits", image_size=10), vae_dir, tmp_path / "d", progress=False)
    data = bytearray((partial / "shard-00001.npy").read_bytes())
    data[-1] ^= 1
    (partial / "shard-00001.npy").write_bytes(bytes(data))
    (partial / "meta.json").write_text((out / "meta.json").read_text())
    assert verify_latent_store(partial) == ["shard-00001.npy"]


def _build_error(c: DataConfig) -> str:
    with pytest.raises(DataError) as err:
        build_dataset(c)
    return str(err.value)


def test_dataset_info_reads_only_meta_json_without_torch(store, tmp_path):
    out, _ = store
    meta_only = tmp_path / "meta_only"  # a store with every file but meta.json gone
    meta_only.mkdir()
    shutil.copy(out / "meta.json", meta_only / "meta.json")
    partial = tmp_path / "partial"  # an unfinished extraction
    partial.mkdir()
    shutil.copy(out / "plan.json", partial / "plan.json")
    wrong_shape = from_dict(DataConfig, {"name": "latents", "path": str(out)})
    errors = [wrong_shape, latents_cfg(out, captions=True), latents_cfg(partial), latents_cfg(tmp_path / "none")]
    infos = describe_without_torch([latents_cfg(out), latents_cfg(meta_only), *errors])
    assert infos[:2] == [DataInfo(10, 4, 4, True, False)] * 2  # as test_latent_items_resample_... establishes
    assert infos[0] == dataset_info(latents_cfg(out)) and not infos[0].infinite
    assert infos[2:] == [_build_error(c) for c in errors]  # the messages LatentDataset gives
    assert "shape (4, 4, 4) but the config expects (3, 32, 32)" in infos[2]
    assert "has no captions" in infos[3] and "is incomplete" in infos[4] and "does not exist" in infos[5]


def test_cli_extracts_shapes_with_captions(vae_dir, tmp_path, capsys):
    from ditscale.cli import main

    out = tmp_path / "shapes"
    args = [
        "extract-latents",
        "shapes",
        "--vae",
        vae_dir,
        "--out",
        str(out),
        "--image-size",
        "16",
        "--count",
        "5",
        "--set",
        "captions=true",
        "--shard-size",
        "8",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "5 train + 0 val images, latents 4x4x4 float16, 1 shards" in capsys.readouterr().out
    meta = read_meta(out)
    assert meta["dtype"] == "float16" and meta["has_captions"] and meta["num_classes"] == 6
    ds = build_dataset(latents_cfg(out, captions=True))
    shapes = build_dataset(DataConfig(name="shapes", image_size=16, captions=True))
    assert [ds[i]["caption"] for i in range(5)] == [shapes[i]["caption"] for i in range(5)]
    assert ds[0]["x"].dtype == torch.float32
    from ditscale.data.text import WordTokenizer

    assert WordTokenizer.for_dataset(latents_cfg(out)).vocab == WordTokenizer.for_shapes().vocab
    meta = json.loads((out / "meta.json").read_text())
    meta["source"]["name"] = "captions"  # as if extracted from a caption folder: vocabulary from the store
    (out / "meta.json").write_text(json.dumps(meta))
    words = WordTokenizer.for_dataset(latents_cfg(out)).vocab
    assert words == WordTokenizer.from_captions(shapes[i]["caption"] for i in range(5)).vocab
    assert (
        main(["extract-latents", "shapes", "--vae", str(tmp_path / "no-vae"), "--out", str(out), "--count", "5"]) == 2
    )
    assert "VAE folder" in capsys.readouterr().err


def test_cli_data_argument(tmp_path):
    from ditscale.cli.extract_latents import data_config_from_arg

    (tmp_path / "train.yaml").write_text("data:\n  name: digits\n  image_size: 16\nmodel: DiT-S/2\n")
    c = data_config_from_arg(str(tmp_path / "train.yaml"), ["channels=1"])
    assert (c.name, c.image_size, c.channels) == ("digits", 16, 1)
    (tmp_path / "imgs").mkdir()
    assert data_config_from_arg(str(tmp_path / "imgs"), []).name == "folder"
    with pytest.raises(ConfigError, match="unknown key 'size'"):
        data_config_from_arg("shapes", ["size=3"])


def test_store_vae_reads_the_plan_and_a_run_finds_it(store, vae_dir, tmp_path):
    out, _ = store
    assert store_vae(out) == vae_dir and store_vae(tmp_path) is None  # no plan.json: None
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.config.write_text(f"data:\n  name: latents\n  path: {out}\n  channels: 4\n  image_size: 4\n")
    assert run.vae() == vae_dir and run.data_config() == latents_cfg(out)
