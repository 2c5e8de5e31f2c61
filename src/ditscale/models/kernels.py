"""CPU speed helpers of the DiT: the attention path per shape, the patch embedding, and an allocator setting.

- **Attention** (:func:`attention`): softmax attention by the path :func:`attention_path` picks,
  ``"explicit"`` (batched matmuls: ``softmax(q k^T / sqrt(d)) v``, the scale folded into the first
  GEMM) or ``"sdpa"`` (``F.scaled_dot_product_attention``: flash attention on CPU, cuDNN/flash on
  GPUs). Both compute the same function and differ only in float rounding. The pick is a fixed
  rule of the shape, device and dtype, never a timing taken at run time, so a run resumed from a
  checkpoint takes the same path at every step and reproduces the same numbers. The rule and the
  measurements behind it are in ``docs/benchmarks.md`` (``benchmarks/attention_paths.py``).
  :func:`reference_kernels` forces SDPA and the convolution everywhere (benchmarks measure
  before/after in one run; tests compare the paths).
- **Patch embedding** (:func:`patch_embed`): the patchify convolution as one matmul on CPU.
- **Allocator** (:func:`retain_freed_memory`): a process setting (glibc keeps freed memory for reuse
  instead of page-faulting it in again at every step), made by the CPU training loop, the first
  explicit attention call, and (:func:`retain_freed_memory_on`) the CPU sampler and evaluators.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from typing import Iterator

import torch
import torch.nn.functional as F

_fast = True  # module switch: False = always the reference ops (see reference_kernels)


@contextlib.contextmanager
def reference_kernels(enabled: bool = True) -> Iterator[None]:
    """Within the block the reference ops run for every shape and device: SDPA, ``F.conv2d``.

    ``enabled=False`` makes it a no-op (so callers can write ``with reference_kernels(flag):``).
    """
    global _fast
    saved = _fast
    _fast = saved and not enabled
    try:
        yield
    finally:
        _fast = saved


# ------------------------------------------------------------------------------------------------
# Attention
# ------------------------------------------------------------------------------------------------

# The explicit path writes the (q_len x k_len) scores of every (image, head) to memory and reads
# them back for the softmax and the matmuls of the backward. In training on this project's 2-core
# machine it beats the CPU flash kernel (which recomputes them in tiles) while a call's scores fit
# in about the cores' L2 caches: up to 2^20 scores (4 MiB of fp32) by 8% on average at 1 thread
# (-8% to +26% per shape) and by 1.2-1.8x at 2 threads; beyond 2^20 flash wins at 1 thread (by up
# to 2x). Without a backward (sampling, validation) flash is as fast or faster (docs/benchmarks.md,
# "Attention paths").
EXPLICIT_MAX_SCORES = 1 << 20


def attention_path(
    batch: int,
    heads: int,
    q_len: int,
    k_len: int,
    device: torch.device | str,
    dtype: torch.dtype,
    backward: bool = True,
) -> str:
    """The attention path of one call: ``"explicit"`` or ``"sdpa"``. A pure function of its arguments.

    A CPU float32 call that will be differentiated (``backward``) and whose score tensor has at most
    :data:`EXPLICIT_MAX_SCORES` elements (``batch * heads * q_len * k_len``) takes the explicit
    batched-matmul path; every other call (larger, forward-only, GPUs, other dtypes) takes
    ``F.scaled_dot_product_attention``. It does not look at the machine (cache size, threads) or
    time anything, so the same call takes the same path wherever and whenever a run is resumed.
    """
    if not backward or torch.device(device).type != "cpu" or dtype != torch.float32:
        return "sdpa"
    return "explicit" if batch * heads * q_len * k_len <= EXPLICIT_MAX_SCORES else "sdpa"


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` with batched matmuls; q (N, H, Lq, d), k/v (N, H, Lk, d) -> (N, H, Lq, d).

    ``mask`` bool, broadcastable to (N, H, Lq, Lk), True = attend (SDPA's boolean mask). A query with
    every key masked gets NaN, as in SDPA's math path (the DiT always keeps the timestep token).

    The first call in a process calls :func:`retain_freed_memory`: with glibc's default policy the
    scores and probabilities (0.1-4 MiB per call) are page-faulted in afresh at every step, which
    made a quickstart step 20% slower instead of 8% faster (docs/benchmarks.md).
    """
    _retain_freed_memory_once()
    n, h, lq, d = q.shape
    lk = k.shape[-2]
    q3, k3, v3 = q.reshape(n * h, lq, d), k.reshape(n * h, lk, d), v.reshape(n * h, lk, d)
    # beta=0: the (broadcast, never read) input only gives the shape; the scale rides in the GEMM.
    scores = torch.baddbmm(q3.new_empty(()).expand(n * h, lq, lk), q3, k3.transpose(1, 2), beta=0.0, alpha=d**-0.5)
    if mask is not None:
        scores = scores.view(n, h, lq, lk).masked_fill(~mask, float("-inf")).view(n * h, lq, lk)
    return torch.bmm(torch.softmax(scores, dim=-1), v3).view(n, h, lq, d)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head softmax attention by the path :func:`attention_path` picks for this call.

    q (N, H, Lq, d), k and v (N, H, Lk, d); ``mask`` bool (N, 1, 1, Lk) or broadcastable, True =
    attend. Returns (N, H, Lq, d). The call is differentiated when grad mode is on and q, k or v
    requires grad. Inside :func:`reference_kernels` always SDPA.
    """
    n, h, lq, _ = q.shape
    backward = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if _fast and attention_path(n, h, lq, k.shape[-2], q.device, q.dtype, backward) == "explicit":
        return explicit_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# ------------------------------------------------------------------------------------------------
# Patch embedding
# ------------------------------------------------------------------------------------------------


def patch_embed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, patch: int) -> torch.Tensor:
    """``Conv2d(kernel = stride = patch)`` of (N, C, H, W) images as (N, T, D) tokens in raster order.

    ``weight`` (D, C, patch, patch) and ``bias`` (D,) are the convolution's. On CPU the patches are
    cut out with one reshape/permute copy and projected by one matmul (the same sums, 1.2-2x faster
    than the CPU convolution forward + backward, docs/benchmarks.md); elsewhere, and inside
    :func:`reference_kernels`, it is ``F.conv2d``.
    """
    if _fast and x.device.type == "cpu":
        n, c, h, w = x.shape
        gh, gw = h // patch, w // patch
        patches = x.reshape(n, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * patch * patch)
        return F.linear(patches, weight.reshape(weight.shape[0], -1), bias)
    return F.conv2d(x, weight, bias, stride=patch).flatten(2).transpose(1, 2)


# ------------------------------------------------------------------------------------------------
# The C allocator (a process setting, for the training entry points to call)
# ------------------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


_allocator_set = False


def _retain_freed_memory_once() -> None:
    global _allocator_set
    if not _allocator_set:
        _allocator_set = True
        retain_freed_memory()


def retain_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Make glibc keep freed blocks for reuse instead of returning them to the OS; True if applied.

    Torch's CPU tensors come from ``malloc``. By default glibc serves blocks above a (dynamic)
    threshold with fresh ``mmap`` pages and gives freed heap memory back, so the activations of a
    small model's training step (~0.1-10 MB each) can be page-faulted in again at every step; in the
    development VM a fault costs microseconds (docs/benchmarks.md). With blocks up to
    ``mmap_threshold`` bytes taken from the heap and up to ``trim_threshold`` bytes of free heap
    kept, a step reuses the previous step's memory; the process keeps up to ``trim_threshold`` of
    freed memory instead of returning it to the OS.

    Affects the whole process and only later allocations; numbers are unchanged (torch aligns every
    CPU tensor to 64 bytes either way). The explicit attention path calls it on its first use. A
    no-op returning False off glibc (macOS, musl, Windows).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
    )


def retain_freed_memory_on(device: str | torch.device) -> bool:
    """:func:`retain_freed_memory` when ``device`` is the CPU (else nothing; False).

    :func:`ditscale.generate.sample_npz` and the evaluators' loaders call it: a batch of 250
    quickstart images holds activations of 4-40 MiB per op, which glibc otherwise maps afresh and
    page-faults in at every model call. The quickstart's quality stage took 23% less time with it on a
    2-core AVX2 machine, with the same samples and scores bit for bit (docs/benchmarks.md,
    ``benchmarks/sampling_allocator.py``).
    """
    return torch.device(device).type == "cpu" and retain_freed_memory()
