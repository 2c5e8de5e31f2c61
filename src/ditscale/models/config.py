"""DiT architecture configs (pure Python: no torch import, so FLOP accounting and planning run anywhere).

The 12 named configs of the DiT paper (Table 1 / Table 4) are ``DiT-{S,B,L,XL}/{2,4,8}``. A
parametric :class:`DiTConfig` covers the model ladders of scaling studies.

Units: ``input_size`` is the spatial side of the model input in latent pixels (32 for 256x256
images through the SD VAE, which downsamples by 8), ``patch_size`` in latent pixels, so the model
sees ``(input_size // patch_size) ** 2`` image tokens.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from ditscale.config import from_dict
from ditscale.errors import ConfigError

BLOCK_DESIGNS = ("adaln_zero", "adaln", "cross_attn", "in_context")
CONDITIONINGS = ("class", "text", "none")

# name -> (depth, hidden_size, num_heads); DiT paper Table 1.
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PATCH_SIZES = (2, 4, 8)
MODEL_NAMES: tuple[str, ...] = tuple(f"DiT-{s}/{p}" for s in MODEL_SIZES for p in PATCH_SIZES)

FREQUENCY_EMBEDDING_SIZE = 256  # sinusoidal timestep features fed to the timestep MLP (reference DiT)

# The embedding parameters, left out of the "non-embedding" count (the N of 6ND): the input
# embeddings and the output projection. Component name in ``ditscale.flops.param_counts`` ->
# state_dict key prefix of ``ditscale.models.dit.DiT``; both count exactly these parameters.
EMBEDDING_PARAMETERS: dict[str, str] = {
    "patch_embed": "x_embedder.",
    "pos_embed": "pos_embed",
    "t_embedder": "t_embedder.",
    "y_embedder": "y_embedder.",
    "context_embedder": "context_embedder.",
    "final_linear": "final_layer.linear.",
}


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of one DiT.

    Attributes:
        input_size: spatial side of the (latent) input, in pixels of that input (latent 32 = 256 px image).
        patch_size: side of a square patch; tokens = (input_size // patch_size) ** 2.
        in_channels: channels of the input (4 for SD-VAE latents, 3 for pixel-space models).
        hidden_size: transformer width d.
        depth: number of DiT blocks.
        num_heads: attention heads (hidden_size must be divisible by it).
        mlp_ratio: MLP hidden width / hidden_size.
        num_classes: classes for class conditioning; the null (CFG) class is index ``num_classes``.
        class_dropout_prob: probability a label is replaced by the null class during training (CFG).
        learn_sigma: output 2 * in_channels channels (mean and learned-range variance), as DiT does.
        block: block design: "adaln_zero" (default), "adaln", "cross_attn", "in_context".
        conditioning: "class", "text" (a sequence of text-token embeddings) or "none".
        context_dim: width of the text-token embeddings fed to the model (text conditioning).
        context_len: maximum number of text tokens (used for FLOP accounting and in-context tokens).
        gradient_checkpointing: recompute block activations in backward to save memory.
        out_conv: hidden channels of a residual convolutional head on the unpatchified output
            (U-ViT, Bao et al. 2023: a 3x3 conv after the linear decoder, so neighbouring patches can
            agree at their borders): ``x + conv3x3(gelu(conv3x3(x)))``, the last conv zeroed so the
            model starts as DiT does. 0 (default): none, DiT's linear decoder alone.
    """

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    block: str = "adaln_zero"
    conditioning: str = "class"
    context_dim: int = 0
    context_len: int = 0
    gradient_checkpointing: bool = False
    out_conv: int = 0

    def __post_init__(self) -> None:
        for name in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"DiTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.input_size % self.patch_size:
            raise ConfigError(
                f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}; "
                "choose a patch size that divides the (latent) input size"
            )
        if self.hidden_size % 4:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by 4, which the 2-D sin-cos position "
                "embedding needs (a quarter per sin/cos of rows/columns); choose a multiple of 4"
            )
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "choose a width that is a multiple of the head count"
            )
        if self.block not in BLOCK_DESIGNS:
            raise ConfigError(f"unknown block design {self.block!r}; choose one of {', '.join(BLOCK_DESIGNS)}")
        if self.conditioning not in CONDITIONINGS:
            raise ConfigError(f"unknown conditioning {self.conditioning!r}; choose one of {', '.join(CONDITIONINGS)}")
        if self.conditioning == "class" and self.num_classes <= 0:
            raise ConfigError("class conditioning needs num_classes > 0; set num_classes or conditioning='none'")
        if self.conditioning == "text" and (self.context_dim <= 0 or self.context_len <= 0):
            raise ConfigError(
                "text conditioning needs context_dim > 0 and context_len > 0 (text-token width and count)"
            )
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ConfigError(f"class_dropout_prob must be in [0, 1), got {self.class_dropout_prob}")
        if self.out_conv < 0:
            raise ConfigError(
                f"out_conv must be >= 0 (hidden channels of the output conv head; 0 = none), got {self.out_conv}"
            )
        if self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio must be positive, got {self.mlp_ratio}")

    # Derived sizes -------------------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        """Tokens per side of the image-token grid."""
        return self.input_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Image tokens per sample, (input_size / patch_size) ** 2."""
        return self.grid_size**2

    @property
    def out_channels(self) -> int:
        """Output channels: 2 * in_channels with learned variance, else in_channels."""
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the MLP (int(hidden_size * mlp_ratio), as the reference)."""
        return int(self.hidden_size * self.mlp_ratio)

    def replace(self, **changes: Any) -> "DiTConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiTConfig":
        """Strict construction: unknown keys raise :class:`ConfigError` naming them."""
        return from_dict(cls, data, where="model config")


def named_config(name: str, **overrides: Any) -> DiTConfig:
    """The paper config ``name`` (e.g. "DiT-XL/2"), with optional field overrides.

    Also accepts the reference's dashed form "DiT-XL-2". Unknown names raise a one-line
    :class:`ConfigError` listing the valid ones.
    """
    canon = name.strip()
    if canon.count("-") == 2 and "/" not in canon:  # "DiT-XL-2" -> "DiT-XL/2"
        head, _, patch = canon.rpartition("-")
        canon = f"{head}/{patch}"
    if canon not in MODEL_NAMES:
        close = difflib.get_close_matches(canon, MODEL_NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint}; choose one of {', '.join(MODEL_NAMES)}")
    size, patch = canon[len("DiT-") :].split("/")
    depth, hidden, heads = MODEL_SIZES[size]
    base = dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=int(patch))
    unknown = [k for k in overrides if k not in {f.name for f in dataclasses.fields(DiTConfig)}]
    if unknown:
        raise ConfigError(
            f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(f.name for f in dataclasses.fields(DiTConfig))}"
        )
    base.update(overrides)
    return DiTConfig(**base)


def resolve_config(model: "str | DiTConfig | dict[str, Any]", **overrides: Any) -> DiTConfig:
    """A :class:`DiTConfig` from a paper name, a config, or a dict of config fields."""
    if isinstance(model, DiTConfig):
        return model.replace(**overrides) if overrides else model
    if isinstance(model, dict):
        return DiTConfig.from_dict({**model, **overrides})
    return named_config(model, **overrides)
