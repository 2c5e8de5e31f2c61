"""The README's table of quickstart results, rendered from a finished study's laws.json.

The numbers the README and the docs quote are never typed by hand: this script writes, for the study
named by ``--study`` (``quickstart``, the default, or ``quickstart-t2i``), the summary table between
the markers ``<!-- {study}-table -->`` and ``<!-- /{study}-table -->``, the details (fitted laws,
noise, checks, the prediction) in ``<!-- {study}-details -->``, the backtests at every distance
(``scripts/extrapolation_table.py``) in ``<!-- {study}-extrapolation -->``, the top budget's sample
quality against its chance levels and floors in ``<!-- {study}-quality -->`` and its quality law in
``<!-- {study}-quality-law -->`` (docs/quality.md) and,
when the study was verified (``verify*.json`` beside laws.json or in its ``verify/`` folder, each
with its ``predict*.json``, ``study predict --flops C --json`` at the same C, for every form's
prediction), the verifications in ``<!-- {study}-verify -->``; ``tests/test_docs_numbers.py`` checks
that the files' blocks equal what it renders from the committed studies (``tests/data/studies/``)::

    python scripts/quickstart_table.py runs/quickstart/laws.json              # print the blocks
    python scripts/quickstart_table.py runs/quickstart/laws.json --write README.md docs/studies.md docs/quality.md
    python scripts/quickstart_table.py runs/quickstart-t2i/laws.json --study quickstart-t2i --write README.md docs/studies.md docs/quality.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
from pathlib import Path

from ditscale.laws.extrapolation import floor_at, loss_law_points
from ditscale.laws.results import LawsSummary
from ditscale.study.verified import PredictAnswer, read_verifications


# -- formatting -----------------------------------------------------------------------------------
def g(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, as 1.75e+05 -> 1.75e5."""
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{x:.{digits}g}")


def est(value: float, ci, digits: int = 3, bold: bool = True) -> str:
    """``**v** [lo, hi]`` (the interval omitted when there is none)."""
    text = f"**{value:.{digits}f}**" if bold else f"{value:.{digits}f}"
    return text if not ci else f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s"


def inside(value: float, ci) -> str:
    return "inside" if ci and ci[0] <= value <= ci[1] else "outside"


# -- rows -----------------------------------------------------------------------------------------
def law_rows(laws: LawsSummary) -> list[tuple[str, str, str]]:
    """Span and the three isoFLOP laws, Approach 3's beside them."""
    paper, par = laws.paper, laws.parametric
    budgets = [b.flops for b in laws.budgets]
    n, d, loss = laws.params_law, laws.tokens_law, laws.loss_law
    n3, d3 = (par.n_opt_law, par.d_opt_law) if par else (None, None)
    rows = [
        (
            "compute span",
            f"{max(budgets) / min(budgets):.0f}x ({len(budgets)} budgets {g(min(budgets))}-"
            f"{g(max(budgets))} FLOPs; the largest held out for the backtest)",
            "~60x (1e17-6e18)",
        ),
        (
            "N_opt = a C^b, isoFLOP parabolas (Approach 2)",
            f"b = {est(n.exponent, n.interval('exponent'))}",
            f"{paper['params_law'].exponent}",
        ),
    ]
    if n3:
        rows.append(
            (
                "N_opt, Approach 3 (L = E + A/N^alpha + B/D^beta)",
                f"b = {est(n3.exponent, n3.interval('exponent'))}",
                "-",
            )
        )
    d_text = f"d = {est(d.exponent, d.interval('exponent'))}"
    if d3:
        d_text += f" / {est(d3.exponent, d3.interval('exponent'))}"
    rows += [
        ("D_opt = c C^d (tokens), Approach 2 / 3", d_text, f"{paper['tokens_law'].exponent}"),
        (
            "L_opt = e C^f",
            f"f = {est(loss.exponent, loss.interval('exponent'), bold=False)}",
            f"{paper['loss_law'].exponent}",
        ),
    ]
    return rows


FORM_NAMES = {"power": "isoFLOP power law", "saturating": "saturating law", "parametric": "Approach 3"}


