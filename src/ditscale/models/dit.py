"""DiT: the diffusion transformer of Peebles & Xie (2022), with the four block designs of its section 3.2.

Designs (``DiTConfig.block``):

- ``adaln_zero`` (default, the reference ``DiTBlock``): adaLN shift/scale plus a gate before each
  residual, regressed from ``c = t_emb + cond_emb``; modulation and output layers start at zero, so
  every block starts as the identity and the model outputs zeros.
- ``adaln``: the same shift/scale modulation without gates, not zero-initialised.
- ``cross_attn``: plain pre-LN blocks (affine LayerNorm) with a cross-attention layer after
  self-attention; the image tokens attend to the condition tokens ``[t_emb, y_emb]`` (or
  ``[t_emb, text tokens...]``).
- ``in_context``: the condition tokens are prepended to the image tokens, go through plain pre-LN
  blocks, and are removed before the final layer.

Any design may end in a residual 3x3 conv head on the unpatchified output (``DiTConfig.out_conv``,
U-ViT's extra conv; off by default, and zero-initialised so the model still starts at output 0).

For the class-conditional adaLN-Zero model the state_dict keys, shapes and initialisation equal
facebookresearch/DiT ``models.py``, so official checkpoints (``DiT-XL-2-256x256.pt``) load with
``strict=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ditscale.errors import ConfigError, DataError
from ditscale.models.config import EMBEDDING_PARAMETERS, FREQUENCY_EMBEDDING_SIZE, DiTConfig, resolve_config
from ditscale.models.guidance import apply_guidance, guidance_drop_ids
from ditscale.models.kernels import attention, patch_embed

# state_dict key prefixes left out of the "non-embedding" count (the N of 6ND), as ditscale.flops.
EMBEDDING_PREFIXES = tuple(EMBEDDING_PARAMETERS.values())


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; shift/scale are (N, 1, D), x is (N, T, D)."""
    return x * (1 + scale) + shift


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps ``t`` (N,) -> (N, dim).

    ``[cos(t * f_i), sin(t * f_i)]`` with ``f_i = max_period ** (-i / (dim // 2))``, cosines first
    (GLIDE / reference DiT); a zero column is appended when ``dim`` is odd.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def sincos_pos_embed_2d(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding of a ``grid_size x grid_size`` token grid -> (grid_size**2, dim).

    Token ``k = row * grid_size + col`` (raster order of the patch grid). The first ``dim / 2``
    channels encode ``col`` and the last ``dim / 2`` encode ``row``, each as
    ``[sin(pos * w_i), cos(pos * w_i)]`` with ``w_i = 10000 ** (-i / (dim / 4))`` (MAE / reference
    DiT, computed in float64 and returned as float32).
    """
    if dim % 4:
        raise ConfigError(f"hidden_size {dim} must be divisible by 4 for the 2-D sin-cos position embedding")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def axis(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([axis(cols), axis(rows)], dim=1).float()


# ------------------------------------------------------------------------------------------------
# Embedders
# ------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, T, D) image tokens via a Conv2d with kernel = stride = patch size (on CPU
    computed as one matmul over the patches: ``kernels.patch_embed``)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patch_embed(x, self.proj.weight, self.proj.bias, self.patch_size)


class TimestepEmbedder(nn.Module):
    """Timesteps (N,) -> (N, D): 256 sinusoidal features, then Linear-SiLU-Linear."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = FREQUENCY_EMBEDDING_SIZE):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    """Class labels (N,) -> (N, D), with label dropout to the null class ``num_classes`` for CFG.

    The table has ``num_classes + 1`` rows when ``dropout_prob > 0`` (the last row is the null
    class). In training mode each label is dropped with probability ``dropout_prob``;
    ``force_drop_ids`` (N,) drops exactly the rows where it equals 1, in any mode.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Labels with the dropped ones replaced by the null class index ``num_classes``."""
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids.to(labels.device) == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


# ------------------------------------------------------------------------------------------------
# Layers and blocks
# ------------------------------------------------------------------------------------------------


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(N, L, D) -> (N, heads, L, D / heads)."""
    n, length, d = x.shape
    return x.reshape(n, length, num_heads, d // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, heads, L, Dh) -> (N, L, heads * Dh)."""
    n, h, length, dh = x.shape
    return x.transpose(1, 2).reshape(n, length, h * dh)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (bias) and output projection (timm layout)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, T, D); mask bool (N, 1, 1, T), True = attend to that key."""
        q, k, v = (_heads(part, self.num_heads) for part in self.qkv(x).chunk(3, dim=-1))
        return self.proj(_merge_heads(attention(q, k, v, mask)))


class CrossAttention(nn.Module):
    """Multi-head attention of the image tokens (queries) over condition tokens (keys/values)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, T, D), cond (N, L, D); mask bool (N, 1, 1, L), True = attend."""
        q = _heads(self.q(x), self.num_heads)
        k, v = (_heads(part, self.num_heads) for part in self.kv(cond).chunk(2, dim=-1))
        return self.proj(_merge_heads(attention(q, k, v, mask)))


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2 (timm Mlp layout, no dropout)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _norm(dim: int, affine: bool) -> nn.LayerNorm:
    return nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)


class DiTBlock(nn.Module):
    """adaLN block: LayerNorms without affine, modulated by a vector c (N, D).

    ``gated=True`` is adaLN-Zero (the reference block): the modulation regresses 6 chunks
    ``shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp``. ``gated=False`` is plain
    adaLN: 4 chunks ``shift_msa, scale_msa, shift_mlp, scale_mlp`` and ungated residuals.
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, gated: bool = True):
        super().__init__()
        self.gated = gated
        self.norm1 = _norm(dim, affine=False)
        self.attn = Attention(dim, num_heads)
        self.norm2 = _norm(dim, affine=False)
        self.mlp = Mlp(dim, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, (6 if gated else 4) * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mod = self.adaLN_modulation(c).unsqueeze(1)
        if self.gated:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        else:
            shift_msa, scale_msa, shift_mlp, scale_mlp = mod.chunk(4, dim=-1)
            gate_msa = gate_mlp = 1.0
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class CrossAttnBlock(nn.Module):
    """Pre-LN block with cross-attention to the condition tokens after self-attention (affine LayerNorms)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = _norm(dim, affine=True)
        self.attn = Attention(dim, num_heads)
        self.norm_cross = _norm(dim, affine=True)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = _norm(dim, affine=True)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.cross_attn(self.norm_cross(x), cond, cond_mask)
        return x + self.mlp(self.norm2(x))


class TransformerBlock(nn.Module):
    """Plain pre-LN ViT block (affine LayerNorms), used by the in-context design."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = _norm(dim, affine=True)
        self.attn = Attention(dim, num_heads)
        self.norm2 = _norm(dim, affine=True)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    """LayerNorm (adaptive for the adaLN designs, affine otherwise), then a linear decoder per token."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, adaptive: bool):
        super().__init__()
        self.norm_final = _norm(dim, affine=not adaptive)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim)) if adaptive else None

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.norm_final(x)
        if self.adaLN_modulation is not None:
            shift, scale = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)
            x = modulate(x, shift, scale)
        return self.linear(x)


class OutConv(nn.Module):
    """Residual 3x3 conv head on the unpatchified output (U-ViT's conv after the linear decoder):
    each pixel sees its neighbours across patch borders, which the per-token linear cannot. First
    conv xavier-uniform, last conv zeroed: the residual starts as the identity."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)
        nn.init.xavier_uniform_(self.conv1.weight)
        nn.init.zeros_(self.conv1.bias)
        nn.init.zeros_(self.conv2.weight)  # the residual starts as the identity: DiT's output 0 at init
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(x)))  # (N, C, H, W)


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


def _key_mask(keep: torch.Tensor | None) -> torch.Tensor | None:
    """(N, L) bool keep-mask -> SDPA mask (N, 1, 1, L), or None when every key is kept."""
    if keep is None or bool(keep.all()):
        return None
    return keep[:, None, None, :]


def _pooled_condition(c: torch.Tensor, tokens: torch.Tensor | None, keep: torch.Tensor | None) -> torch.Tensor:
    """``c`` (N, D) plus the condition: the class embedding, or the masked mean of the text tokens."""
    if keep is not None:
        m = keep.to(tokens.dtype)[..., None]
        return c + (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
    if tokens is not None:
        return c + tokens[:, 0]
    return c


class DiT(nn.Module):
    """Diffusion transformer built from a :class:`DiTConfig`; see the module docstring for the designs."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        cfg = config
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = (
            LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob) if cfg.conditioning == "class" else None
        )
        self.context_embedder = nn.Linear(cfg.context_dim, d) if cfg.conditioning == "text" else None
        # Fixed sin-cos embedding, a frozen Parameter (not a buffer) so the key is in the state_dict as in the reference.
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches, d), requires_grad=False)
        if cfg.block in ("adaln_zero", "adaln"):
            blocks = [
                DiTBlock(d, cfg.num_heads, cfg.mlp_hidden, gated=cfg.block == "adaln_zero") for _ in range(cfg.depth)
            ]
        elif cfg.block == "cross_attn":
            blocks = [CrossAttnBlock(d, cfg.num_heads, cfg.mlp_hidden) for _ in range(cfg.depth)]
        else:
            blocks = [TransformerBlock(d, cfg.num_heads, cfg.mlp_hidden) for _ in range(cfg.depth)]
        self.blocks = nn.ModuleList(blocks)
        self.final_layer = FinalLayer(
            d, cfg.patch_size, cfg.out_channels, adaptive=cfg.block in ("adaln_zero", "adaln")
        )
        self.initialize_weights()
        # Built after DiT's init, so every other weight draws the same numbers as without the head.
        self.out_conv = OutConv(cfg.out_channels, cfg.out_conv) if cfg.out_conv else None

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    def initialize_weights(self) -> None:
        """Reference init: xavier-uniform linears with zero bias; patch embed xavier on its flattened
        (D, C*p*p) view; timestep MLP and label table normal(std=0.02); adaLN-Zero modulation and the
        final layer zeroed. The final linear is zeroed in every design (the model starts at output 0);
        the ``adaln`` design keeps its xavier-initialised modulation."""

        def basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic_init)
        grid = self.config.grid_size
        self.pos_embed.data.copy_(sincos_pos_embed_2d(self.config.hidden_size, grid).unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.config.block == "adaln_zero":
            for layer in [b.adaLN_modulation[-1] for b in self.blocks] + [self.final_layer.adaLN_modulation[-1]]:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (count of scalars), including the frozen ``pos_embed`` as the reference does.

        ``non_embedding=True`` leaves out ``pos_embed``, the embedders (``x_embedder``,
        ``t_embedder``, ``y_embedder``, ``context_embedder``) and the output projection
        ``final_layer.linear``: the N of ``6 N D`` (as ``ditscale.flops.param_counts``).
        """
        return sum(
            p.numel()
            for name, p in self.named_parameters()
            if not (non_embedding and name.startswith(EMBEDDING_PREFIXES))
        )

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p*p*C) token outputs -> (N, C, H, W) images (patch pixels in (p, p, C) order)."""
        c, p, g = self.config.out_channels, self.config.patch_size, self.config.grid_size
        x = x.reshape(x.shape[0], g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, g * p, g * p)

    # --------------------------------------------------------------------------------------------
    def _check_inputs(self, x, y, context, context_mask) -> None:
        cfg = self.config
        want = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise DataError(
                f"model input has shape {tuple(x.shape)} but this model takes (N, {want[0]}, {want[1]}, {want[2]}); "
                "check the image size / latent channels (--image-size) match the model"
            )
        if cfg.conditioning == "class" and y is None:
            raise DataError("this model is class-conditional: pass class labels y (N,) to forward")
        if cfg.conditioning == "text":
            if context is None:
                raise DataError("this model is text-conditional: pass context (N, L, context_dim) to forward")
            if context.dim() != 3 or context.shape[-1] != cfg.context_dim or context.shape[1] > cfg.context_len:
                raise DataError(
                    f"context has shape {tuple(context.shape)} but this model takes (N, L<={cfg.context_len}, "
                    f"{cfg.context_dim}); use the text encoder and max length the model was built for"
                )
            if context_mask is not None and tuple(context_mask.shape) != tuple(context.shape[:2]):
                raise DataError(
                    f"context_mask has shape {tuple(context_mask.shape)}, expected {tuple(context.shape[:2])}"
                )
        elif context is not None:
            raise DataError(f"context was passed but this model has conditioning={cfg.conditioning!r}; drop it")

    def _embed_context(self, context, context_mask, force_drop_ids):
        """Projected text tokens (N, L, D) and their keep-mask (N, L), with CFG dropout applied.

        A dropped sample keeps no text token (all-masked context): its null condition is "no text".
        """
        tokens = self.context_embedder(context)
        n, length = context.shape[:2]
        keep = torch.ones(n, length, dtype=torch.bool, device=context.device)
        if context_mask is not None:
            keep = keep & context_mask.to(device=context.device, dtype=torch.bool)
        if force_drop_ids is not None:
            keep = keep & (force_drop_ids.to(context.device) != 1)[:, None]
        elif self.training and self.config.class_dropout_prob > 0:
            keep = keep & (torch.rand(n, device=context.device) >= self.config.class_dropout_prob)[:, None]
        return tokens, keep

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the diffusion output for a batch.

        Args:
            x: (N, in_channels, input_size, input_size) noisy inputs (latents).
            t: (N,) timesteps, float or long, in diffusion-step units [0, 1000).
            y: (N,) long class labels (class conditioning); ``num_classes`` is the null class.
            context: (N, L, context_dim) text-token embeddings (text conditioning), L <= context_len.
            context_mask: (N, L) bool, True = real token (default: all True).
            force_drop_ids: (N,) with 1 where the condition is replaced by the null condition (CFG).
        Returns:
            (N, out_channels, input_size, input_size).
        """
        self._check_inputs(x, y, context, context_mask)
        x = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        c = self.t_embedder(t)  # (N, D)
        tokens, keep = self._condition(y, context, context_mask, force_drop_ids)
        if self.config.block in ("adaln_zero", "adaln"):  # the condition joins c, which modulates every block
            c = _pooled_condition(c, tokens, keep)
            args, num_cond = (c,), 0
        else:
            x, args, num_cond = self._token_inputs(x, c, tokens, keep)
        use_ckpt = self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, *args, use_reentrant=False) if use_ckpt else block(x, *args)
        x = self.final_layer(x[:, num_cond:], c)  # (N, T, p*p*out_channels)
        x = self.unpatchify(x)  # (N, out_channels, H, W)
        return x if self.out_conv is None else self.out_conv(x)  # (N, out_channels, H, W)

    def _condition(self, y, context, context_mask, force_drop_ids):
        """Condition tokens (N, L, D) beside the timestep and their keep-mask (N, L) (None: all kept;
        both None for an unconditional model), with CFG dropout / the null condition applied."""
        if self.config.conditioning == "class":
            return self.y_embedder(y, self.training, force_drop_ids)[:, None], None
        if self.config.conditioning == "text":
            return self._embed_context(context, context_mask, force_drop_ids)
        return None, None

    def _token_inputs(self, x, c, tokens, keep):
        """Block inputs of the token designs: ``(x, args, num_cond)``.

        Cross-attention attends to ``[t, condition tokens]``; in-context prepends them to ``x``
        (``num_cond`` tokens, removed before the final layer).
        """
        cond, cond_keep = c[:, None], None
        if tokens is not None:
            cond = torch.cat([cond, tokens], dim=1)
            if keep is not None:
                cond_keep = torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1)
        if self.config.block == "cross_attn":
            return x, (cond, _key_mask(cond_keep)), 0
        if cond_keep is not None:
            cond_keep = torch.cat([cond_keep, cond_keep.new_ones(x.shape[0], x.shape[1])], dim=1)
        return torch.cat([cond, x], dim=1), (_key_mask(cond_keep),), cond.shape[1]

    def forward_with_cfg(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None,
        cfg_scale: float,
        guided_channels: int = 3,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Classifier-free guidance in one batched pass, as the reference ``forward_with_cfg``.

        The first half of ``x`` is duplicated; the model runs on it with the given ``y`` (whose second
        half holds the null class ``num_classes``). For text conditioning the second half's context
        is dropped (all-masked) here, so pass the same context twice. The first ``guided_channels``
        output channels become ``uncond + cfg_scale * (cond - uncond)`` in both halves; the other
        channels are returned unguided (conditional in the first half, unconditional in the second).
        The reference guides 3 channels (of the 4 eps channels of SD latents).
        """
        if self.config.conditioning == "none":
            raise ConfigError(
                "classifier-free guidance needs a conditional model (conditioning='none'); sample with cfg_scale=1"
            )
        half = x[: len(x) // 2]
        combined = torch.cat([half, half], dim=0)
        drop = guidance_drop_ids(len(half)) if self.config.conditioning == "text" else None
        out = self.forward(combined, t, y, context=context, context_mask=context_mask, force_drop_ids=drop)
        return apply_guidance(out, cfg_scale, guided_channels)


def create_model(name_or_config: "str | DiTConfig | dict", **overrides) -> DiT:
    """Build a randomly initialised :class:`DiT` from a paper name ("DiT-XL/2"), a config or a dict.

    ``overrides`` set config fields, e.g. ``create_model("DiT-XL/2", input_size=32, num_classes=1000)``.
    """
    return DiT(resolve_config(name_or_config, **overrides))
