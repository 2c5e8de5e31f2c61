"""The three compute laws shared by Approaches 1 and 2: N_opt(C), D_opt(C), L_opt(C), C in FLOPs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ditscale.laws.powerlaw import PowerLaw, SaturatingLaw

LAW_FIELDS = {
    "params_law": ("coefficient", "exponent"),
    "tokens_law": ("coefficient", "exponent"),
    "loss_law": ("coefficient", "exponent"),
    "loss_law_saturating": ("E", "k", "gamma"),
}


@dataclass(frozen=True)
class ComputeLaws:
    """``N_opt = a C^b`` (params), ``D_opt = c C^d`` (tokens), ``L_opt = e C^f``, and ``L = E + k C^-gamma``."""

    params_law: PowerLaw
    tokens_law: PowerLaw
    loss_law: PowerLaw
    loss_law_saturating: SaturatingLaw | None

    def values(self) -> dict[str, float]:
        """Every coefficient and exponent by name, e.g. ``"params_law.exponent"`` (NaN if a law is missing)."""
        out = {}
        for law, fields in LAW_FIELDS.items():
            obj = getattr(self, law)
            for f in fields:
                out[f"{law}.{f}"] = float("nan") if obj is None else float(getattr(obj, f))
        return out

    @staticmethod
    def optimum(values, flops, saturating: bool = False):
        """Compute-optimal (N params, D tokens, loss) at ``flops`` FLOPs from named values (arrays broadcast).

        The loss is the pure power law ``L_opt = e C^f`` unless ``saturating`` (``E + k C^-gamma``).
        """
        c = np.asarray(flops, dtype=np.float64)
        n = values["params_law.coefficient"] * c ** values["params_law.exponent"]
        d = values["tokens_law.coefficient"] * c ** values["tokens_law.exponent"]
        if saturating:
            loss = (
                values["loss_law_saturating.E"]
                + values["loss_law_saturating.k"] * c ** -values["loss_law_saturating.gamma"]
            )
        else:
            loss = values["loss_law.coefficient"] * c ** values["loss_law.exponent"]
        return n, d, loss

    def laws_dict(self, boot=None) -> dict:
        """The laws as JSON-ready dicts; with a bootstrap, ``ci90`` and ``se`` for every field."""
        out = {}
        for law, fields in LAW_FIELDS.items():
            obj = getattr(self, law)
            if obj is None:
                out[law] = None
                continue
            entry = {f: float(getattr(obj, f)) for f in fields}
            entry["ci90"] = None if boot is None else {f: boot.ci90(f"{law}.{f}") for f in fields}
            entry["se"] = None if boot is None else {f: boot.se(f"{law}.{f}") for f in fields}
            out[law] = entry
        return out

    def fit_dict(self, boot, points_key: str, points) -> dict:
        """JSON-ready summary of an Approach 1 or 2 fit: method, laws, its per-budget ``points`` under
        ``points_key``, n_runs, options and the bootstrap's info (subclasses carry those fields)."""
        return {
            "method": self.method,
            **self.laws_dict(boot),
            points_key: [p.to_dict() for p in points],
            "n_runs": self.n_runs,
            "options": dict(self.options),
            "bootstrap": None if boot is None else boot.info(),
        }