def backtest_rows(laws: LawsSummary) -> list[tuple[str, str, str]]:
    """The held-out budget: L* by the study's loss law (every other form beside it), and N_opt by
    Approaches 2 and 3."""
    (row,) = laws.backtest[:1]
    par = laws.parametric
    prow = (par.backtest or (None,))[0] if par else None
    law = row.loss_law
    floor = f", floor E = {par.E:.3f}" if law == "parametric" else ""
    loss = f"{FORM_NAMES[law]} **{pct(row.relative_error)}** (`loss_law: {law}`{floor}); " + ", ".join(
        f"{FORM_NAMES[k]} {pct(f.relative_error)}" for k, f in row.forms.items() if k != law
    )
    actual, ci = row.actual_n_opt, row.predicted_n_opt_ci90
    n_text = f"actual {g(actual)} {inside(actual, ci)} the predicted 90% interval [{g(ci[0])}, {g(ci[1])}] (Approach 2)"
    if prow and prow.predicted_n_opt_ci90:
        ci = prow.predicted_n_opt_ci90
        n_text += f"; {inside(actual, ci)} [{g(ci[0])}, {g(ci[1])}] (Approach 3)"
    at = g(row.flops)
    return [(f"backtest at {at} FLOPs: L*", loss, "-"), ("backtest: N_opt", n_text, "-")]


def prediction_row(laws: LawsSummary) -> tuple[str, str, str]:
    """N_opt at the spec's target, with the width of its interval, Approach 3's beside it."""
    pred = laws.prediction
    n = pred.n_opt
    text = f"N_opt {g(n.value, 2)} [{g(n.ci90[0], 2)}, {g(n.ci90[1], 2)}] ({n.ci90[1] / n.ci90[0]:.1f}x wide)"
    p3 = laws.parametric.prediction if laws.parametric else None
    if p3:
        m = p3.n_opt
        text += f"; Approach 3 {g(m.value, 2)} [{g(m.ci90[0], 2)}, {g(m.ci90[1], 2)}]"
    return (f"prediction at {g(pred.flops)} FLOPs", text, "-")


def quality_rows(laws: LawsSummary) -> list[tuple[str, str, str]]:
    """The quality law in compute, its backtest and its rank correlation with the loss."""
    q = laws.quality
    if not q:
        return []
    law, bt, vs = q.law, q.backtest, q.vs_loss
    rows = [
        (
            "sample quality = g C^h (FD of the shapes evaluator, each budget's best model; FID for the paper)",
            f"h = {est(law.exponent, law.interval('exponent'))}",
            f"{q.paper.exponent}",
        )
    ]
    if bt:
        text = f"FD predicted {bt.predicted:.0f}, actual {bt.actual:.0f}: **{pct(bt.relative_error)}**"
        if vs is not None and vs.spearman is not None:
            text += f"; Spearman(FD, loss) = {vs.spearman:.2f} over {len(q.points)} models"
        rows.append((f"quality backtest at {g(bt.flops)} FLOPs / quality vs loss", text, "loss trend matches quality"))
    return rows


def cost_rows(laws: LawsSummary) -> list[tuple[str, str, str]]:
    """Trained versus grid FLOPs, study_mfu, and the wall time split into training and quality."""
    c = laws.compute
    mfu = (
        ""
        if c.study_mfu is None
        else f"; `study_mfu` **{c.study_mfu:.2f}** of the measured matmul peak ({c.matmul_peak_flops / 1e9:.0f} GFLOP/s)"
    )
    quality_s = c.quality_s or 0.0
    fit_s = laws.wall_time.analysis_s or 0.0
    wall = f"**{minutes(c.study_s + quality_s + fit_s)}** of `study run` after set-up: training {minutes(c.study_s)}"
    if quality_s:
        scored = len(laws.quality.points) if laws.quality else 0
        wall += f", sampling and scoring {scored} models {minutes(quality_s)}"
    if fit_s:
        wall += f", fitting with bootstraps {minutes(fit_s)} (then a few seconds of report figures)"
    return [
        (
            "efficiency",
            f"shared trunks trained {g(c.trained_flops, 2)} of the grid's {g(c.grid_flops, 2)} FLOPs{mfu}",
            "-",
        ),
        ("wall time", wall, "-"),
    ]


