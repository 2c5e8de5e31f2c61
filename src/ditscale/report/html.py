"""``DIR/report.html``: one self-contained page (PNG figures base64-embedded, also saved next to it)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from ditscale.io import atomic_write_text
from ditscale.laws.extrapolation import at_distance, error_by_factor, study_noise_floor
from ditscale.laws.fit import LOSS_LAWS, loss_law_name
from ditscale.laws.results import (
    BacktestSummary,
    BudgetSummary,
    CheckSummary,
    LawsSummary,
    LawSummary,
    LossLawRule,
    PowerLawSummary,
    NoiseSummary,
    PredictionSummary,
    QualityMetricSummary,
    QualitySummary,
    ResidualStructureSummary,
    RungRuleSummary,
)


def _num(x, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, fmt)


def _ci(ci, fmt: str = ".4g") -> str:
    return "–" if not ci else f"[{_num(ci[0], fmt)}, {_num(ci[1], fmt)}]"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:1.6em;margin-bottom:0.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:0.92em} td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
figure{margin:8px 0} img{max-width:100%} figcaption{font-size:0.85em;color:#555}
.ok{color:#1a7f37;font-weight:600} .bad{color:#b42318;font-weight:600} .muted{color:#666;font-size:0.9em}
"""


def render_html(laws: "dict | LawsSummary", figures: list[tuple[Path, str]], *, title: str) -> str:
    """The report page for ``laws`` (the laws.json dict, or its view) with ``(png, caption)`` figures embedded."""
    view = LawsSummary.of(laws)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    parts += _warnings_section(view)
    if view.prediction is not None:
        parts += _prediction_section(view.prediction, withheld=view.bootstrap is not None)
    if view.backtest:
        parts += _backtest_section(view.backtest)
    if view.parametric is not None and view.parametric.backtest:
        parts += _backtest_section(
            view.parametric.backtest,
            "Approach 3 backtest: L(N, D) refitted without the held-out budget(s)",
            form="parametric",
        )
    if view.extrapolation:
        parts += _extrapolation_section(view)
    if view.loss_law_rule is not None:
        parts += _rule_section(view.loss_law_rule)
    parts += _laws_section(view)
    if view.quality is not None and view.quality.law is not None:
        parts += _quality_section(view.quality)
    if view.quality_metrics:
        parts += _quality_metrics_section(view.quality_metrics)
    parts += [_img(png, caption) for png, caption in figures]
    parts += _budgets_section(view.budgets)
    parts += _checks_section(view.checks)
    parts += _residual_section(view.residual_structure)
    parts += _rung_section(view.rung_rule)
    parts += _noise_section(view.noise)
    parts += _other_fits_section(view)
    parts += _footer(view)
    parts.append("</body></html>")
    return "\n".join(parts)


# -- sections of the page (each a list of HTML parts) ----------------------------------------------
WITHHELD = "withheld (see the warnings above)"


def _warnings_section(view: LawsSummary) -> list[str]:
    """Every warning of laws.json and of its prediction, once each, at the top of the page."""
    found = dict.fromkeys((*view.warnings, *(view.prediction.warnings if view.prediction else ())))
    if not found:
        return []
    return ["<h2>Warnings</h2>", *(f"<p class='bad'>warning: {html.escape(w)}</p>" for w in found)]


def _prediction_section(pred: PredictionSummary, withheld: bool = False) -> list[str]:
    """The headline: the compute-optimal model at the target budget (an interval the bootstrap was asked
    for and withheld says so: ``withheld``)."""
    near = pred.nearest
    name = "–" if near.name is None else near.name
    ci = lambda est, fmt=".4g": WITHHELD if withheld and not est.ci90 else _ci(est.ci90, fmt)  # noqa: E731
    outside = " – outside the family's ladder" if near.outside_ladder else ""
    rows = [
        ["target compute C (FLOPs)", _num(pred.flops, ".3g"), ""],
        ["N_opt (non-embedding params)", _num(pred.n_opt.value, ".4g"), ci(pred.n_opt)],
        ["D_opt (image tokens)", _num(pred.d_opt.value, ".4g"), ci(pred.d_opt)],
        ["D_opt (images)", _num(pred.images_opt.value, ".4g"), ci(pred.images_opt)],
        [
            f"L_opt (validation loss; {loss_law_name(pred.loss_law)})",
            _num(pred.loss_opt.value, ".4f"),
            ci(pred.loss_opt, ".4f"),
        ],
        ["nearest family model", html.escape(f"{name} ({_num(near.params, ',')} params){outside}"), ""],
    ]
    if pred.extrapolation is not None:
        rows.append(
            [
                "extrapolation (target / largest trained budget)",
                f"{_num(pred.extrapolation, '.3g')}x",
                f"largest budget {_num(pred.largest_budget, '.3g')} FLOPs",
            ]
        )
    parts = ["<h2>Compute-optimal model at the target budget</h2>", _table(["quantity", "value", "90% interval"], rows)]
    return parts + _forms_section(pred)


