"""DiT models: configs (pure Python) and the torch modules.

``from ditscale.models import create_model`` builds a model whose state_dict matches the
reference facebookresearch/DiT implementation for the class-conditional adaLN-Zero design.
"""

from ditscale.models.config import (  # noqa: F401
    BLOCK_DESIGNS,
    CONDITIONINGS,
    MODEL_NAMES,
    MODEL_SIZES,
    DiTConfig,
    named_config,
    resolve_config,
)


def __getattr__(name):  # lazy torch import keeps `ditscale flops` fast and torch-free
    if name in {"DiT", "create_model"}:
        from ditscale.models import dit  # lazy: torch; `ditscale flops` stays fast and torch-free

        return getattr(dit, name)
    raise AttributeError(name)
