"""FID-Inception: pytorch-fid's weight layout, ADM's feature taps, TF1 resize, preprocessing, strict loading.

Random (seeded) weights stand in for the real file; the one test that needs
pt_inception-2015-12-05-6726825d.pth runs only when DITSCALE_INCEPTION_WEIGHTS points to it.
"""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ditscale.errors import CheckpointError, ConfigError
from ditscale.metrics.inception import (
    WEIGHTS_FILE,
    FIDInceptionV3,
    inception_features,
    load_fid_inception,
    preprocess,
    save_state_dict,
    tf1_resize_bilinear,
)


def random_inception(seed: int = 0) -> FIDInceptionV3:
    """FID Inception with seeded random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = FIDInceptionV3()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.8, 1.2)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.8, 1.2)
        model.fc.bias.normal_(0.0, 1.0)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return random_inception()


def uint8_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# -- layout --------------------------------------------------------------------------------------
def test_state_dict_has_pytorch_fid_layout(model):
    sd = model.state_dict()
    counters = [k for k in sd if k.endswith(".num_batches_tracked")]
    assert (len(sd), len(counters)) == (566, 94)  # 94 conv+BN pairs: 94 * 5 + fc (2) = 472, + 94 counters
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6d.branch1x1.conv.weight": (192, 768, 1, 1),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "Mixed_7c.branch_pool.bn.bias": (192,),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert not any("AuxLogits" in k for k in sd) and not any(k.endswith("conv.bias") for k in sd)
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.001}


def test_parameter_count_is_pinned(model):
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    assert params == 23_850_960
    # pytorch-fid's 23,885,392 counts every number in its weights file: parameters + BN running stats.
    assert params + stats == 23_885_392


# -- forward -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def forward(model):
    """Features of 3 images of 64x64 in batches of 2, with hooked block inputs and branch outputs."""
    seen: dict[str, list] = {}

    def keep(name):
        return lambda mod, args, out=None: seen.setdefault(name, []).append(args[0] if out is None else out)

    hooks = [
        model.Mixed_6d.branch1x1.register_forward_hook(keep("6d.1x1")),
        model.Mixed_7c.register_forward_hook(keep("7c.out")),
    ]
    for block in ("Mixed_5b", "Mixed_6b", "Mixed_7b", "Mixed_7c"):
        hooks.append(getattr(model, block).register_forward_pre_hook(keep(block)))
        hooks.append(getattr(model, block).branch_pool.register_forward_pre_hook(keep(f"{block}.pool")))
    hooks.append(
        model.register_forward_pre_hook(
            lambda mod, args: seen.setdefault("tf32", []).append(torch.tensor([torch.backends.cudnn.allow_tf32]))
        )
    )
    images = uint8_images(3, 64)
    flags = lambda: torch.tensor([torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32])  # noqa: E731
    seen["flags before"] = [flags()]
    try:
        feats = inception_features(model, images, batch_size=2)
    finally:
        for h in hooks:
            h.remove()
    seen["flags after"] = [flags()]
    return images, feats, {k: torch.cat(v) for k, v in seen.items()}


def test_feature_shapes_and_dtypes(forward):
    _, feats, _ = forward
    assert {k: (v.shape, v.dtype) for k, v in feats.items()} == {
        "pool": ((3, 2048), np.float64),
        "spatial": ((3, 2023), np.float64),
        "logits": ((3, 1008), np.float64),
    }
    assert feats["pool"].min() >= 0 and feats["pool"].std() > 0.05  # after ReLU, and not vanished


def test_features_run_in_full_fp32_and_restore_tf32(forward):
    _, _, seen = forward
    assert seen["tf32"].tolist() == [False, False]  # off in both batches
    assert (
        seen["flags before"].tolist() == seen["flags after"].tolist() == [True, False]
    )  # PyTorch's defaults, restored


def test_logits_are_pool_times_fc_weight_without_bias(model, forward):
    _, feats, _ = forward
    w = model.fc.weight.detach().double().numpy()
    b = model.fc.bias.detach().double().numpy()
    np.testing.assert_allclose(feats["logits"], feats["pool"] @ w.T, rtol=1e-5, atol=1e-5)
    assert np.abs(feats["logits"] - (feats["pool"] @ w.T + b)).max() > 0.5


def test_pool_is_the_global_average_of_mixed_7c(forward):
    _, feats, seen = forward
    np.testing.assert_allclose(feats["pool"], seen["7c.out"].mean(dim=(2, 3)).double().numpy(), rtol=1e-6, atol=1e-6)


def test_spatial_is_mixed_6d_1x1_branch_first_7_channels_nhwc(forward):
    _, feats, seen = forward
    tap = seen["6d.1x1"]
    assert tuple(tap.shape) == (3, 192, 17, 17)
    nhwc = tap[:, :7].permute(0, 2, 3, 1).reshape(3, -1).double().numpy()
    np.testing.assert_array_equal(feats["spatial"], nhwc)
    assert not np.array_equal(feats["spatial"], tap[:, :7].reshape(3, -1).double().numpy())  # NCHW order differs


def test_pool_branches_are_tf_style(forward):
    _, _, seen = forward
    for block in ("Mixed_5b", "Mixed_6b", "Mixed_7b"):  # average over in-image pixels only
        x = seen[block]
        torch.testing.assert_close(seen[f"{block}.pool"], F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        assert not torch.allclose(seen[f"{block}.pool"], F.avg_pool2d(x, 3, 1, 1, count_include_pad=True))
    x = seen["Mixed_7c"]  # max pool, as the 2015 graph's mixed_10
    torch.testing.assert_close(seen["Mixed_7c.pool"], F.max_pool2d(x, 3, 1, 1))
    assert not torch.allclose(seen["Mixed_7c.pool"], F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))


def test_batching_matches_one_pass(model, forward):
    images, feats, _ = forward
    with torch.no_grad():
        direct = model(preprocess(images))
    for key, value in direct._asdict().items():
        np.testing.assert_allclose(feats[key], value.double().numpy(), rtol=1e-4, atol=1e-5)


def test_forward_rejects_unresized_input(model):
    with pytest.raises(ConfigError, match="preprocess"):
        model(torch.zeros(1, 3, 64, 64))


# -- TF1 resize ----------------------------------------------------------------------------------
def tf1_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 resize_bilinear(align_corners=False) of float (C, H, W), by its formula (coordinates in float32, as TF)."""
    _, in_h, in_w = img.shape

    def coords(n_in, n_out):
        src = np.arange(n_out, dtype=np.float32) * (np.float32(n_in) / np.float32(n_out))
        lo = np.floor(src).astype(int)
        return lo, np.minimum(np.ceil(src).astype(int), n_in - 1), (src - lo).astype(np.float64)

    y0, y1, dy = coords(in_h, out_h)
    x0, x1, dx = coords(in_w, out_w)
    top = img[:, y0][:, :, x0] + (img[:, y0][:, :, x1] - img[:, y0][:, :, x0]) * dx
    bottom = img[:, y1][:, :, x0] + (img[:, y1][:, :, x1] - img[:, y1][:, :, x0]) * dx
    return top + (bottom - top) * dy[:, None]


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [((5, 5), (13, 13)), ((32, 32), (299, 299)), ((300, 300), (299, 299)), ((17, 17), (4, 4)), ((6, 9), (10, 4))],
)
def test_tf1_resize_matches_formula(in_hw, out_hw):
    img = np.random.default_rng(1).random((2, 3, *in_hw))
    got = tf1_resize_bilinear(torch.from_numpy(img), out_hw).numpy()
    want = np.stack([tf1_reference(im, *out_hw) for im in img])
    assert got.shape == (2, 3, *out_hw)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    got32 = tf1_resize_bilinear(torch.from_numpy(img).float(), out_hw)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), want, rtol=0, atol=1e-5)