def _forms_section(pred: PredictionSummary) -> list[str]:
    """Every fitted form at the target side by side, and the exponents' intervals in words."""
    parts = []
    if pred.forms:
        rows = [
            [
                html.escape(f.name or ""),
                _num(f.n_opt.value, ".4g"),
                _ci(f.n_opt.ci90),
                _num(f.loss_opt.value, ".4f"),
                _ci(f.loss_opt.ci90, ".4f"),
                _degenerate_cell(f.degenerate),
            ]
            for f in pred.forms
        ]
        parts += [
            f"<h2>Every fitted form at C = {_num(pred.flops, '.3g')} FLOPs</h2>",
            _table(["form", "N_opt", "90% interval", "L_opt", "90% interval", "fit"], rows),
        ]
    words = [e.message for e in pred.exponents or () if e.message]
    parts += [f"<p class='bad'>{html.escape(w)}</p>" for w in words]
    if pred.exponents and not words and all(e.ci90 for e in pred.exponents):
        parts.append(
            "<p class='muted'>Every exponent's 90% interval excludes 0 and the allocation exponents' are at "
            "most 0.25 wide.</p>"
        )
    return parts


def _degenerate_cell(reasons: tuple[str, ...] | None) -> str:
    """A form's fit: "degenerate" with its reasons, "ok", or "–" (a laws.json older than the rule)."""
    if reasons is None:
        return "–"
    return f"<span class='bad'>degenerate: {html.escape('; '.join(reasons))}</span>" if reasons else "ok"


def _error(x: float | None) -> str:
    """A backtest's relative error, green within 2%, red beyond."""
    return "–" if x is None else f"<span class='{'ok' if abs(x) <= 0.02 else 'bad'}'>{x:+.2%}</span>"


def _backtest_section(
    backtest: tuple[BacktestSummary, ...],
    title: str = "Backtest: refit without the held-out budget(s)",
    form: str = "power",
) -> list[str]:
    """Predicted vs actual L* (by the row's loss form; ``form`` for rows that name none) and N* of
    the held-out budgets; loss errors within 2% and N* inside the predicted 90% interval in green;
    then every loss form's error."""
    rows, forms = [], []
    for r in backtest:
        n_cls = {True: "ok", False: "bad"}.get(r.n_opt_within_ci90, "muted")
        n_act = "edge" if r.actual_n_opt is None and r.predicted_n_opt is not None else _num(r.actual_n_opt, ".4g")
        rows.append(
            [
                _num(r.flops, ".3g"),
                html.escape(loss_law_name(r.loss_law or form)),
                _num(r.predicted_loss, ".4f"),
                _ci(r.predicted_ci90, ".4f"),
                _num(r.actual_loss, ".4f"),
                _error(r.relative_error),
                _num(r.predicted_n_opt, ".4g"),
                _ci(r.predicted_n_opt_ci90),
                f"<span class='{n_cls}'>{n_act}</span>",
            ]
        )
        forms += [
            [
                _num(r.flops, ".3g"),
                html.escape(loss_law_name(k)),
                _num(f.predicted_loss, ".4f"),
                _ci(f.predicted_ci90, ".4f"),
                _error(f.relative_error),
            ]
            for k, f in (r.forms or {}).items()
        ]
    parts = [
        f"<h2>{html.escape(title)}</h2>",
        _table(
            [
                "held-out C (FLOPs)",
                "L* from",
                "predicted L*",
                "90% interval",
                "actual L*",
                "relative error",
                "predicted N_opt",
                "90% interval",
                "actual N*",
            ],
            rows,
        ),
    ]
    if forms:
        parts += [
            "<p>Every loss form refitted without the held-out budget(s); the study's <code>laws.loss_law</code> "
            "picks the one above.</p>",
            _table(["held-out C (FLOPs)", "form", "predicted L*", "90% interval", "relative error"], forms),
        ]
    return parts


