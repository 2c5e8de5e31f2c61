"""Two fits side by side: differences of their coefficients and exponents, with bootstrap intervals.

The two bootstraps are independent (different runs, or the same runs resampled separately), so the
i-th resample of one minus the i-th of the other is a draw of the difference; its 5th and 95th
percentiles give the 90% interval (over the first min(n_a, n_b) resamples). A difference is
``resolved`` when that interval excludes 0.

Parametric fits are compared with isoflop/envelope fits through their allocation laws:
``n_opt_law`` is matched with ``params_law`` and ``d_opt_law`` with ``tokens_law``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ditscale.errors import DataError
from ditscale.laws.bootstrap import interval90
from ditscale.laws.predict import Estimate, predict

CANONICAL = {"n_opt_law": "params_law", "d_opt_law": "tokens_law"}


def _canonical(name: str) -> str:
    law, _, field = name.partition(".")
    return f"{CANONICAL.get(law, law)}.{field}" if field else name


@dataclass(frozen=True)
class Difference:
    """``difference = a - b`` of one named value; ``ci90`` and ``resolved`` need both bootstraps."""

    name: str
    a: float
    b: float
    difference: float
    ci90: list[float] | None
    resolved: bool | None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "a": self.a,
            "b": self.b,
            "difference": self.difference,
            "ci90": self.ci90,
            "resolved": self.resolved,
        }


@dataclass(frozen=True)
class Comparison:
    """Differences of every value the two fits share, and both predicted losses at ``flops`` FLOPs."""

    differences: tuple[Difference, ...]
    flops: float | None = None
    loss_a: Estimate | None = None
    loss_b: Estimate | None = None

    def __getitem__(self, name: str) -> Difference:
        return next(d for d in self.differences if d.name == name)

    def to_dict(self) -> dict:
        return {
            "differences": [d.to_dict() for d in self.differences],
            "flops": self.flops,
            "loss_a": None if self.loss_a is None else self.loss_a.to_dict(),
            "loss_b": None if self.loss_b is None else self.loss_b.to_dict(),
        }


def compare(fit_a, boot_a, fit_b, boot_b, *, flops: float | None = None, saturating: bool = False) -> Comparison:
    """Compare two fits (each with its :class:`Bootstrap` or None) value by value, and at ``flops`` FLOPs.

    Returns a :class:`Comparison`; names follow the isoflop convention (``params_law.exponent``...),
    plus E, A, B, alpha, beta when both fits are parametric. Values missing from either fit (e.g. a
    saturating law that was not fitted) are left out.
    """
    va = {_canonical(k): (k, v) for k, v in fit_a.values().items()}
    vb = {_canonical(k): (k, v) for k, v in fit_b.values().items()}
    shared = [k for k in va if k in vb and math.isfinite(va[k][1]) and math.isfinite(vb[k][1])]
    if not shared:
        raise DataError(f"fits of methods {fit_a.method!r} and {fit_b.method!r} share no values to compare")
    diffs = []
    for name in shared:
        (ka, a), (kb, b) = va[name], vb[name]
        ci = resolved = None
        if boot_a is not None and boot_b is not None:
            m = min(boot_a.n_resamples, boot_b.n_resamples)
            ci = interval90(boot_a.samples[ka][:m] - boot_b.samples[kb][:m])
            resolved = None if ci is None else bool(ci[0] > 0 or ci[1] < 0)
        diffs.append(Difference(name, float(a), float(b), float(a - b), ci, resolved))
    loss_a = loss_b = None
    if flops is not None:
        loss_a = predict(fit_a, flops, boot=boot_a, saturating=saturating).loss_opt
        loss_b = predict(fit_b, flops, boot=boot_b, saturating=saturating).loss_opt
    return Comparison(tuple(diffs), None if flops is None else float(flops), loss_a, loss_b)