def test_tf1_resize_has_no_half_pixel_centres():
    x = torch.tensor([[[[0.0, 1.0]]]])  # (1, 1, 1, 2)
    # source x = 0, 0.5, 1, 1.5 -> the last one clips to the edge pixel
    assert tf1_resize_bilinear(x, (1, 4)).flatten().tolist() == [0.0, 0.5, 1.0, 1.0]
    assert F.interpolate(x, size=(1, 4), mode="bilinear", align_corners=False).flatten().tolist() == [
        0.0,
        0.25,
        0.75,
        1.0,
    ]
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    half_pixel = F.interpolate(img, size=(299, 299), mode="bilinear", align_corners=False)
    assert (tf1_resize_bilinear(img, 299) - half_pixel).abs().max() > 0.05
    torch.testing.assert_close(tf1_resize_bilinear(img, 32), img, rtol=0, atol=0)


# -- preprocessing -------------------------------------------------------------------------------
def test_preprocess_adm_maps_uint8_like_the_graph():
    img = np.zeros((1, 299, 299, 3), dtype=np.uint8)
    img[..., 1], img[..., 2] = 128, 255  # R 0, G 128, B 255
    x = preprocess(img)
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, 3, 299, 299)
    assert [x[0, c].unique().tolist() for c in range(3)] == [[-1.0], [0.0], [127 / 128]]
    fid = preprocess(img, mode="pytorch-fid")
    assert [fid[0, c].unique().tolist() for c in range(3)] == [
        [-1.0],
        [pytest.approx(128 / 127.5 - 1, abs=1e-6)],
        [1.0],
    ]