def _extrapolation_section(view: LawsSummary) -> list[str]:
    """The backtests at every distance by factor: each form's median L* error [range], how many actual
    L* lie inside their 90% interval, the law of record's N_opt interval hits, and the frame: what a
    right law of record would give there (:func:`~ditscale.laws.extrapolation.noise_floor`)."""
    rows_all = view.extrapolation or ()
    forms = [f for f in LOSS_LAWS if any(r.form == f for r in rows_all)]
    record = view.extrapolation_of_record or ()
    floor = study_noise_floor(view)
    rows = []
    for factor, errors in error_by_factor(rows_all).items():
        by_form = {e.form: e for e in errors}
        at = at_distance(factor, record)
        n_hits = sum(r.n_opt_within_ci90 is True for r in at)
        cells = [
            "–"
            if f not in by_form
            else f"{_error(by_form[f].median)} [{by_form[f].low:+.1%}, {by_form[f].high:+.1%}], "
            f"{by_form[f].within_ci90}/{by_form[f].rows} in 90%"
            for f in forms
        ]
        band = None if floor is None else floor.band_at(factor)
        noise = "–" if band is None else f"[{band.low:+.1%}, {band.high:+.1%}], {band.within_2pct:.0%} within 2%"
        rows.append([f"{factor:.3g}x", str(max(e.rows for e in errors)), *cells, f"{n_hits}/{len(at)}", noise])
    head = ["held-out C / largest fitted C", "rows", *(html.escape(loss_law_name(f)) for f in forms)]
    frame = (
        ""
        if floor is None
        else f" Last column, the frame: the 90% band of the error a right {html.escape(loss_law_name(floor.form))} "
        f"would show there, and its share of rows within 2%, its L* scattered about it as this study's do (sd "
        f"{floor.sigma:.2%}; {floor.draws} draws; a form's misfit counts as scatter): an error far outside it "
        "is the form's, not noise."
    )
    return [
        "<h2>Backtests at every distance</h2>",
        "<p>The K largest budgets left out (K = 1, 2, ... while 5 budgets stay fitted); every form refitted "
        "predicts each held-out budget's L*: median error [range] and how many actual L* lie inside the "
        "prediction's 90% interval; then the law of record's N_opt inside its 90% interval." + frame + "</p>",
        _table([*head, "N_opt in 90% (of record)", "noise alone: a right law of record"], rows),
    ]


def _rule_section(rule: LossLawRule) -> list[str]:
    """How ``laws.loss_law: auto`` chose the form of record: the rule, each form's score, the choice."""
    excluded = rule.excluded or {}

    def verdict(form: str) -> str:
        if form in excluded:
            return "not eligible: " + html.escape("; ".join(excluded[form]))
        return "chosen" if form == rule.chosen else ""

    rows = [[html.escape(loss_law_name(f)), f"{score:.3%}", verdict(f)] for f, score in rule.scores.items()]
    return [
        "<h2>The loss law of record, by rule</h2>",
        f"<p>{html.escape(rule.rule)}. Fitted budgets up to {_num(rule.fitted_max_flops, '.3g')} FLOPs; "
        f"{len(rule.inputs)} inner predictions.</p>",
        _table(["form", "mean |relative error|", ""], rows),
    ]


