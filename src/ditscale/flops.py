"""Exact MAC, FLOP and parameter accounting of a DiT (pure Python: no torch import).

Units, as in ``docs/design.md``:

- **MACs** (multiply-accumulates) of ONE forward pass of ONE image. The DiT paper's "Gflops"
  are GMACs: :func:`forward_macs` of ``DiT-XL/2`` at latent 32 is 118.64e9, Table 4 of the paper.
- **FLOPs** = 2 x MACs. Training costs forward + backward = 3 forward passes, so
  :func:`train_flops_exact` is ``6 * forward_macs(config).total * images`` FLOPs.
- **6ND**: :func:`train_flops_6nd` is ``6 * N * D`` FLOPs with N = non-embedding parameters and
  D = image tokens seen (``tokens_per_image * images``), the Kaplan/Chinchilla estimate.
- **tokens** = image tokens ``(input_size / patch_size) ** 2`` per image; **images** = samples.
- **GPU-hours** (:func:`gpu_hours`) = training FLOPs / (peak FLOP/s x MFU) / 3600, with the peak a
  GPU's dense bf16 figure (:data:`GPU_BF16_PEAK_FLOPS`, the one table of them).

Counting convention (reproduces the paper, see ``docs/flops.md``): every matmul and the patch
convolution count ``in_features x out_features`` MACs per token (biases, activations, softmax,
the modulation arithmetic and residual adds are free), attention counts ``2 * S_q * S_k * d`` MACs
(QK^T and AV), and every LayerNorm counts one op per input element (the ``norm`` component).
The matmul part (``MacBreakdown.matmul``) equals ``torch.utils.flop_counter`` / 2 exactly (math SDPA).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ditscale.errors import ConfigError
from ditscale.models.config import EMBEDDING_PARAMETERS, FREQUENCY_EMBEDDING_SIZE, DiTConfig, resolve_config

__all__ = [
    "FREQUENCY_EMBEDDING_SIZE",
    "MacBreakdown",
    "ParamCounts",
    "forward_macs",
    "forward_flops",
    "param_counts",
    "tokens_per_image",
    "train_flops_exact",
    "train_flops_6nd",
    "images_for_flops",
    "images_in_budget",
    "inference_memory_bytes",
    "train_memory_bytes",
    "fmt_flops",
    "GPU_BF16_PEAK_FLOPS",
    "DEFAULT_GPU",
    "DEFAULT_MFU",
    "gpu_peak_flops",
    "resolve_gpu",
    "gpu_hours",
]

ADALN_CHUNKS = {"adaln_zero": 6, "adaln": 4}  # modulation outputs per block, in units of hidden_size


@dataclass(frozen=True)
class MacBreakdown:
    """MACs of one forward pass of one image, by component (1 MAC = 2 FLOPs).

    Attributes:
        attn_proj: qkv and output projections of self-attention over the image tokens.
        attn_scores: QK^T and attention-weighted sum of V over the image tokens (2 * T^2 * d per block).
        mlp: fc1 and fc2 over the image tokens.
        modulation: adaLN linears (blocks and final layer), applied once per image to c.
        embed: patch-embedding conv, timestep MLP (256 -> d -> d) and the text context embedder.
        final: final linear decoder (d -> p * p * out_channels per token), and the optional
            output conv head (two 3x3 convs, out_channels -> out_conv -> out_channels per pixel).
        conditioning: cross-attention layers (cross_attn), or the extra cost of the condition
            tokens carried through every block (in_context).
        norm: LayerNorms, one op per input element (not a matmul; needed to reproduce the DiT paper).
    """

    attn_proj: int = 0
    attn_scores: int = 0
    mlp: int = 0
    modulation: int = 0
    embed: int = 0
    final: int = 0
    conditioning: int = 0
    norm: int = 0

    @property
    def total(self) -> int:
        """All MACs of the forward pass (the DiT paper's "flops")."""
        return sum(self.as_components().values())

    @property
    def matmul(self) -> int:
        """MACs of matmuls and convolutions only (``total - norm``): what FlopCounterMode counts, / 2."""
        return self.total - self.norm

    def as_components(self) -> dict[str, int]:
        """Component name -> MACs, without the total."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def as_dict(self) -> dict[str, int]:
        """Component name -> MACs, plus ``"total"``."""
        return {**self.as_components(), "total": self.total}


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts (scalars) of a DiT, equal to the torch model's.

    Attributes:
        total: ``sum(p.numel() for p in model.parameters())``, including the frozen ``pos_embed``
            (the reference's count: DiT-XL/2 = 675,129,632).
        trainable: ``total`` minus ``pos_embed`` (fixed sin-cos, ``requires_grad=False``); the
            DiT paper's "Params (M)" are this number rounded to millions.
        non_embedding: the N of 6ND: ``total`` minus the input embeddings and the output
            projection, i.e. minus ``patch_embed``, ``pos_embed``, ``t_embedder``, ``y_embedder``,
            ``context_embedder`` and ``final_linear``. What remains is the transformer blocks
            (attention, MLP, adaLN modulation, cross-attention, LayerNorm affines), the final
            layer's adaLN modulation / LayerNorm, and the output conv head (a computing layer, not
            a projection between the token width and the data).
        components: name -> count; names: patch_embed, pos_embed, t_embedder, y_embedder,
            context_embedder, attn, mlp, modulation, cross_attn, norm, final_linear, out_conv
            (zeros omitted).
    """

    total: int
    trainable: int
    non_embedding: int
    components: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


EMBEDDING_COMPONENTS = tuple(EMBEDDING_PARAMETERS)  # left out of ParamCounts.non_embedding


def _condition_tokens(cfg: DiTConfig) -> int:
    """Condition tokens of the cross_attn / in_context designs: the timestep token plus the class
    token or the ``context_len`` text tokens."""
    return 1 + {"class": 1, "text": cfg.context_len, "none": 0}[cfg.conditioning]


def _block_macs(tokens: int, d: int, mlp_hidden: int) -> tuple[int, int, int]:
    """(attn_proj, attn_scores, mlp) MACs of one transformer block over ``tokens`` tokens."""
    return 4 * tokens * d * d, 2 * tokens * tokens * d, 2 * tokens * d * mlp_hidden


def forward_macs(config: Any) -> MacBreakdown:
    """MACs (multiply-accumulates) of ONE forward pass of ONE image, split by component.

    ``config`` is a :class:`DiTConfig`, a paper name ("DiT-XL/2") or a dict of config fields.
    Text conditioning is counted at its maximum length ``context_len``. Units: MACs; the DiT
    paper's "Gflops" are ``forward_macs(...).total / 1e9`` (e.g. DiT-XL/2: 118.64).
    """
    cfg = resolve_config(config)
    T, d, L, H = cfg.num_patches, cfg.hidden_size, cfg.depth, cfg.mlp_hidden
    p = cfg.patch_size
    attn_proj, attn_scores, mlp = (L * m for m in _block_macs(T, d, H))

    embed = T * cfg.in_channels * p * p * d + FREQUENCY_EMBEDDING_SIZE * d + d * d
    if cfg.conditioning == "text":
        embed += cfg.context_len * cfg.context_dim * d
    final = T * d * p * p * cfg.out_channels + cfg.input_size**2 * 9 * 2 * cfg.out_channels * cfg.out_conv

    modulation = conditioning = 0
    norms_per_block, norm_tokens = 2, T
    if cfg.block in ADALN_CHUNKS:
        modulation = L * d * ADALN_CHUNKS[cfg.block] * d + d * 2 * d  # blocks + final layer
    elif cfg.block == "cross_attn":
        m = _condition_tokens(cfg)
        # q and out projections on the image tokens, k/v on the condition tokens, scores QK^T and AV.
        conditioning = L * (2 * T * d * d + m * d * 2 * d + 2 * T * m * d)
        norms_per_block = 3
    else:  # in_context: the condition tokens join the sequence of every block
        S = T + _condition_tokens(cfg)
        conditioning = L * (sum(_block_macs(S, d, H)) - sum(_block_macs(T, d, H)))
        norm_tokens = S
    norm = L * norms_per_block * norm_tokens * d + T * d  # + the final LayerNorm on the image tokens
    return MacBreakdown(
        attn_proj=attn_proj,
        attn_scores=attn_scores,
        mlp=mlp,
        modulation=modulation,
        embed=embed,
        final=final,
        conditioning=conditioning,
        norm=norm,
    )


def param_counts(config: Any) -> ParamCounts:
    """Parameter counts (number of scalars) of the DiT built from ``config``; see :class:`ParamCounts`.

    Equal to the torch model (``ditscale.models.create_model``) parameter by parameter.
    """
    cfg = resolve_config(config)
    T, d, L, H = cfg.num_patches, cfg.hidden_size, cfg.depth, cfg.mlp_hidden
    pp_out = cfg.patch_size**2 * cfg.out_channels
    c = {
        "patch_embed": cfg.in_channels * cfg.patch_size**2 * d + d,
        "pos_embed": T * d,
        "t_embedder": FREQUENCY_EMBEDDING_SIZE * d + d + d * d + d,
        "y_embedder": (cfg.num_classes + int(cfg.class_dropout_prob > 0)) * d if cfg.conditioning == "class" else 0,
        "context_embedder": cfg.context_dim * d + d if cfg.conditioning == "text" else 0,
        "attn": L * (4 * d * d + 4 * d),
        "mlp": L * (2 * d * H + H + d),
        "modulation": 0,
        "cross_attn": 0,
        "norm": 0,
        "final_linear": d * pp_out + pp_out,
        "out_conv": 9 * 2 * cfg.out_channels * cfg.out_conv + cfg.out_conv + cfg.out_channels if cfg.out_conv else 0,
    }
    if cfg.block in ADALN_CHUNKS:  # non-affine LayerNorms; adaLN linears in the blocks and the final layer
        k = ADALN_CHUNKS[cfg.block]
        c["modulation"] = L * (k * d * d + k * d) + 2 * d * d + 2 * d
    else:  # affine LayerNorms (weight + bias): 2 or 3 per block, plus the final one
        norms = 3 if cfg.block == "cross_attn" else 2
        c["norm"] = (L * norms + 1) * 2 * d
        if cfg.block == "cross_attn":
            c["cross_attn"] = L * (4 * d * d + 4 * d)
    total = sum(c.values())
    return ParamCounts(
        total=total,
        trainable=total - c["pos_embed"],
        non_embedding=total - sum(c[k] for k in EMBEDDING_COMPONENTS),
        components={k: v for k, v in c.items() if v},
    )


def tokens_per_image(config: Any) -> int:
    """Image tokens per image, ``(input_size / patch_size) ** 2`` (condition tokens not included)."""
    return resolve_config(config).num_patches


def forward_flops(config: Any) -> int:
    """FLOPs of one forward pass of one image: ``2 * forward_macs(config).total``."""
    return 2 * forward_macs(config).total


def _count(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
    return value


def train_flops_exact(config: Any, images: float) -> float:
    """Training FLOPs for ``images`` images (samples), forward + backward: ``6 * forward_macs.total * images``.

    3 forward-pass costs per image (backward = 2 x forward), 2 FLOPs per MAC. Units: FLOPs.
    """
    return float(6 * forward_macs(config).total * _count(images, "images"))


def train_flops_6nd(config: Any, images: float) -> float:
    """Training FLOPs for ``images`` images by the 6ND rule: ``6 * N * D`` with N = non-embedding
    parameters and D = ``tokens_per_image * images`` image tokens. Units: FLOPs."""
    cfg = resolve_config(config)
    return float(6 * param_counts(cfg).non_embedding * cfg.num_patches * _count(images, "images"))


def images_for_flops(config: Any, flops: float, convention: str = "exact") -> float:
    """Images (samples, as a float) whose training costs ``flops`` FLOPs: the inverse of
    :func:`train_flops_exact` (``convention="exact"``) or of :func:`train_flops_6nd` (``"6nd"``)."""
    flops = _count(flops, "flops")
    cfg = resolve_config(config)
    if convention == "exact":
        return flops / (6 * forward_macs(cfg).total)
    if convention == "6nd":
        return flops / (6 * param_counts(cfg).non_embedding * cfg.num_patches)
    raise ConfigError(f"unknown FLOP convention {convention!r}; choose 'exact' or '6nd'")


# Values a transformer block keeps for its backward pass, per token and unit of width, when the
# attention scores are not stored (fused SDPA): 34 bytes in 16-bit, i.e. 17 values (Korthikanti et
# al. 2022, "Reducing Activation Recomputation in Large Transformer Models", Sec. 4.1, MLP ratio 4).
ACTIVATION_VALUES_PER_TOKEN_WIDTH = 17
# fp32 training state per parameter: weights, gradients, AdamW's two moments, the EMA copy.
STATE_BYTES_PER_PARAM = 4 + 4 + 8 + 4


def train_memory_bytes(config: Any, images: float, bytes_per_value: int = 4) -> float:
    """A lower bound on the memory (bytes) of one training step on ``images`` images: the fp32
    training state plus the blocks' stored activations (:data:`ACTIVATION_VALUES_PER_TOKEN_WIDTH`
    values of ``bytes_per_value`` bytes per token and unit of width). Workspace, the data and the
    embeddings' activations are left out, so a step that needs more than this cannot fit."""
    cfg = resolve_config(config)
    state = STATE_BYTES_PER_PARAM * param_counts(cfg).total
    per_image = cfg.depth * cfg.num_patches * cfg.hidden_size * ACTIVATION_VALUES_PER_TOKEN_WIDTH * bytes_per_value
    return float(state + per_image * _count(images, "images"))


def inference_memory_bytes(config: Any, images: float = 1) -> float:
    """A lower bound on the memory (bytes) of one forward pass on ``images`` images: the fp32 weights
    (4 bytes per parameter, as the model is built) plus the MLP's hidden activation, the widest value
    a block computes (``tokens * mlp_hidden`` values of 4 bytes per image). A model that needs more
    cannot be built and run, whatever its weights hold."""
    cfg = resolve_config(config)
    return float(4 * param_counts(cfg).total + 4 * cfg.num_patches * cfg.mlp_hidden * _count(images, "images"))


def images_in_budget(config: Any, flops: float) -> int:
    """The most whole images whose exact training FLOPs fit in ``flops`` (an int, possibly 0).

    ``floor(images_for_flops)`` guarded both ways against float rounding of the division, so
    ``images * train_flops_exact(config, 1) <= flops < (images + 1) * train_flops_exact(config, 1)``
    holds exactly. Training runs with a FLOP budget and the study planner both count images here.
    """
    per_image = float(train_flops_exact(config, 1))
    images = math.floor(images_for_flops(config, flops))
    while (images + 1) * per_image <= flops:
        images += 1
    while images > 0 and images * per_image > flops:
        images -= 1
    return images


def fmt_flops(x: float) -> str:
    """Compact FLOPs label for ids and legends: 3e11, 1.5e12."""
    exp = int(math.floor(math.log10(x)))
    mant = round(x / 10**exp, 2)
    if mant >= 10:
        mant, exp = mant / 10, exp + 1
    text = f"{mant:.2f}".rstrip("0").rstrip(".")
    return f"{text}e{exp}"


# -- hardware time --------------------------------------------------------------------------------
# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from the vendors' data sheets. The training
# loop's MFU and every GPU-hour estimate (study and training plans) read them here.
GPU_BF16_PEAK_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 756e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}

# The GPU and model-FLOPs utilisation that GPU-hour estimates assume unless told otherwise. 0.35 is
# what the real training loop measured for compiled DiT-XL/2 in bf16 at 128 images per GPU on one
# H100 SXM ("H100 80GB HBM3": 0.352 of 989 TFLOP/s; docs/benchmarks.md, "GPU"). Smaller per-GPU
# batches and smaller models measured less (DiT-XL/2 at 32 per GPU: 0.24; DiT-B/2 at 64: 0.21; DiT-S/2: 0.08).
DEFAULT_GPU = "H100 SXM"
DEFAULT_MFU = 0.35


def gpu_peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU from its name (e.g. ``torch.cuda.get_device_name``), the most
    specific entry of :data:`GPU_BF16_PEAK_FLOPS` contained in it (case-insensitive); None if unknown."""
    found = resolve_gpu(device_name, strict=False)
    return None if found is None else found[1]


def resolve_gpu(name: str, strict: bool = True) -> tuple[str, float] | None:
    """``(table name, dense bf16 peak FLOP/s)`` of the GPU ``name``: the most specific table entry
    contained in it, case-insensitive ("NVIDIA H100 80GB HBM3" -> "H100 80GB HBM3"; a bare "H100"
    is the PCIe card's 756 TFLOP/s). Unknown: None, or with ``strict`` a ConfigError listing the names."""
    for key in sorted(GPU_BF16_PEAK_FLOPS, key=len, reverse=True):  # most specific name first
        if key.lower() in name.lower():
            return key, GPU_BF16_PEAK_FLOPS[key]
    if strict:
        raise ConfigError(f"unknown GPU {name!r}; choose one of {', '.join(GPU_BF16_PEAK_FLOPS)}")
    return None


def gpu_hours(flops: float, peak_flops: float, mfu: float) -> float:
    """GPU-hours that ``flops`` training FLOPs (not MACs) take on GPUs of ``peak_flops`` FLOP/s each
    running at model-FLOPs utilisation ``mfu``: ``flops / (peak_flops * mfu) / 3600``."""
    flops = _count(flops, "flops")
    if not (peak_flops > 0 and math.isfinite(peak_flops)):
        raise ConfigError(f"peak FLOP/s must be a positive number, got {peak_flops!r}")
    if not 0 < mfu <= 1:
        raise ConfigError(f"MFU must be in (0, 1] (a fraction of the peak), got {mfu!r}")
    return flops / (peak_flops * mfu) / 3600.0
