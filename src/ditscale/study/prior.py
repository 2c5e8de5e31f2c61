"""A prior for a spec whose prior misses its family: grid centres inside the ladder (pure Python).

The default prior is Liang et al.'s ``N_opt = 0.0009 C^0.5681``, measured on 256 px latent DiTs;
on small pixel-space models and CPU budgets it puts every grid below (or above) the family's
ladder. :func:`suggest_prior` keeps the spec's exponent and moves the coefficient so that the
optimum predicted at the middle budget (the geometric mean of the smallest and largest budget) is
the geometric middle of the rungs that budget can train (each at least ``min_steps`` steps at the
spec's batch: the data's image shape sets their FLOPs per image). The budgets on either side then
centre below and above it, by ``(C / C_mid) ** exponent``.
"""

from __future__ import annotations

import math

from ditscale.study.plan import ladder_sizes, planned_run
from ditscale.study.spec import PriorConfig, StudySpec

SIGNIFICANT = 3  # digits of the suggested coefficient (0.5% at most off the ladder's middle)


def prior_misses_ladder(spec: StudySpec) -> bool:
    """True when the spec's prior puts the optimum of every budget outside the family's ladder
    (below its smallest or above its largest non-embedding N), so no grid brackets it."""
    sizes = [s.non_embedding for s in ladder_sizes(spec)]
    return all(not sizes[0] < spec.prior.n_opt(c) < sizes[-1] for c in spec.budgets)


def suggest_prior(spec: StudySpec) -> PriorConfig:
    """A prior with the spec's exponent whose optimum at the middle budget is the geometric middle of
    the rungs that budget trains for at least ``min_steps`` steps (all rungs when none does)."""
    middle = math.sqrt(spec.budgets[0] * spec.budgets[-1])
    batch = spec.hparams.batch_for(middle, spec.budgets[0])
    sizes = ladder_sizes(spec)
    usable = [
        s.non_embedding
        for s in sizes
        if planned_run(spec, s, middle, batch, spec.seed, 1.0, "prior").steps >= spec.min_steps
    ] or [s.non_embedding for s in sizes]
    centre = math.sqrt(usable[0] * usable[-1])
    coefficient = float(f"{centre / middle**spec.prior.exponent:.{SIGNIFICANT}g}")
    return PriorConfig(coefficient=coefficient, exponent=spec.prior.exponent)


def prior_line(prior: PriorConfig) -> str:
    """The spec line to paste: ``prior: {coefficient: 0.0123, exponent: 0.5681}``."""
    return f"prior: {{coefficient: {prior.coefficient:.{SIGNIFICANT}g}, exponent: {prior.exponent:g}}}"
