"""Degenerate fits: a loss form whose fit sits at a bound of its optimiser, or whose parameters the
data do not fix, is marked so rather than listed as a fit like the others.

The rule (:func:`form_degenerate`), per loss form of :data:`ditscale.laws.fit.LOSS_LAWS`:

- **at a bound**: a loss floor ``E`` below :data:`BOUND_RTOL` (1e-6) of the smallest fitted loss
  (the saturating law's ``E >= 0`` bound; Approach 3 fits ``log E``, whose bound is ``E -> 0``),
  or an exponent (``gamma``, ``alpha``, ``beta``) at or below 1e-6 (their bound 0: no decay);
- **a floor above the data**: ``E`` above the smallest fitted loss, a loss the runs already reached
  and the form cannot (its loss never falls below ``E``): its predictions past the sweep lie above
  what was measured inside it;
- **unresolved**: the 90% bootstrap interval of a positive parameter (``E``, the saturating law's
  ``k``, Approach 3's ``A`` and ``B``, the power law's coefficient) spans more than
  :data:`DEGENERATE_DECADES` (10) decades, ``log10(hi / lo)`` (a lower end at 0 spans infinitely many).

Why 10 decades: a coefficient trades off against its exponent, so even a well-fitted one's interval
spans about (its exponent's interval width) x log10(the scale it multiplies) decades. An exponent
interval 0.5 wide (twice the 0.25 goal of :data:`ditscale.laws.predict.INTERVAL_GOAL`) at C ~ 1e20
FLOPs moves its coefficient 10 decades; the widest interval of the committed studies is 7.6 decades
(quickstart-p2's saturating ``k``, its exponent interval 0.68 wide at C ~ 1e12). Issue 23's
Approach 3 ``A`` in [1.4e7, 4.6e24] spans 17.5: there the data do not fix the law.

Each reason is one line naming the parameter, its value or interval and the bound; an empty tuple
means the form is not degenerate. numpy-free arithmetic on plain floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

BOUND_RTOL = 1e-6  # a floor below this fraction of the smallest loss, or an exponent below it, is at its bound 0
DEGENERATE_DECADES = 10.0  # a positive parameter whose 90% interval spans more decades is not fixed by the data

# form -> (floors, other positive parameters, exponents bounded below by 0), by their names in the fit's values
FORM_PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "power": ((), ("coefficient",), ()),
    "saturating": (("E",), ("k",), ("gamma",)),
    "parametric": (("E",), ("A", "B"), ("alpha", "beta")),
}


def decades(ci90: list[float] | None) -> float | None:
    """How many decades the interval ``[lo, hi]`` of a positive parameter spans (inf when lo <= 0)."""
    if not ci90:
        return None
    lo, hi = ci90
    return math.inf if lo <= 0 else math.log10(hi / lo)


def form_degenerate(
    form: str, values: Mapping[str, float], ci90: Mapping[str, list[float] | None] | None, smallest_loss: float
) -> tuple[str, ...]:
    """Why the fit of loss ``form`` ("power", "saturating", "parametric") is degenerate (module doc),
    one line each; () when it is not. ``values``: its fitted parameters by name (E, k, gamma; E, A,
    B, alpha, beta; coefficient); ``ci90``: their 90% intervals (None without a bootstrap);
    ``smallest_loss``: the smallest loss fitted (the scale of the floor's bound)."""
    floors, positive, exponents = FORM_PARAMETERS[form]
    out = []
    for name in floors:
        if values[name] < BOUND_RTOL * smallest_loss:
            out.append(
                f"{name} = {values[name]:.2g} is at its bound 0 (below {BOUND_RTOL:g} of the smallest loss "
                f"{smallest_loss:.3g}): no loss floor was fitted"
            )
        elif values[name] > smallest_loss:
            out.append(
                f"{name} = {values[name]:.3g} lies above the smallest loss fitted, {smallest_loss:.3g}: the form "
                f"cannot reach a loss the runs already reached"
            )
    for name in exponents:
        if values[name] <= BOUND_RTOL:
            out.append(f"{name} = {values[name]:.2g} is at its bound 0")
    for name in (*floors, *positive):
        span = decades((ci90 or {}).get(name))
        if span is not None and span > DEGENERATE_DECADES:
            lo, hi = ci90[name]
            out.append(
                f"{name}'s 90% interval [{lo:.2g}, {hi:.2g}] spans {span:.1f} decades "
                f"(more than {DEGENERATE_DECADES:g}): the data do not fix it"
            )
    return tuple(out)


def degenerate_warning(name: str, reasons: tuple[str, ...]) -> str:
    """The one-line warning of a degenerate form named ``name`` (e.g. "Approach 3 L(N, D)")."""
    return f"{name} is degenerate: {'; '.join(reasons)}; its predictions are not a fit of the data"
