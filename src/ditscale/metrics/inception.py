"""The FID-Inception network and ADM's preprocessing, in PyTorch without torchvision.

OpenAI's ADM evaluator (guided-diffusion ``evaluations/evaluator.py``) runs TensorFlow's
``classify_image_graph_def.pb`` (Inception v3 of 2015-12-05) and reads three things from it:
``pool_3`` (2048 features, for FID, precision and recall), ``mixed_6/conv`` (the 1x1 branch of the
seventh mixed block, first 7 channels: 17*17*7 = 2023 features, for sFID) and the softmax weights
(1008 classes, for the Inception Score). This module rebuilds that graph in PyTorch in the layout of
pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` state dict (the same TF weights, converted), so
the numbers are comparable with the published ones:

- :class:`FIDInceptionV3` returns :class:`InceptionFeatures` ``(pool, spatial, logits)``;
- :func:`preprocess` reproduces the graph's own input path (TF1 ``resize_bilinear`` without
  half-pixel centres, then ``(x - 128) / 128``), or pytorch-fid's for comparisons with that tool;
- :func:`load_fid_inception` reads the weights strictly; nothing is ever downloaded;
- :func:`inception_features` runs batches of uint8 images and returns float64 numpy features.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ditscale.errors import CheckpointError, ConfigError
from ditscale.io import atomic_path
from ditscale.models.io import load_state_dict_file
from ditscale.models.kernels import retain_freed_memory_on

INPUT_SIZE = 299  # the graph resizes every image to 299x299
POOL_DIM = 2048
SPATIAL_CHANNELS = 7  # ADM keeps mixed_6/conv[..., :7]
SPATIAL_DIM = 17 * 17 * SPATIAL_CHANNELS  # 2023
NUM_LOGITS = 1008  # the 2015 graph has 1008 outputs (1000 ImageNet classes + 8 unused)
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
MODES = ("adm", "pytorch-fid")
MAX_NAMED = 3  # keys named per category in a mismatch message


# -- blocks --------------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001, as TF's graph) -> ReLU; keys ``conv.*``, ``bn.*``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)  # bn's output is fresh, so in place is safe


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's SAME average pool divides by the number of in-image pixels, not by 9, at the borders.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and an average-pool branch; 224 + pool_ch out."""

    def __init__(self, in_ch: int, pool_ch: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_ch, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_ch, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_ch, pool_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)  # (N, 64, H, W)
        b5 = self.branch5x5_2(self.branch5x5_1(x))  # (N, 64, H, W)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))  # (N, 96, H, W)
        bp = self.branch_pool(_tf_avg_pool(x))  # (N, pool_ch, H, W)
        return torch.cat([b1, b5, b3, bp], 1)  # (N, 224 + pool_ch, H, W)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): strided 3x3, strided double 3x3 and a max pool; 480 + in_ch out."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)  # (N, 384, H', W')
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))  # (N, 96, H', W')
        bp = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, in_ch, H', W')
        return torch.cat([b3, bd, bp], 1)  # (N, 480 + in_ch, H', W')