def test_preprocess_resizes_small_images_like_tf1():
    img = uint8_images(2, 64, seed=3)
    x = preprocess(img)
    assert tuple(x.shape) == (2, 3, 299, 299)
    nchw = torch.from_numpy(img).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(x, (tf1_resize_bilinear(nchw, 299) - 128) / 128)
    torch.testing.assert_close(preprocess(torch.from_numpy(img)), x)  # tensors work as arrays do
    fid = preprocess(img, mode="pytorch-fid")
    assert tuple(fid.shape) == (2, 3, 299, 299) and (fid - x).abs().max() > 0.1  # half-pixel resize differs


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 8, 8, 3), np.float32),
        np.zeros((2, 8, 8), np.uint8),
        np.zeros((2, 8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.uint8),
        [[0, 1]],
    ],
)
def test_preprocess_rejects_non_uint8_rgb(bad):
    with pytest.raises(ConfigError, match=r"uint8 RGB images of shape \(N, H, W, 3\)") as err:
        preprocess(bad)
    assert "\n" not in str(err.value)


def test_preprocess_rejects_unknown_mode():
    with pytest.raises(ConfigError, match="'tf2'.*adm, pytorch-fid"):
        preprocess(uint8_images(1, 8), mode="tf2")


# -- loading -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(model, tmp_path_factory):
    return save_state_dict(model, tmp_path_factory.mktemp("inception") / "random_inception.pth")


def assert_same_weights(loaded, model):
    want, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want if not k.endswith("num_batches_tracked"))


def test_round_trip_with_batchnorm_counters(model, weights):
    assert "Mixed_5b.branch1x1.bn.num_batches_tracked" in torch.load(weights, weights_only=True)
    loaded = load_fid_inception(weights)
    assert_same_weights(loaded, model)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_round_trip_without_batchnorm_counters(model, tmp_path):
    path = tmp_path / "no_counters.pth"
    torch.save({k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    assert_same_weights(load_fid_inception(path), model)


def edited(model, tmp_path, drop=(), add=None):
    """A half-precision copy of the weights (smaller; shapes are what matter) with keys dropped / added."""
    sd = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items() if k not in drop}
    sd.update(add or {})
    torch.save(sd, tmp_path / "edited.pth")
    return tmp_path / "edited.pth"


@pytest.mark.parametrize(
    "drop,add,named",
    [
        (("Mixed_7c.branch_pool.conv.weight",), None, "missing keys Mixed_7c.branch_pool.conv.weight"),
        ((), {"AuxLogits.fc.weight": torch.zeros(1000, 768)}, "unexpected keys AuxLogits.fc.weight"),
        ((), {"fc.weight": torch.zeros(1000, 2048)}, r"wrong shapes fc.weight \(1000, 2048\) \(want \(1008, 2048\)\)"),
    ],
)
def test_mismatched_keys_are_named_in_one_line(model, tmp_path, drop, add, named):
    with pytest.raises(CheckpointError, match=named) as err:
        load_fid_inception(edited(model, tmp_path, drop, add))
    assert "\n" not in str(err.value) and "pt_inception-2015-12-05" in str(err.value)


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(CheckpointError, match=WEIGHTS_FILE) as err:
        load_fid_inception(tmp_path / "nope.pth")
    assert "\n" not in str(err.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as err:
        load_fid_inception(garbage)
    assert "\n" not in str(err.value)


# -- real weights --------------------------------------------------------------------------------
@pytest.mark.skipif(
    not os.environ.get("DITSCALE_INCEPTION_WEIGHTS"),
    reason="set DITSCALE_INCEPTION_WEIGHTS to pt_inception-2015-12-05-6726825d.pth to run",
)
def test_real_weights_give_a_valid_distribution():
    net = load_fid_inception(os.environ["DITSCALE_INCEPTION_WEIGHTS"])
    feats = inception_features(net, np.full((1, 64, 64, 3), 128, dtype=np.uint8))
    probs = torch.softmax(torch.from_numpy(feats["logits"]), dim=1).numpy()
    assert np.isfinite(feats["logits"]).all() and probs.shape == (1, 1008)
    assert abs(probs.sum() - 1) < 1e-9 and probs.min() >= 0 and probs.max() < 1
    assert feats["pool"].min() >= 0 and feats["pool"].max() > 0 and np.isfinite(feats["spatial"]).all()