def _quality_section(q: QualitySummary) -> list[str]:
    """The quality law in compute (with the paper's), its backtest and prediction, and quality vs loss."""
    law, paper, bt = q.law, q.paper, q.backtest
    rows = [
        [
            f"{q.metric} = a C^b (compute-optimal models)",
            _num(law.coefficient, ".4g"),
            _ci(law.interval("coefficient")),
            _num(law.exponent, ".4f"),
            _ci(law.interval("exponent"), ".4f"),
        ]
    ]
    if q.vs_loss is not None:
        rows.append(
            [
                f"{q.metric} = a L^b (all scored models; Spearman {_num(q.vs_loss.spearman, '.3f')})",
                _num(q.vs_loss.coefficient, ".4g"),
                _ci(q.vs_loss.interval("coefficient")),
                _num(q.vs_loss.exponent, ".4f"),
                _ci(q.vs_loss.interval("exponent"), ".4f"),
            ]
        )
    rows.append(
        [
            f"paper (Liang et al.): {paper.metric} = a C^b",
            _num(paper.coefficient, ".4g"),
            "",
            _num(paper.exponent, ".4f"),
            "",
        ]
    )
    parts = ["<h2>Sample quality</h2>", _table(["law", "a", "90% interval", "b", "90% interval"], rows)]
    if bt is not None:
        cls = {True: "ok", False: "bad"}.get(bt.within_ci90, "muted")
        parts.append(
            _table(
                ["held-out C (FLOPs)", f"predicted {q.metric}", "90% interval", "actual", "relative error"],
                [
                    [
                        _num(bt.flops, ".3g"),
                        _num(bt.predicted),
                        _ci(bt.predicted_ci90),
                        _num(bt.actual),
                        f"<span class='{cls}'>{_num(bt.relative_error, '+.2%')}</span>",
                    ]
                ],
            )
        )
    pred = q.prediction
    if pred is not None and pred.value is not None:
        parts.append(
            f"<p>Predicted {html.escape(str(q.metric))} at {_num(pred.flops, '.3g')} FLOPs: "
            f"{_num(pred.value)} {_ci(pred.ci90)}</p>"
        )
    return parts


def _quality_metrics_section(metrics: dict[str, QualityMetricSummary]) -> list[str]:
    """Every quality metric beside its frame: the top budget's best score, its chance level and what real
    data reaches, its law in compute (90% interval of the exponent), backtest and agreement with loss."""
    rows = []
    for name, m in metrics.items():
        bt, vs = m.backtest, m.vs_loss
        rows.append(
            [
                html.escape(name),
                _num(m.best_value),
                _num(m.chance),
                _num(m.floor),
                "–" if m.law is None else f"{_num(m.law.coefficient, '.3g')} C^{_num(m.law.exponent, '.4f')}",
                "–" if m.law is None else _ci(m.law.interval("exponent"), ".4f"),
                "–" if bt is None else _num(bt.relative_error, "+.2%"),
                "–" if vs is None else _num(vs.spearman, ".3f"),
                "–" if vs is None else _num(vs.exponent, ".3f"),
            ]
        )
    head = ["metric", "best (top budget)", "chance", "real data", "law in C", "exponent 90%"]
    return [
        "<h2>Quality metrics</h2>",
        (
            "<p class='muted'>chance: the accuracy of real images given shuffled captions or labels; real data: "
            "FD of two real sets of the samples' count, or the accuracy of real images given their own; no law "
            "where a score is 0.</p>"
        ),
        _table(head + ["backtest error", "Spearman vs loss", "exponent in loss"], rows),
    ]


def _law_row(what: str, f: LawSummary | None, refit: LawSummary | None, p: PowerLawSummary | None) -> list[str]:
    """One row of the laws table: coefficient and exponent with intervals, the refit's and the paper's
    ("–" for a law that is None)."""
    value = lambda law, name: None if law is None else getattr(law, name)  # noqa: E731
    interval = lambda name: None if f is None else f.interval(name)  # noqa: E731
    return [
        what,
        _num(value(f, "coefficient"), ".4g"),
        _ci(interval("coefficient")),
        _num(value(f, "exponent"), ".4f"),
        _ci(interval("exponent"), ".4f"),
        _num(value(refit, "exponent"), ".4f"),
        _num(value(p, "coefficient"), ".4g"),
        _num(value(p, "exponent"), ".4f"),
    ]