class InceptionC(nn.Module):
    """17x17 block (Mixed_6b..e) with factorised 7x7 convolutions and an average-pool branch; 768 out."""

    def __init__(self, in_ch: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_ch, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_ch, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_ch, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_1x1(x)[0]

    def forward_with_1x1(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output (N, 768, H, W) and its 1x1 branch (N, 192, H, W) (TF ``mixed_k/conv``)."""
        b1 = self.branch1x1(x)  # (N, 192, H, W)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))  # (N, 192, H, W)
        bd = self.branch7x7dbl_1(x)  # (N, c7, H, W)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))  # (N, c7, H, W)
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))  # (N, 192, H, W)
        bp = self.branch_pool(_tf_avg_pool(x))  # (N, 192, H, W)
        return torch.cat([b1, b7, bd, bp], 1), b1  # (N, 768, H, W), (N, 192, H, W)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): strided 3x3, 7x7-then-strided-3x3 and a max pool; 512 + in_ch out."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_ch, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_ch, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))  # (N, 320, H', W')
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))  # (N, 192, H, W)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(b7))  # (N, 192, H', W')
        bp = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, in_ch, H', W')
        return torch.cat([b3, b7, bp], 1)  # (N, 512 + in_ch, H', W')


class InceptionE(nn.Module):
    """8x8 block (Mixed_7b, Mixed_7c) with split 1x3/3x1 convolutions; 2048 out.

    ``pool="avg"`` (Mixed_7b) averages over in-image pixels; ``pool="max"`` (Mixed_7c) max-pools,
    because the 2015 TF graph does so in ``mixed_10/tower_2/pool`` (unlike the paper and torchvision).
    """

    def __init__(self, in_ch: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ConfigError(f"InceptionE pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_ch, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_ch, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)  # (N, 320, H, W)
        b3 = self.branch3x3_1(x)  # (N, 384, H, W)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)  # (N, 768, H, W)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))  # (N, 384, H, W)
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)  # (N, 768, H, W)
        # PyTorch pads the max pool with -inf, so like TF's SAME max pool it ignores the border.
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        bp = self.branch_pool(pooled)  # (N, 192, H, W)
        return torch.cat([b1, b3, bd, bp], 1)  # (N, 2048, H, W)


# -- network -------------------------------------------------------------------------------------
class InceptionFeatures(NamedTuple):
    """What ADM's evaluator reads from the graph, float32 on the model's device."""

    pool: torch.Tensor  # (N, 2048) pool_3: global average of Mixed_7c, after ReLU so >= 0
    spatial: torch.Tensor  # (N, 2023) mixed_6/conv[..., :7] flattened in NHWC order (sFID)
    logits: torch.Tensor  # (N, 1008) pool @ fc.weight.T, no bias (Inception Score)


class FIDInceptionV3(nn.Module):
    """Inception v3 of TF's 2015-12-05 graph, with the key names and shapes of pytorch-fid's FID weights.

    94 conv + BatchNorm pairs and ``fc``: the state dict has 472 tensors (566 with BatchNorm's
    ``num_batches_tracked``), incl. ``fc.weight`` (1008, 2048) and ``fc.bias`` (1008,) (kept for the file's
    layout; ADM's logits do not use it). 23,850,960 parameters plus 34,432 BatchNorm running statistics
    make the 23,885,392 numbers of the weights file. Load weights with :func:`load_fid_inception`; a fresh
    instance has random (He-initialised) weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_ch=32)
        self.Mixed_5c = InceptionA(256, pool_ch=64)
        self.Mixed_5d = InceptionA(288, pool_ch=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(POOL_DIM, NUM_LOGITS)
        self._init_random()

    def _init_random(self) -> None:
        # He init keeps a random network's activations O(1) through its ReLU layers (with PyTorch's
        # default init pool3 comes out ~1e-8), so tests with random weights compare real numbers.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutions and max pools before the mixed blocks: (N, 3, 299, 299) -> (N, 192, 35, 35)."""
        x = self.Conv2d_1a_3x3(x)  # (N, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)  # (N, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73) TF VALID pool
        x = self.Conv2d_3b_1x1(x)  # (N, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # (N, 192, 71, 71)
        return F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)

    def forward(self, x: torch.Tensor) -> InceptionFeatures:
        """Features of float (N, 3, 299, 299) images already normalised to [-1, 1) (see :func:`preprocess`)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ConfigError(
                f"FIDInceptionV3 takes (N, 3, 299, 299) input, got {tuple(x.shape)}; use preprocess() first"
            )
        x = self.stem(x)  # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        x = self.Mixed_6c(self.Mixed_6b(x))  # (N, 768, 17, 17)
        x, tap = self.Mixed_6d.forward_with_1x1(x)  # (N, 768, 17, 17), tap (N, 192, 17, 17)
        x = self.Mixed_6e(x)  # (N, 768, 17, 17)
        x = self.Mixed_7a(x)  # (N, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (N, 2048, 8, 8)
        pool = x.mean(dim=(2, 3))  # (N, 2048) TF's pool_3 is an 8x8 VALID average pool
        # TF's graph is NHWC, so ADM's flattened sFID features run over channels fastest.
        spatial = tap[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(tap), -1)  # (N, 2023)
        # ADM's _create_softmax_graph multiplies pool_3 by the weight input of softmax/logits/MatMul
        # and takes the softmax of that: the bias is not added.
        logits = pool @ self.fc.weight.T  # (N, 1008)
        return InceptionFeatures(pool, spatial, logits)


# -- preprocessing -------------------------------------------------------------------------------
def _tf1_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """float64 (out_size, in_size) matrix M with M @ v = TF1 ``resize_bilinear`` (align_corners=False) of v."""
    # TF computes the scale and source coordinates in float32 (CalculateResizeScale, LegacyScaler).
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale  # no half-pixel offset
    lo = np.floor(src)
    lerp = (src - lo).astype(np.float64)
    lo_i = np.clip(lo.astype(np.int64), 0, in_size - 1)
    hi_i = np.clip(np.ceil(src).astype(np.int64), 0, in_size - 1)
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lo_i), 1.0 - lerp)
    np.add.at(matrix, (rows, hi_i), lerp)  # adds to the same cell when hi == lo (edge or exact hit)
    return matrix


def tf1_resize_bilinear(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float (N, C, H, W) to (size, size) or (h, w), as TF1's ``resize_bilinear``.

    TF1 with ``align_corners=False`` maps output pixel i to source coordinate ``i * in / out`` (no
    half-pixel centres, unlike ``F.interpolate``), interpolating between floor and ceil of it clipped to
    the last pixel. It is separable, so the result is ``Wy @ x @ Wx^T`` with two small matrices; returns
    the input's dtype and device.
    """
    if x.ndim != 4 or not torch.is_floating_point(x):
        raise ConfigError(f"tf1_resize_bilinear takes a float (N, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    wy = torch.from_numpy(_tf1_resize_matrix(x.shape[2], out_h)).to(x.device, x.dtype)  # (out_h, H)
    wx = torch.from_numpy(_tf1_resize_matrix(x.shape[3], out_w)).to(x.device, x.dtype)  # (out_w, W)
    return wy @ x @ wx.T  # (N, C, out_h, out_w)


def _as_uint8_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) numpy array or tensor -> uint8 (N, 3, H, W) tensor; rejects anything else."""
    dtype = getattr(images, "dtype", type(images).__name__)
    shape = tuple(getattr(images, "shape", ()))
    ok_dtype = dtype in (np.uint8, torch.uint8) and isinstance(images, (np.ndarray, torch.Tensor))
    if not ok_dtype or len(shape) != 4 or shape[3] != 3 or 0 in shape[1:3]:
        raise ConfigError(
            f"expected uint8 RGB images of shape (N, H, W, 3), got {dtype} {shape}; "
            "convert with np.clip(np.round(x * 255), 0, 255).astype(np.uint8) and stack RGB channels last"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    return tensor.permute(0, 3, 1, 2)


def preprocess(images: np.ndarray | torch.Tensor, mode: str = "adm") -> torch.Tensor:
    """uint8 (N, H, W, 3) images -> float32 (N, 3, 299, 299) network input (on the tensor's device).

    ``mode="adm"``: what ADM's TF graph does to the float pixels it is fed: TF1 bilinear resize to 299
    (skipped at 299, where it is the identity), then ``(x - 128) / 128`` in [-1, 127/128].
    ``mode="pytorch-fid"``: pytorch-fid's path, ``x / 255``, half-pixel ``F.interpolate`` to 299, ``2x - 1``;
    only for comparing with numbers from that tool (its resize differs from TF's).
    """
    if mode not in MODES:
        raise ConfigError(f"unknown Inception preprocessing mode {mode!r}; use one of {', '.join(MODES)}")
    x = _as_uint8_nchw(images).float()  # (N, 3, H, W) in [0, 255]
    if mode == "adm":
        if tuple(x.shape[2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = tf1_resize_bilinear(x, INPUT_SIZE)  # (N, 3, 299, 299)
        return (x - 128.0) / 128.0
    x = F.interpolate(x / 255.0, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0  # (N, 3, 299, 299)


@contextlib.contextmanager
def _full_fp32() -> Iterator[None]:
    """Turn off TF32 convolutions and matmuls (cuDNN's default on Ampere+) for the block, then restore them.

    TF32 moves the features of this network by ~1e-3 relative (seen on an H200), FID-relevant noise;
    full fp32 costs little here (500 images of 256px: 0.37 s instead of 0.22 s on that GPU).
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def inception_features(
    model: FIDInceptionV3,
    images: np.ndarray,
    *,
    batch_size: int = 50,
    mode: str = "adm",
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run uint8 (N, H, W, 3) images through ``model`` in batches (moving the model to ``device``).

    Returns float64 numpy ``{"pool": (N, 2048), "spatial": (N, 2023), "logits": (N, 1008)}``; a tqdm
    bar when ``progress``. ``mode`` is the :func:`preprocess` mode. Runs in full fp32 (TF32 off meanwhile).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    _as_uint8_nchw(images[:1] if len(images) else images)  # fail before any work on a bad array
    model = model.to(device).eval()
    dims = {"pool": POOL_DIM, "spatial": SPATIAL_DIM, "logits": NUM_LOGITS}
    parts: dict[str, list[np.ndarray]] = {k: [np.zeros((0, d))] for k, d in dims.items()}
    starts = range(0, len(images), batch_size)
    with torch.no_grad(), _full_fp32():
        for start in tqdm(starts, desc="inception", unit="batch", disable=not progress):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            feats = model(preprocess(batch, mode))
            for key, value in feats._asdict().items():
                parts[key].append(value.double().cpu().numpy())
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


# -- loading -------------------------------------------------------------------------------------
def _is_bn_counter(key: str) -> bool:
    return key.endswith(".num_batches_tracked")


def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - MAX_NAMED} more)" if len(keys) > MAX_NAMED else ""
    return ", ".join(keys[:MAX_NAMED]) + more


def _check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise one-line CheckpointError unless ``state`` has the model's keys and shapes.

    BatchNorm ``num_batches_tracked`` counters may be absent (older files lack them); nothing else may.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not _is_bn_counter(k)]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (want {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = [
        f"{label} {_listing(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{path} is not the FID Inception state dict: {'; '.join(problems)}; "
            f"expected pytorch-fid's pt_inception-2015-12-05 weights ({WEIGHTS_FILE})"
        )


def load_fid_inception(path: str | Path, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` strictly.

    The file is read with ``torch.load(map_location="cpu", weights_only=True)`` and never downloaded.
    Returns the model in eval mode on ``device``, parameters frozen.
    """
    p = Path(path)
    retain_freed_memory_on(device)  # Inception's activations: reuse freed memory instead of page-faulting it in
    if not p.is_file():
        raise CheckpointError(f"Inception weights {str(p)!r} do not exist; download {WEIGHTS_FILE} from {WEIGHTS_URL}")
    state = load_state_dict_file(p)  # weights_only torch.load; CheckpointError for unreadable or unsafe files
    model = FIDInceptionV3()
    _check_state_dict(model, state, p)
    # Fill absent BatchNorm counters from the fresh model (they do not affect eval-mode outputs).
    state = {**{k: v for k, v in model.state_dict().items() if _is_bn_counter(k)}, **state}
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    return model.to(device).eval()


def save_state_dict(model: nn.Module, path: str | Path) -> Path:
    """``torch.save(model.state_dict(), path)``, atomically; e.g. random FID-Inception weights for tests."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return path