def render(laws: dict | LawsSummary) -> str:
    """The markdown table of a finished quickstart's laws.json (its record or dict)."""
    laws = LawsSummary.of(laws)
    rows = [*law_rows(laws), *backtest_rows(laws), prediction_row(laws), *quality_rows(laws), *cost_rows(laws)]
    lines = ["| | this study (90% bootstrap interval) | Liang et al. 2026 |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def details(laws: dict | LawsSummary) -> str:
    """docs/studies.md's details: the fitted laws beside the paper's, the prediction, noise and checks."""
    laws = LawsSummary.of(laws)
    par, bt, paper = laws.parametric, laws.backtest_fit, laws.paper
    head = [
        "| law | Approach 2 (90% bootstrap interval) | backtest refit | Approach 3 (90%) | Liang et al. 2026 |",
        "|---|---|---|---|---|",
    ]
    rows = []
    for name, law, a3 in (
        ("N_opt = a C^b", "params_law", par.n_opt_law),
        ("D_opt = c C^d", "tokens_law", par.d_opt_law),
    ):
        f = laws.law(law)
        rows.append(
            f"| {name} | {g(f.coefficient, 4)} C^{est(f.exponent, f.interval('exponent'))} | "
            f"C^{bt.law(law).exponent:.3f} | {g(a3.coefficient, 3)} C^{est(a3.exponent, a3.interval('exponent'))}"
            f" | {paper[law].coefficient} C^**{paper[law].exponent}** |"
        )
    f = laws.loss_law
    rows.append(
        f"| L_opt = e C^f | {g(f.coefficient, 4)} C^{est(f.exponent, f.interval('exponent'))} | "
        f"C^{bt.loss_law.exponent:.3f} | E = {est(par.E, par.interval('E'), bold=False)}, alpha "
        f"{est(par.alpha, par.interval('alpha'), 2, False)}, beta {est(par.beta, par.interval('beta'), 2, False)} | "
        f"{paper['loss_law'].coefficient} C^**{paper['loss_law'].exponent}** |"
    )
    return "\n".join([*head, *rows, "", *facts(laws)])


def facts(laws: LawsSummary) -> list[str]:
    """The prediction, the seed noise, the residuals and the point checks, one bullet each."""
    pred, noise, rs = laws.prediction, laws.noise, laws.residual_structure
    d, img, loss, near = pred.d_opt, pred.images_opt, pred.loss_opt, pred.nearest
    out = [
        f"- prediction at {g(pred.flops)} FLOPs ({pred.extrapolation:.0f}x the largest budget): D_opt "
        f"{g(d.value, 2)} tokens ({g(img.value, 2)} images), L_opt {est(loss.value, loss.ci90, bold=False)} "
        f"({FORM_NAMES[pred.loss_law or 'power']}), "
        f"nearest model {near.name} ({near.params:,} non-embedding parameters)",
        f"- seed-to-seed spread ({noise.seed_groups} replicated configurations): "
        f"{100 * noise.seed_spread:.1f}% of the loss (sd of log L); isoFLOP parabola residuals "
        f"{100 * noise.residual_spread:.1f}% (ratio {noise.residual_to_seed_ratio:.1f})",
    ]
    bend = laws.loss_bend
    if bend and bend.t is not None:
        out.append(
            f"- L_opt bends: its local exponent goes from {bend.first_exponent:.3f} at {g(bend.first_flops)} "
            f"to {bend.last_exponent:.3f} at {g(bend.last_flops)} FLOPs (t = {bend.t:.1f}; docs/laws.md, "
            "`loss_bends`)"
        )
    if rs.message:
        out.append(f"- residual structure: {rs.message}")
    out += [f"- point check: {c.message}" for c in laws.checks if c.kind != "residual_structure"]
    return out


def extrapolation(laws: LawsSummary) -> str:
    """The backtests at every distance (``scripts/extrapolation_table.py``'s table)."""
    path = Path(__file__).with_name("extrapolation_table.py")
    spec = importlib.util.spec_from_file_location("extrapolation_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.table(laws)


def verify(found: list[dict] | None, laws: LawsSummary | None = None) -> str:
    """The verifications of the prediction (:func:`verification_files`: each ``found[i]["verify"]``, in
    order of distance): each trained size against the loss law of record, every form's prediction at
    the same C (``found[i]["predict"]``, ``study predict --json``) and, with the study's ``laws``, what
    noise alone would cost a right law of record at that distance."""
    if not found:
        return "not verified yet (no verify.json beside laws.json)"
    return "\n\n".join(_one_verification(f["verify"], f.get("predict"), laws) for f in found)


def _floor_line(v: dict, laws: LawsSummary | None) -> list[str]:
    """The 5-95% band of a right law of record's prediction at ``v``'s distance, its L* scattered as the
    study's (:func:`~ditscale.laws.extrapolation.noise_floor`), and whether the miss lies inside it."""
    if laws is None or laws.loss_law_of_record != v["loss_law"]:
        return []
    points = loss_law_points(laws.budgets, laws.options.get("exclude_edge"))
    band = floor_at(*points, v["loss_law"], v["factor"], actual_sd=v.get("seed_spread") or 0.0)
    if band is None:
        return []
    lo, hi = band.low, band.high
    run = (
        f", checked against one run with the study's seed spread (sd {100 * band.actual_sd:.1f}%)"
        if band.actual_sd
        else ""
    )
    verdict = "inside it: noise" if lo <= v["relative_error"] <= hi else "outside it: the form's own miss, not noise"
    return [
        f"- noise alone: a right {FORM_NAMES[band.form]} whose L* scatter about it as the study's do (sd "
        f"{100 * band.sigma:.2f}%){run}, misses this C by [{pct(lo)}, {pct(hi)}] in 90% of {band.draws} draws; "
        f"the miss of {pct(v['relative_error'])} lies {verdict}"
    ]


def _one_verification(v: dict, pred: dict | None, laws: LawsSummary | None = None) -> str:
    """One ``study verify`` answer ``v`` (with ``study predict``'s ``pred`` at the same C, and the
    study's ``laws`` for the noise frame) in markdown."""
    ci = v["predicted_ci90"]
    lines = [
        f"`ditscale study verify DIR --flops {g(v['flops'])} --sizes {len(v['sizes'])}` "
        f"({v['factor']:.0f}x the largest budget): predicted N_opt {g(v['predicted_n_opt'])} "
        f"[{g(v['predicted_n_opt_ci90'][0])}, {g(v['predicted_n_opt_ci90'][1])}], L_opt "
        f"{v['predicted_loss']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}] ({FORM_NAMES[v['loss_law']]}, the law of record).",
        "",
        "| model | role | non-embedding params | steps | val loss | vs the predicted L_opt |",
        "|---|---|---|---|---|---|",
    ]
    for size in v["sizes"]:
        err = (v["predicted_loss"] - size["loss"]) / size["loss"]
        best = " (best)" if size["params"] == v["best_params"] and len(v["sizes"]) > 1 else ""
        lines.append(
            f"| {size['name']} | {size['role']} | {size['params']:,} | {size['steps']:,} | "
            f"**{size['loss']:.4f}**{best} | {pct(err)} |"
        )
    verdict = "inside" if v["within_ci90"] else "outside"
    lines += [
        "",
        f"- law of record: **{pct(v['relative_error'])}** against the model nearest N_opt, {verdict} its 90% interval",
        *_floor_line(v, laws),
    ]
    if pred:
        p = PredictAnswer.from_dict(pred, "predict.json").prediction
        forms = []
        for f in p.forms or ():
            lo, hi = f.loss_opt.ci90 or (math.nan, math.nan)
            err = (f.loss_opt.value - v["actual_loss"]) / v["actual_loss"]
            forms.append(f"{FORM_NAMES[f.form]} {f.loss_opt.value:.4f} [{lo:.4f}, {hi:.4f}] {pct(err)}")
        lines.append("- every form at the same C (`study predict`): " + "; ".join(forms))
    if v.get("within_seed_noise") is not None:
        lines.append(
            f"- best of the {len(v['sizes'])}: {g(v['best_params'])} parameters; the predicted size's loss is "
            f"{100 * v['n_opt_gap']:.1f}% (log) above the best, "
            f"{'within' if v['within_seed_noise'] else 'beyond'} seed noise (90% band of two runs: "
            f"{100 * 1.645 * math.sqrt(2) * v['seed_spread']:.1f}%)"
        )
    return "\n".join(lines)


def verification_files(laws_path: str | Path) -> list[dict]:
    """``[{"verify": ..., "predict": ...}]`` of every ``verify*.json`` beside ``laws_path`` (a committed
    study: ``verify.json``, ``verify-20x.json``, ... each with its ``predict*.json`` of the same suffix),
    else ``[{"verify": ...}]`` of the study folder's own verifications (``verify/``, read by
    :func:`~ditscale.study.verified.read_verifications`: one per C), in order of distance; [] when the
    study was not verified."""
    here = Path(laws_path).parent
    out = []
    for path in sorted(here.glob("verify*.json")):
        found = {"verify": json.loads(path.read_text())}
        predict = path.with_name(path.name.replace("verify", "predict", 1))
        if predict.is_file():
            found["predict"] = json.loads(predict.read_text())
        out.append(found)
    if not out:
        out = [{"verify": v.to_dict()} for v in read_verifications(here)[0]]
    return sorted(out, key=lambda f: f["verify"]["factor"])


# -- recognisable samples (issue 22, goal 3) ----------------------------------------------------------
GOAL_ACCURACIES = ("accuracy_class", "accuracy_colour", "accuracy_shape")  # each >= CHANCE_TIMES x its chance
CHANCE_TIMES = 2  # goal 3: each named accuracy at least 2x its chance level
FLOOR_TIMES = 10  # goal 3: the FD within 10x the real-vs-real FD at the same sample count
ATTRIBUTES_GIVEN_POSITION = ("accuracy_shape", "accuracy_colour", "accuracy_size")


def recognisable(laws: LawsSummary) -> str:
    """The top budget's best model against its frame: each accuracy beside its chance level and the
    real-image floor, the FD beside the real-vs-real FD at the same sample count, and the goals (each
    named accuracy >= 2x chance; FD <= 10x the floor). A text study's per-object attributes are scored
    only where the object's cell is predicted occupied, so their chance folds in the position's (a blob
    of the right colour in the right cell passes 2x the shape's chance): the last column divides that
    out (the attribute right, given the position right), and the goals of shape and colour are judged
    on it."""
    metrics = laws.quality_metrics or {}
    if not metrics:
        return "no quality_metrics in this study's laws.json"
    head = (
        "metric",
        "top budget's best model",
        "chance (real images, shuffled conditions)",
        "floor (real data)",
        "goal",
        "met",
        "given the position right: model / chance",
    )
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|---|---|---|"]
    position = metrics.get("accuracy_position")
    for name, m in metrics.items():
        goal, met, given = "-", "-", "-"
        if position and name in ATTRIBUTES_GIVEN_POSITION and position.best_value and position.chance:
            model, chance = m.best_value / position.best_value, m.chance / position.chance
            given = f"{model:.3f} / {chance:.3f}"
            if name in GOAL_ACCURACIES:  # the stricter reading: the shape drawn, not just a blob in place
                goal = f">= {CHANCE_TIMES}x chance, given the position"
                met = _yes(model >= CHANCE_TIMES * chance)
        elif name in GOAL_ACCURACIES:
            bar = CHANCE_TIMES * m.chance
            goal, met = f">= {CHANCE_TIMES}x chance ({bar:.3f})", _yes(m.best_value >= bar)
        if name == "fd":
            bar = FLOOR_TIMES * m.floor
            goal, met = f"<= {FLOOR_TIMES}x floor ({bar:.0f})", _yes(m.best_value <= bar)
        chance = "-" if m.chance is None else f"{m.chance:.3f}"
        floor = "-" if m.floor is None else (f"{m.floor:.1f}" if name == "fd" else f"{m.floor:.3f}")
        value = f"{m.best_value:.1f}" if name == "fd" else f"{m.best_value:.3f}"
        lines.append(f"| {name} | **{value}** | {chance} | {floor} | {goal} | {met} | {given} |")
    return "\n".join(lines)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def quality_law(laws: LawsSummary) -> str:
    """The quality law of each budget's best model beside the paper's: the law in compute, its backtest,
    the law in loss with its rank correlation, the prediction, and the first and last budget's scores."""
    q = laws.quality
    if not q:
        return "(this study has no quality stage)"
    law, bt, vs, pred, pts = q.law, q.backtest, q.vs_loss, q.prediction, q.points
    floor = (laws.quality_metrics or {}).get(q.metric)
    lines = [
        "| | this study (90% bootstrap interval) | Liang et al. 2026 |",
        "| --- | --- | --- |",
        f"| metric | {q.metric.upper()} on the shapes evaluator's features, each budget's best model | "
        "FID-50K (Inception), ImageNet 256 |",
        f"| quality = a C^b, compute-optimal models | b = {est(law.exponent, law.interval('exponent'))}, "
        f"a = {g(law.coefficient)} | b = **{q.paper.exponent}**, a = {g(q.paper.coefficient, 5)} |",
    ]
    if bt:
        lines.append(
            f"| backtest at {g(bt.flops)} FLOPs (refit on {bt.fitted_budgets} budgets) | predicted "
            f"{est(bt.predicted, bt.predicted_ci90, digits=0, bold=False)}, actual {bt.actual:.0f}: "
            f"**{pct(bt.relative_error)}**, {inside(bt.actual, bt.predicted_ci90)} the interval | - |"
        )
    if vs is not None:
        lines.append(
            f"| quality vs loss | {q.metric.upper()} = {vs.coefficient:.0f} L^{vs.exponent:.2f} "
            f"[{vs.interval('exponent')[0]:.2f}, {vs.interval('exponent')[1]:.2f}]; Spearman rank correlation "
            f'**{vs.spearman:.2f}** over the {len(pts)} models | "the loss trend matches generation performance" |'
        )
    if pred is not None:
        lines.append(
            f"| prediction at {g(pred.flops)} FLOPs | {q.metric.upper()} {est(pred.value, pred.ci90, digits=0, bold=False)} | - |"
        )
    first, last = min(pts, key=lambda p: p.flops), max(pts, key=lambda p: p.flops)
    tail = f" (real-vs-real at the same count: {floor.floor:.1f})" if floor and floor.floor else ""
    lines.append(
        f"| {q.metric.upper()} of the smallest / largest budget's model | {first.quality:.0f} / {last.quality:.0f}{tail} | - |"
    )
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str, where: str) -> str:
    """``text`` with its ``<!-- name -->`` ... ``<!-- /name -->`` block's body replaced by ``body``."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if text.count(start) != 1 or text.count(end) != 1:
        raise SystemExit(f"{where}: needs exactly one {start} ... {end} block")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def rendered(laws: dict | LawsSummary, verified: list[dict] | None = None, study: str = "quickstart") -> dict[str, str]:
    """Each block's body by its marker name ``{study}-{block}`` (``laws``: its record or
    dict; ``verified``: :func:`verification_files`; ``study``: the preset, ``quickstart`` or ``quickstart-t2i``)."""
    laws = LawsSummary.of(laws)
    bodies = {
        "table": render(laws),
        "details": details(laws),
        "extrapolation": extrapolation(laws),
        "verify": verify(verified, laws),
        "quality": recognisable(laws),
        "quality-law": quality_law(laws),
    }
    return {f"{study}-{block}": body for block, body in bodies.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("laws", help="a finished quickstart's laws.json")
    parser.add_argument(
        "--study", default="quickstart", help="the blocks' name: quickstart (default) or quickstart-t2i"
    )
    parser.add_argument(
        "--write",
        nargs="*",
        default=[],
        metavar="FILE",
        help="rewrite the blocks that FILE(s) hold (README.md, docs/studies.md, docs/quality.md)",
    )
    args = parser.parse_args()
    bodies = rendered(LawsSummary.read(args.laws), verification_files(args.laws), args.study)
    for name in args.write:
        path = Path(name)
        text = path.read_text()
        for block, body in bodies.items():
            if f"<!-- {block} -->" in text:
                text = replace_block(text, block, body, name)
        path.write_text(text)
    if not args.write:
        print("\n\n".join(bodies.values()))


if __name__ == "__main__":
    main()
