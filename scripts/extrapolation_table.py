"""The error-vs-distance table of a study's backtests at every distance, rendered from its laws.json.

laws.json's ``extrapolation`` holds one row per refit (the K largest budgets left out, K = 1, 2, ...
while at least 5 budgets stay fitted), held-out budget and loss form. This script groups the rows by
``factor`` (held-out C / largest fitted C; factors within 10% share a row,
:func:`ditscale.study.analyze.error_by_factor`) and prints, per form, the median and range of the L*
error, how many actual L* fell inside their 90% interval, and the totals within 2%; the law of
record's rows (``extrapolation_of_record``) get their own column, with N_opt's interval hits, and the
last column frames them: what a right law of record would score there, its L* scattered as the
study's scatter about it (:func:`ditscale.laws.extrapolation.noise_floor`)::

    python scripts/extrapolation_table.py runs/quickstart/laws.json
"""

from __future__ import annotations

import argparse
import statistics

from ditscale.laws.fit import LOSS_LAW_NAMES, LOSS_LAWS
from ditscale.laws.results import ExtrapolationRow, FactorError, LawsSummary
from ditscale.laws.extrapolation import (
    FLOOR_GOAL_FACTOR,
    FloorBand,
    NoiseFloor,
    at_distance,
    error_by_factor,
    study_noise_floor,
)


def cell(e: FactorError | None) -> str:
    """``median +0.1% [-6.6, +2.1], 3/6 in 90%`` (one row: its error alone)."""
    if e is None:
        return "-"
    hits = f"{e.within_ci90}/{e.rows} in 90%"
    if e.rows == 1:
        return f"{100 * e.median:+.1f}%, {hits}"
    return f"median {100 * e.median:+.1f}% [{100 * e.low:+.1f}, {100 * e.high:+.1f}], {hits}"


def record_cell(rows: list[ExtrapolationRow]) -> str:
    """The law of record's rows at one distance: their forms, the median and range of the L* error,
    its 90%-interval and 2% hits, and the N_opt interval hits."""
    if not rows:
        return "-"
    forms = "/".join(dict.fromkeys(r.form for r in rows))
    errors = [r.relative_error for r in rows]
    spread = "" if len(rows) == 1 else f" [{100 * min(errors):+.1f}, {100 * max(errors):+.1f}]"
    hits = sum(r.within_ci90 is True for r in rows)
    within = sum(abs(e) <= 0.02 for e in errors)
    n_hits = sum(r.n_opt_within_ci90 is True for r in rows)
    n_known = sum(r.n_opt_within_ci90 is not None for r in rows)
    return (
        f"{forms} {100 * statistics.median(errors):+.1f}%{spread}, {hits}/{len(rows)} in 90%, "
        f"{within}/{len(rows)} within 2%; N_opt {n_hits}/{n_known} in 90%"
    )


def floor_cell(band: FloorBand | None) -> str:
    """``95% within 2%, 90% of errors in [-1.6, +1.7]`` (a right form's expected score at one distance)."""
    if band is None:
        return "-"
    return f"{100 * band.within_2pct:.0f}% within 2%, 90% in [{100 * band.low:+.1f}, {100 * band.high:+.1f}]"


def floor_sentence(floor: NoiseFloor | None, record: tuple[ExtrapolationRow, ...]) -> str:
    """The frame of the rows of record: how many a right form would hold within 2%, and how often all
    of them up to 4x; "" without a floor."""
    if floor is None:
        return ""
    expected = sum(b.within_2pct * b.rows for b in floor.bands)
    measured = sum(abs(r.relative_error) <= 0.02 for r in record)
    return (
        f"\n\nNoise alone: a right {LOSS_LAW_NAMES[floor.form]} (the law of record), whose L* scatter about "
        f"it as this study's do (sd {100 * floor.sigma:.2f}% of the loss over {floor.budgets} budgets; a form "
        f"that bends away from its L* counts that misfit as scatter), "
        f"holds {expected:.1f} of {sum(b.rows for b in floor.bands)} rows within 2% on average "
        f"(measured: {measured}), and every row up to {FLOOR_GOAL_FACTOR:.0f}x within 2% in "
        f"{100 * floor.all_within:.0f}% of {floor.draws} draws (`noise_floor`, docs/laws.md)."
    )


def table(laws: LawsSummary) -> str:
    """The markdown table and its totals line (a note when the file has no ``extrapolation``)."""
    rows = laws.extrapolation or ()
    if not rows:
        return "no backtests at every distance in this laws.json (older than the key, or fewer than 6 budgets)"
    forms = [f for f in LOSS_LAWS if any(r.form == f for r in rows)]
    record = laws.extrapolation_of_record or ()
    floor = study_noise_floor(laws)
    lines = [
        "| extrapolation (held-out C / largest fitted C) | "
        + " | ".join(f"{LOSS_LAW_NAMES[f]}, L* error" for f in forms)
        + " | law of record | noise alone: a right law of record |",
        "|---" * (len(forms) + 3) + "|",
    ]
    for factor, errors in error_by_factor(rows).items():
        by_form = {e.form: e for e in errors}
        at = at_distance(factor, record)
        n = max(e.rows for e in errors)
        cells = [cell(by_form.get(f)) for f in forms]
        band = None if floor is None else floor.band_at(factor)
        lines.append(
            f"| {factor:.3g}x ({n} prediction{'s' * (n != 1)}) | "
            + " | ".join(cells)
            + f" | {record_cell(at)} | {floor_cell(band)} |"
        )
    totals = []
    for f in forms:
        mine = [r for r in rows if r.form == f]
        within = sum(abs(r.relative_error) <= 0.02 for r in mine)
        hits = sum(r.within_ci90 is True for r in mine)
        totals.append(f"{LOSS_LAW_NAMES[f]} {within} of {len(mine)} within 2% ({hits} inside their 90% interval)")
    return "\n".join(lines) + "\n\nWithin 2%: " + "; ".join(totals) + "." + floor_sentence(floor, record)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("laws", help="a study's laws.json")
    args = p.parse_args(argv)
    print(table(LawsSummary.read(args.laws)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