def _laws_section(view: LawsSummary) -> list[str]:
    """The fitted compute laws (Approach 2, and Approach 3's allocation laws with their own
    bootstrap intervals) beside the backtest refit's exponents and the paper's laws."""
    rows = []
    for law, what in (
        ("params_law", "N_opt = a C^b (params)"),
        ("tokens_law", "D_opt = c C^d (tokens)"),
        ("loss_law", "L_opt = e C^f"),
    ):
        refit = view.backtest_fit.law(law) if view.backtest_fit else None
        rows.append(_law_row(what, view.law(law), refit, view.paper.get(law)))
    par = view.parametric
    for law, paper, what in (
        ("n_opt_law", "params_law", "Approach 3: N_opt = G (C/6)^a"),
        ("d_opt_law", "tokens_law", "Approach 3: D_opt = G^-1 (C/6)^b"),
    ):
        rows.append(_law_row(what, getattr(par, law) if par else None, None, view.paper.get(paper)))
    return [
        "<h2>Fitted laws vs Liang et al. (2026)</h2>",
        _table(
            [
                "law",
                "coefficient",
                "90% CI",
                "exponent",
                "90% CI",
                "exponent (backtest refit)",
                "paper coefficient",
                "paper exponent",
            ],
            rows,
        ),
        "<p class='muted'>Paper: in-context DiTs with rectified flow on latent images, isoFLOP budgets "
        "1e17–6e18 FLOPs, Approach 2, no intervals. Coefficients depend on data, tokenisation and the "
        "loss, so only the exponents are comparable. Approach 3 rows: the allocation implied by "
        "L = E + A/N^alpha + B/D^beta under C = 6ND, intervals from its own bootstrap.</p>",
    ]


def _budgets_section(budgets: tuple[BudgetSummary, ...]) -> list[str]:
    """Every budget's optimum with its flags."""

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows = [
        [
            _num(b.flops, ".3g"),
            str(b.n_runs),
            _num(b.n_opt, ".4g"),
            _num(b.d_opt, ".4g"),
            _num(b.loss_opt, ".4f"),
            yes(b.edge),
            yes(b.degenerate),
            yes(b.held_out),
        ]
        for b in budgets
    ]
    return [
        "<h2>Per-budget optima</h2>",
        _table(["C (FLOPs)", "runs", "N*", "D* (tokens)", "L*", "edge", "degenerate", "held out"], rows),
    ]


def _checks_section(checks: tuple[CheckSummary, ...]) -> list[str]:
    """The isoFLOP point checks (off-centre or drifting grids, near-duplicate sizes, outliers)."""
    if not checks:
        return [
            "<h2>isoFLOP point checks</h2><p class='muted'>No off-centre or drifting grids, near-duplicate "
            "sizes or outliers found.</p>"
        ]
    rows = [
        ["all" if c.budget is None else _num(c.budget, ".3g"), html.escape(c.kind or ""), html.escape(c.message or "")]
        for c in checks
    ]
    return ["<h2>isoFLOP point checks</h2>", _table(["C (FLOPs)", "check", "message"], rows)]


def _residual_section(rs: ResidualStructureSummary | None) -> list[str]:
    """The per-size F-test of the isoFLOP residuals: does a model size sit off its parabolas at every budget?"""
    if rs is None:
        return []
    head = "<h2>Residual structure by model size</h2>"
    if rs.p_value is None:
        return [
            head,
            "<p class='muted'>Not testable: the parabolas fit every budget exactly (3 sizes per budget and "
            "no seed replicates), or no model size appears in two budgets.</p>",
        ]
    dof = list(rs.dof or ())
    rows = [
        [_num(x.params, ".4g"), str(x.budgets), _num(x.mean_residual, "+.2%"), f"{x.above} of {x.budgets}"]
        for x in rs.sizes
    ]
    verdict = (
        f"<p class='bad'>{html.escape(rs.message or '')}</p>"
        if rs.warn
        else f"<p class='ok'>No size structure: F = {_num(rs.statistic, '.3g')} on {dof} dof, p = {_num(rs.p_value, '.2g')} "
        f"(warns below {_num(rs.threshold, 'g')}).</p>"
    )
    return [head, verdict, _table(["N (params)", "budgets", "mean log-loss residual", "above its parabola"], rows)]


def _rung_section(rule: RungRuleSummary | None) -> list[str]:
    """Under ``laws.off_rungs: drop``: which rungs the rule left out of every fit, and why it stopped."""
    if rule is None:
        return []
    left = ", ".join(_num(p, ".4g") for p in rule.dropped) or "none"
    return [
        f"<p>Off rungs (<code>laws.off_rungs: drop</code>, decided on the budgets up to "
        f"{_num(rule.fitted_max_flops, '.3g')} FLOPs): left out N = {left}; {html.escape(rule.stopped)}.</p>"
    ]


def _noise_section(noise: NoiseSummary) -> list[str]:
    """Seed-to-seed spread vs the scatter of the isoFLOP parabolas."""
    rows = [
        [
            "seed-to-seed spread of the loss (std of log L)",
            _num(noise.seed_spread, ".3%") if noise.seed_spread else "–",
        ],
        ["replicated configurations", str(noise.seed_groups)],
        [
            "isoFLOP parabola residuals (rms of log L)",
            _num(noise.residual_spread, ".3%") if noise.residual_spread else "–",
        ],
        ["residual / seed spread", _num(noise.residual_to_seed_ratio, ".2f")],
    ]
    return ["<h2>Noise</h2>", _table(["measure", "value"], rows)]


def _other_fits_section(view: LawsSummary) -> list[str]:
    """The saturating loss law and Approach 3 (with 90% intervals when bootstrapped)."""
    sat, par = view.loss_law_saturating, view.parametric

    def value(name: str) -> str:
        ci = par.interval(name)
        return f"{name}={_num(getattr(par, name))}" + (f" {_ci(ci)}" if ci else "")

    forms = {f.form: f.degenerate for f in (view.prediction.forms or ())} if view.prediction else {}
    mark = lambda form: f" ({_degenerate_cell(forms[form])})" if forms.get(form) else ""  # noqa: E731
    rows = [
        [
            "saturating loss L = E + k C^-gamma",
            "–" if not sat else f"E={_num(sat.E)}, k={_num(sat.k)}, gamma={_num(sat.gamma)}{mark('saturating')}",
        ],
        [
            "Approach 3 L = E + A/N^alpha + B/D^beta",
            "did not converge"
            if not par
            else ", ".join(value(k) for k in ("E", "A", "B", "alpha", "beta")) + mark("parametric"),
        ],
    ]
    pred = par.prediction if par else None
    if pred is not None and pred.loss_opt.value is not None:
        rows.append(
            [
                f"Approach 3 at C = {_num(pred.flops, '.3g')} FLOPs",
                f"N_opt={_num(pred.n_opt.value)} {_ci(pred.n_opt.ci90)}, "
                f"L_opt={_num(pred.loss_opt.value, '.4f')} {_ci(pred.loss_opt.ci90, '.4f')}",
            ]
        )
    return ["<h2>Other fits</h2>", _table(["fit", "values"], rows)]


def _footer(view: LawsSummary) -> list[str]:
    """Wall time and provenance (the warnings are at the top of the page)."""
    wall = view.wall_time
    n_runs = "" if view.n_runs is None else view.n_runs
    parts = [
        f"<p class='muted'>Study wall time {_num(wall.study_s, '.0f')} s over {wall.calls} "
        f"call(s); sum of run wall times {_num(wall.runs_wall_s_sum, '.0f')} s, run CPU time "
        f"{_num(wall.runs_cpu_s_sum, '.0f')} s. {n_runs} runs.</p>"
    ]
    if view.provenance is not None:
        v = view.provenance
        dirty = " with uncommitted changes" if v.git_dirty else ""
        parts.append(
            f"<p class='muted'>Fitted by ditscale {html.escape(str(v.ditscale))} (commit "
            f"{html.escape(str(v.git_commit))}{dirty}), torch {html.escape(str(v.torch))}, Python "
            f"{html.escape(str(v.python))} on {html.escape(str(v.hostname))}; spec SHA-256 "
            f"{html.escape(str(v.spec_sha256))}.</p>"
        )
    return parts


def write_html(path: str | Path, laws: "dict | LawsSummary", figures: list[tuple[Path, str]], *, title: str) -> Path:
    """Write the report page atomically; returns ``path``."""
    atomic_write_text(path, render_html(laws, figures, title=title))
    return Path(path)
