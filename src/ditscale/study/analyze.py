"""Fit, backtest and predict from a study folder (numpy/scipy through :mod:`ditscale.laws`).

- :func:`analyze_study` writes ``DIR/laws.json`` (and the report): Approach 2 laws on all budgets
  with bootstrap 90% intervals, the per-budget optima with edge flags, the isoFLOP point checks
  (off-centre and drifting grids, near-duplicate sizes, outliers), Approach 3 with its own
  bootstrap intervals when it converges, the backtest (refit without the ``holdout`` largest
  budgets, predict their compute-optimal loss and N_opt), the measured noise and the wall time.
- :func:`predict_study` answers "what should I train with C FLOPs": N_opt, D_opt (tokens and
  images), loss, each with a 90% interval, and the nearest model of the study's family; every
  fitted form at the target side by side, how far it extrapolates, which exponents are resolved.
- :func:`compare_studies` puts two studies' laws side by side.

The analysis stores every bootstrap it draws in ``DIR/bootstrap.npz`` (:data:`DRAWS_FILE`,
:class:`ditscale.laws.draws.DrawStore`, keyed by the runs and options they were drawn from);
``predict_study`` and ``compare_studies`` reuse the draws whose key matches, so they give exactly
laws.json's intervals in seconds, and redraw (saying so in ``notes``) when none does.

Units: C in training FLOPs, N non-embedding parameters, D image tokens, loss in the runs' val-loss
units; ``relative_error = (predicted - actual) / actual``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path

import numpy as np

from ditscale.errors import ConfigError, DataError
from ditscale.laws.draws import DrawStore, draws_key
from ditscale.laws.noise import noise_summary  # noqa: F401  (laws.json "noise"; also public here)
from ditscale.study.folder import StudyFolder
from ditscale.study.plan import base_model_config, rung_config
from ditscale.study.spec import PAPER_LAWS, StudySpec


def load_study_spec(out_dir: str | Path) -> StudySpec:
    """The spec a study folder was run with (``DIR/spec.yaml``)."""
    return StudyFolder(out_dir).read_spec()


def load_runs(out_dir: str | Path, *, budgets: list[float] | None = None):
    """The study's ``runs.csv`` as a :class:`ditscale.laws.Runs` (optionally only some budgets)."""
    return StudyFolder(out_dir).read_runs(budgets)


# -- family members for "nearest model" ------------------------------------------------------------
def family_members(
    spec: StudySpec, up_to_params: float = 0.0, base=None
) -> list[tuple[str, float, tuple[int, int, int]]]:
    """``(name, non-embedding params, rung)`` of the family; a rule-based family is extended
    (deeper or wider) until a member has at least ``2 * up_to_params`` parameters. ``base``:
    :func:`~ditscale.study.plan.base_model_config` of ``spec`` if the caller has it."""
    from ditscale.flops import param_counts

    base = base_model_config(spec) if base is None else base

    def member(rung):
        d, w, h = rung
        return (f"d{d}-w{w}-h{h}", float(param_counts(rung_config(spec, rung, base)).non_embedding), rung)

    out = [member(r) for r in spec.family.ladder()]
    fam = spec.family
    step = 0
    while fam.rungs is None and max(m[1] for m in out) < 2 * up_to_params and step < 2000:
        step += 1
        rung = fam.next_rung(max(out, key=lambda m: m[1])[2])
        if rung is None or rung in {m[2] for m in out}:
            break
        out.append(member(rung))
    return sorted(out, key=lambda m: m[1])


def tokens_per_image(spec: StudySpec, base=None) -> int:
    """Image tokens per training image of the family (equal for every rung)."""
    from ditscale.flops import tokens_per_image as tpi

    return int(tpi(base_model_config(spec) if base is None else base))


# -- stored bootstrap draws -------------------------------------------------------------------------
DRAWS_FILE = "bootstrap.npz"


def draws_path(out_dir: str | Path) -> Path:
    """``DIR/bootstrap.npz``: the study's stored bootstrap draws."""
    return Path(out_dir) / DRAWS_FILE


def load_draws(out_dir: str | Path) -> DrawStore:
    """The stored draws of a study (an empty store when the file is missing; an empty store marked
    ``loaded`` when it cannot be read, so the redraw is reported)."""
    path = draws_path(out_dir)
    if not path.is_file():
        return DrawStore()
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return DrawStore.from_arrays(arrays)
    except (OSError, ValueError, KeyError):
        return DrawStore(loaded=True)


def write_draws(out_dir: str | Path, draws: DrawStore) -> Path:
    """Write ``draws`` atomically to ``DIR/bootstrap.npz``."""
    from ditscale.io import atomic_write_npz

    return atomic_write_npz(draws_path(out_dir), draws.to_arrays())


def draws_note(out_dir: str | Path, draws: DrawStore) -> str | None:
    """One line saying that bootstraps were redrawn, and why (None when every draw was reused)."""
    if not draws.redrawn:
        return None
    path = draws_path(out_dir)
    why = "was drawn from other runs.csv rows or laws options" if draws.loaded else "is missing"
    return (
        f"bootstrap redrawn ({', '.join(dict.fromkeys(draws.redrawn))}): {path} {why}; "
        f"`ditscale study report {out_dir}` stores the draws again"
    )


# -- fits -------------------------------------------------------------------------------------------
def fit_study(
    out_dir: str | Path, spec: StudySpec | None = None, *, seed_offset: int = 0, draws: DrawStore | None = None
):
    """Approach 2 fit of all budgets (options: ``spec.laws``) with its bootstrap.

    Returns ``(runs, fit, boot, warnings)``; ``boot`` is None with ``laws.bootstrap: 0``; the
    warnings include the messages of the isoFLOP point checks (:func:`ditscale.laws.checks.isoflop_checks`)
    and of the residual-structure test (:func:`ditscale.laws.residuals.residual_structure`).
    ``draws``: reuse (and keep) bootstrap draws there (:class:`~ditscale.laws.draws.DrawStore`).
    """
    runs, fit, boot, warns, _ = _fit_and_check(StudyFolder(out_dir), spec, seed_offset, draws)
    return runs, fit, boot, warns


def _fit_and_check(folder: StudyFolder, spec: StudySpec | None, seed_offset: int = 0, draws: DrawStore | None = None):
    """:func:`fit_study`'s ``(runs, fit, boot, warnings)`` plus the isoFLOP point checks themselves."""
    from ditscale.laws import fit_runs
    from ditscale.laws.checks import isoflop_checks
    from ditscale.laws.residuals import residual_structure

    spec = spec or folder.read_spec()
    cfg = dataclasses.replace(spec.laws, seed=spec.laws.seed + seed_offset)
    runs = folder.read_runs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit, boot = fit_runs(runs, cfg, draws)
    checks = isoflop_checks(runs, fit, cfg.loss_law)
    structure = residual_structure(runs, cfg.budget_rtol).message
    found = {str(w.message) for w in caught} | {c.message for c in checks} | ({structure} if structure else set())
    return runs, fit, boot, sorted(found), checks


def _backtest_rows(refit, boot, full_isoflop, held_flops, saturating: bool = False, to_6nd: float = 1.0) -> list[dict]:
    """The backtest rows as laws.json stores them (:func:`ditscale.laws.predict.backtest_rows`'s keys),
    each with the 90% intervals of the predicted loss and N_opt from the refit's bootstrap and
    whether the actual values lie inside. ``to_6nd``: 6ND FLOPs per FLOP, for Approach 3's refit."""
    from ditscale.laws import predict
    from ditscale.laws.predict import backtest_rows

    inside = lambda ci, x: None if ci is None or x is None else bool(ci[0] <= x <= ci[1])  # noqa: E731
    out = []
    for row in backtest_rows(refit, full_isoflop, held_flops, saturating, to_6nd):
        est = predict(refit, row.flops * to_6nd, boot=boot, saturating=saturating)
        out.append(
            {
                **row.to_dict(),
                "predicted_ci90": est.loss_opt.ci90,
                "within_ci90": inside(est.loss_opt.ci90, row.actual_loss),
                "predicted_n_opt_ci90": est.n_opt.ci90,
                "n_opt_within_ci90": inside(est.n_opt.ci90, row.actual_n_opt),
            }
        )
    return out


def _holdout_split(runs, spec: StudySpec):
    """``(runs without the spec.holdout largest budgets, their FLOPs)`` (warnings of the split silenced)."""
    from ditscale.laws.predict import holdout_split

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return holdout_split(runs, spec.holdout, spec.laws.budget_rtol)


def backtest_study(runs, spec: StudySpec, fit=None, draws: DrawStore | None = None, to_6nd: float = 1.0) -> dict:
    """Refit without the ``spec.holdout`` largest budgets and predict their compute-optimal loss and N_opt.

    Every loss form is backtested (:data:`ditscale.laws.fit.LOSS_LAWS`): the isoFLOP refit's power law and
    saturating law, and Approach 3 refitted to the same runs (its C = 6ND target is the held-out
    FLOPs times ``to_6nd``, :func:`six_nd_per_exact`). The rows of record take N_opt from the
    isoFLOP refit and the loss from ``spec.laws.loss_law`` (the power law when that form could not
    be fitted); each row names its ``loss_law`` and carries every form's loss under ``forms``.

    ``fit`` is the study's isoFLOP fit of all runs (``fit_study``), which gives the held-out
    budgets' actual L* and N*; it is refitted when not given. Returns ``{"rows": [{flops,
    predicted_loss, predicted_ci90, actual_loss, relative_error, within_ci90, predicted_n_opt,
    predicted_n_opt_ci90, actual_n_opt (None for an edge or degenerate optimum), n_opt_within_ci90,
    loss_law, forms}], "forms": {form: rows of that form alone (Approach 3's with its own N_opt)},
    "loss_law": the form of record, "fit": the refit's laws (JSON shape), "budgets": fitted budget
    FLOPs}``. ``draws``: reuse (and keep) the refits' bootstraps there.
    """
    from ditscale.laws import fit_isoflop, fit_runs

    cfg, holdout = spec.laws, spec.holdout
    budget_flops = [float(c) for c in runs.budgets(cfg.budget_rtol)[1]]
    if holdout < 1:
        return {"rows": [], "forms": {}, "loss_law": cfg.loss_law, "fit": None, "budgets": budget_flops}
    sub, held_flops = _holdout_split(runs, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refit, boot = fit_runs(sub, cfg, draws)
        full = fit if fit is not None else fit_isoflop(runs, **cfg.fit_options())
        forms = {"power": _backtest_rows(refit, boot, full, held_flops)}
        if refit.loss_law_saturating is not None:
            forms["saturating"] = _backtest_rows(refit, boot, full, held_flops, saturating=True)
        par = _parametric_fit(sub, cfg, draws)
        if par is not None:
            forms["parametric"] = _backtest_rows(*par, full, held_flops, to_6nd=to_6nd)
    forms = {name: [{**row, "loss_law": name} for row in rows] for name, rows in forms.items()}
    law = cfg.loss_law if cfg.loss_law in forms else "power"
    rows = [_record_row(i, forms, law) for i in range(len(held_flops))]
    return {
        "rows": rows,
        "forms": forms,
        "loss_law": law,
        "fit": refit.to_dict(boot),
        "budgets": budget_flops[: len(budget_flops) - holdout],
    }


_LOSS_KEYS = ("predicted_loss", "predicted_ci90", "relative_error", "within_ci90")


def _record_row(i: int, forms: dict[str, list[dict]], law: str) -> dict:
    """Held-out budget ``i``'s row of record: the isoFLOP refit's N_opt, the loss of form ``law``,
    and every form's loss under ``forms``."""
    row = {**forms["power"][i], **{k: forms[law][i][k] for k in _LOSS_KEYS}, "loss_law": law}
    row["forms"] = {name: {k: rows[i][k] for k in _LOSS_KEYS} for name, rows in forms.items()}
    return row


def parametric_summary(
    fitted, runs, cfg=None, target_flops: float | None = None, tpi: int | None = None, to_6nd: float = 1.0
) -> dict | None:
    """Approach 3 (``L = E + A/N^alpha + B/D^beta``) as JSON, or None if it did not converge.

    ``fitted``: :func:`_parametric_fit`'s ``(fit, Bootstrap or None)`` of ``runs``, or None. ``cfg``
    (a :class:`~ditscale.laws.FitConfig`, the spec's ``laws``; default: its defaults) gave the
    solver (``parametric_method``, ``delta``, ``top_k``) and the bootstrap (``cfg.resamples``
    resamples of whole runs, stratified by budget, seed ``cfg.seed``): intervals and standard
    errors of E, A, B, alpha, beta and of the implied N_opt / D_opt laws. With ``target_flops``,
    ``prediction`` holds the compute-optimal N, D (tokens, and images with ``tpi`` tokens per
    image) and loss there with 90% intervals. Approach 3 allocates compute as C = 6ND, so an exact
    FLOP target is first converted with ``to_6nd`` (6ND FLOPs per exact FLOP; :func:`six_nd_per_exact`);
    the prediction keeps the exact target as ``flops`` and adds ``flops_6nd``.
    """
    from ditscale.laws import FitConfig, predict

    cfg = cfg or FitConfig()
    if fitted is None:
        return None
    fit, boot = fitted
    out = fit.to_dict(boot)
    if target_flops is not None:
        largest = max(runs.budgets(cfg.budget_rtol)[1]) * to_6nd
        with np.errstate(all="ignore"):
            pred = predict(fit, target_flops * to_6nd, boot=boot, tokens_per_image=tpi, trained_flops=largest).to_dict()
        out["prediction"] = {**pred, "flops": float(target_flops), "flops_6nd": float(target_flops * to_6nd)}
    return out


def _parametric_fit(runs, cfg, draws: DrawStore | None = None):
    """Approach 3 fitted to ``runs`` and bootstrapped per ``cfg`` (reusing ``draws``): ``(fit,
    Bootstrap or None)``, or None when the fit fails or is not finite."""
    from ditscale.laws import bootstrap, fit_parametric

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_parametric(runs, **cfg.parametric_options())
    except (DataError, ValueError, FloatingPointError):
        return None
    if not all(math.isfinite(getattr(fit, k)) for k in ("E", "A", "B", "alpha", "beta")):
        return None
    if cfg.resamples < 2:
        return fit, None
    if draws is None:
        return fit, bootstrap(runs, fit, cfg.resamples, cfg.seed)
    return fit, draws.bootstrap("parametric", runs, fit, cfg.parametric_options(), cfg.resamples, cfg.seed)


def six_nd_per_exact(rows: list[dict]) -> float:
    """6ND FLOPs per exact training FLOP at the study's largest budget (geometric mean of its runs'
    ``flops_6nd / flops``): the conversion of an exact-FLOP target for Approach 3, whose allocation
    counts C = 6ND. Small DiTs spend 1.3-1.7 exact FLOPs per 6ND FLOP (attention, embeddings)."""
    largest = max(float(r["budget"]) for r in rows)
    ratios = [
        float(r["flops_6nd"]) / float(r["flops"])
        for r in rows
        if float(r["budget"]) == largest and r.get("flops_6nd") not in (None, "")
    ]
    return math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else 1.0  # no 6ND column: C as given


def predict_study(
    out_dir: str | Path,
    flops: float,
    *,
    spec: StudySpec | None = None,
    fitted=None,
    with_backtest: bool = True,
    draws: DrawStore | None = None,
) -> dict:
    """Compute-optimal model at ``flops`` training FLOPs from the study in ``out_dir`` (JSON-ready).

    Keys: ``flops``; ``n_opt`` (non-embedding params), ``d_opt`` (tokens), ``images_opt`` (images),
    ``loss_opt``, each ``{"value", "ci90"}``; ``nearest`` (the family member nearest N_opt:
    name, depth, hidden_size, num_heads, params, params_total, in_ladder); ``tokens_per_image``;
    ``largest_budget`` and ``extrapolation`` (``flops`` over it); ``forms`` (:func:`prediction_forms`:
    every fitted form's N_opt and L_opt at ``flops``); ``loss_law`` (the form ``loss_opt`` comes
    from: ``spec.laws.loss_law``, or "power" with a warning when that form could not be fitted);
    ``exponents`` (:func:`exponent_checks`);
    ``residual_structure`` (:func:`ditscale.laws.residuals.residual_structure`); ``backtest`` (see
    :func:`backtest_study`; unless ``with_backtest`` is False); ``warnings`` (the fit's, the
    exponents' and, past 100x, the extrapolation's); ``notes`` (one line when a bootstrap was redrawn).
    ``spec``: the study's spec when the caller has it (else read from ``DIR/spec.yaml``);
    ``fitted``: ``fit_study``'s result when already fitted; ``draws``: the bootstrap draws to use
    and keep (default: ``DIR/bootstrap.npz``'s, reporting redraws in ``notes``).
    """
    if not (flops > 0 and math.isfinite(flops)):
        raise ConfigError(f"--flops must be a positive number of training FLOPs, got {flops}")
    spec = spec or load_study_spec(out_dir)
    stored = draws is None
    draws = load_draws(out_dir) if stored else draws
    runs, fit, boot, warns = fitted or fit_study(out_dir, spec, draws=draws)
    to_6nd = six_nd_per_exact(StudyFolder(out_dir).read_runs_rows())
    backtest = backtest_study(runs, spec, fit, draws, to_6nd)["rows"] if with_backtest else None
    out = _prediction(spec, flops, (runs, fit, boot, warns), _parametric_fit(runs, spec.laws, draws), to_6nd, backtest)
    note = draws_note(out_dir, draws) if stored else None
    out["notes"] = [note] if note else []
    return out


def _prediction(
    spec: StudySpec, flops: float, fitted, parametric, to_6nd: float, backtest: list[dict] | None = None
) -> dict:
    """:func:`predict_study`'s answer from what is already fitted: ``fitted`` is :func:`fit_study`'s
    ``(runs, fit, boot, warnings)``, ``parametric`` :func:`_parametric_fit`'s ``(fit, boot)`` or None,
    ``backtest`` the rows to include (None: no ``backtest`` key); ``notes`` is left empty."""
    from ditscale.laws import predict
    from ditscale.laws.residuals import residual_structure

    runs, fit, boot, warns = fitted
    base = base_model_config(spec)
    tpi = tokens_per_image(spec, base)
    members = family_members(spec, float(fit.params_law(flops)), base)
    pred = predict(fit, flops, boot=boot, tokens_per_image=tpi, family=[(m[0], m[1]) for m in members])
    out = {**pred.to_dict(), "nearest": _nearest(spec, base, members, pred.nearest[0]), "tokens_per_image": tpi}
    out["forms"] = prediction_forms(fit, boot, parametric, flops, to_6nd)
    by_form = {f["form"]: f for f in out["forms"]}
    out["loss_law"] = spec.laws.loss_law if spec.laws.loss_law in by_form else "power"
    out["loss_opt"] = by_form[out["loss_law"]]["loss_opt"]
    out["exponents"] = exponent_checks(fit, boot, parametric)
    out["residual_structure"] = residual_structure(runs, spec.laws.budget_rtol).to_dict()
    if backtest is not None:
        out["backtest"] = backtest
    out["warnings"] = list(warns) + [e["message"] for e in out["exponents"] if e["message"]] + list(pred.warnings)
    if out["loss_law"] != spec.laws.loss_law:
        out["warnings"].append(loss_law_fallback(spec.laws.loss_law))
    out["notes"] = []
    return out


def _nearest(spec: StudySpec, base, members, name: str) -> dict:
    """The family member ``name`` as predict shows it (rung, non-embedding and total parameters)."""
    from ditscale.flops import param_counts

    rung = next(m[2] for m in members if m[0] == name)
    counts = param_counts(rung_config(spec, rung, base))
    return {
        "name": name,
        "depth": rung[0],
        "hidden_size": rung[1],
        "num_heads": rung[2],
        "params": int(counts.non_embedding),
        "params_total": int(counts.total),
        "in_ladder": rung in spec.family.ladder(),
    }


def prediction_forms(fit, boot, parametric, flops: float, to_6nd: float = 1.0) -> list[dict]:
    """Every fitted form at ``flops`` FLOPs side by side: ``[{name, n_opt, loss_opt}]`` (each
    ``{value, ci90}``, and ``form``, the :class:`~ditscale.laws.FitConfig` ``loss_law`` that names it)
    for the isoFLOP power law ``e C^f``, the saturating ``E + k C^-gamma`` (N_opt from the same
    ``a C^b``; when fitted) and Approach 3 (``parametric``: ``(fit, boot)`` or None;
    its C = 6ND target is ``flops * to_6nd``)."""
    from ditscale.laws import predict
    from ditscale.laws.fit import LOSS_LAW_NAMES

    preds = {"power": predict(fit, flops, boot=boot)}
    if fit.loss_law_saturating is not None:
        preds["saturating"] = predict(fit, flops, boot=boot, saturating=True)
    if parametric is not None:
        with np.errstate(all="ignore"):
            preds["parametric"] = predict(parametric[0], flops * to_6nd, boot=parametric[1])
    return [
        {"form": form, "name": LOSS_LAW_NAMES[form], "n_opt": p.n_opt.to_dict(), "loss_opt": p.loss_opt.to_dict()}
        for form, p in preds.items()
    ]


def loss_law_fallback(wanted: str) -> str:
    """The warning when ``laws.loss_law`` names a form that could not be fitted."""
    why = (
        "Approach 3 did not converge"
        if wanted == "parametric"
        else "the saturating law was not fitted (needs 4 or more budgets)"
    )
    return f"laws.loss_law is {wanted!r} but {why}: L_opt and its backtest come from the power law e C^f"


def exponent_checks(fit, boot, parametric) -> list[dict]:
    """The allocation and loss exponents' intervals in words (:func:`ditscale.laws.predict.exponent_resolution`):
    the isoFLOP N_opt, D_opt (against the 0.25-width goal) and L_opt (includes 0 only) exponents, and
    Approach 3's N_opt and D_opt exponents (``parametric``: ``(fit, boot)`` or None)."""
    from ditscale.laws.predict import INTERVAL_GOAL, exponent_resolution

    ci = lambda b, name: None if b is None else b.ci90(name)  # noqa: E731
    items = [
        ("N_opt exponent", fit.params_law.exponent, ci(boot, "params_law.exponent"), INTERVAL_GOAL),
        ("D_opt exponent", fit.tokens_law.exponent, ci(boot, "tokens_law.exponent"), INTERVAL_GOAL),
        ("L_opt exponent", fit.loss_law.exponent, ci(boot, "loss_law.exponent"), None),
    ]
    if parametric is not None:
        pfit, pboot = parametric
        for law, what in (("n_opt_law", "N_opt"), ("d_opt_law", "D_opt")):
            exponent = getattr(pfit, law).exponent
            items.append((f"Approach 3 {what} exponent", exponent, ci(pboot, f"{law}.exponent"), INTERVAL_GOAL))
    return [exponent_resolution(name, float(value), interval, goal) for name, value, interval, goal in items]


def _wall(folder: StudyFolder) -> dict:
    """laws.json's ``wall_time``: the study's wall seconds (``wall.json``) and the runs' sums (``runs.csv``)."""
    data = folder.read_wall()
    run_wall = cpu = 0.0
    for row in folder.read_runs_rows():
        run_wall += float(row.get("wall_s") or 0)
        cpu += float(row.get("cpu_s") or 0)
    return {
        "study_s": data.get("total_s"),
        "calls": len(data.get("calls", [])),
        "runs_wall_s_sum": round(run_wall, 1),
        "runs_cpu_s_sum": round(cpu, 1),
    }


def compute_summary(folder: StudyFolder) -> dict:
    """laws.json's ``compute``: what the study's runs cost and how well the machine was used.

    ``grid_flops``: the sum of every finished run's exact training FLOPs (what independent runs
    would train); ``trained_flops``: what was trained (less with shared trunks: each branch's
    shared steps counted once, in its trunk); ``study_s``: wall seconds of all ``study run`` calls,
    less the quality stage;
    ``matmul_peak_flops``: the machine's fp32 matmul FLOP/s measured by those calls (the highest);
    ``study_mfu = trained_flops / (study_s x matmul_peak_flops)`` (None without a measured peak);
    ``quality_s``: wall seconds of the quality stage (sampling and scoring), left out of ``study_s``.
    """
    rows = folder.read_runs_rows()
    grid = sum(float(r["flops"]) for r in rows)
    trunks, shared = folder.trunk_flops()
    trained = grid - sum(float(shared.get(r["run_id"], 0.0)) for r in rows) + trunks
    wall = folder.read_wall()
    peaks = [c["matmul_peak_flops"] for c in wall.get("calls", []) if c.get("matmul_peak_flops")]
    quality_s = sum(c.get("quality_s", 0.0) for c in wall.get("calls", []))
    peak, study_s = (max(peaks) if peaks else None), wall.get("total_s")
    study_s = None if study_s is None else round(study_s - quality_s, 3)
    mfu = trained / (study_s * peak) if (peak and study_s) else None
    return {
        "grid_flops": grid,
        "trained_flops": trained,
        "study_s": study_s,
        "matmul_peak_flops": peak,
        "study_mfu": mfu,
        "quality_s": round(quality_s, 3),
    }


def quality_summary(out_dir: str | Path, spec: StudySpec) -> dict | None:
    """laws.json's ``quality`` (:class:`ditscale.laws.quality.QualityLaws`): the study's scored models
    (``quality.csv``) fitted against compute and loss, backtested on the ``spec.holdout`` largest
    budgets, predicted at ``target_flops``; None when the study scored no models."""
    from ditscale.laws.quality import fit_quality
    from ditscale.study.quality import quality_points

    found = quality_points(out_dir)
    if found is None:
        return None
    metric, points = found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_quality(
            points,
            metric=metric,
            holdout=spec.holdout,
            resamples=spec.laws.resamples,
            seed=spec.laws.seed,
            target_flops=spec.target_flops,
        ).to_dict()


def provenance(spec: StudySpec) -> dict:
    """laws.json's ``provenance``: :func:`ditscale.train.provenance.versions` and the SHA-256 of the
    spec (its canonical JSON), so a result names the code and the spec that produced it."""
    from ditscale.io import sha256_json
    from ditscale.train.provenance import versions

    return {"spec_sha256": sha256_json(spec.to_dict()), **versions()}


def analyze_study(out_dir: str | Path, spec: StudySpec | None = None, *, report: bool = True) -> dict:
    """Fit the finished study in ``out_dir``; write ``laws.json`` (and ``report.html``); return laws.json's dict.

    laws.json keys: ``study``, ``method``, ``params_law`` / ``tokens_law`` / ``loss_law`` (each
    ``coefficient``, ``exponent``, ``ci90``, ``se``), ``loss_law_saturating``, ``budgets`` (per-budget
    optima with ``edge`` / ``degenerate`` flags and ``held_out``), ``checks`` (the isoFLOP point
    checks, ``{budget, kind, message}``; their messages are also in ``warnings``), ``parametric``
    (Approach 3 with ``ci90`` / ``se`` from ``spec.laws.resamples`` resamples, its ``n_opt_law`` /
    ``d_opt_law`` with intervals, its ``prediction`` at ``target_flops`` and its own ``backtest``,
    N_opt included; or null), ``backtest`` (rows ``flops, predicted_loss, predicted_ci90,
    actual_loss, relative_error, within_ci90, predicted_n_opt, predicted_n_opt_ci90, actual_n_opt,
    n_opt_within_ci90, loss_law, forms``: :func:`backtest_study`'s rows of record), ``backtest_fit``,
    ``prediction`` (at the spec's ``target_flops``), ``loss_law_of_record`` (the form the
    prediction's L_opt comes from), ``loss_bend`` (:func:`ditscale.laws.checks.loss_bend`, or null),
    ``noise``, ``paper``, ``warnings``, ``wall_time``,
    ``compute`` (:func:`compute_summary`), ``quality`` (:func:`quality_summary`, or null),
    ``provenance`` (:func:`provenance`: versions, source commit, host, the spec's SHA-256).
    ``wall_time.analysis_s`` is this analysis's own seconds up to writing laws.json (the report's
    figures follow).
    """
    t_start = time.monotonic()
    folder = StudyFolder(out_dir)
    spec = spec or folder.read_spec()
    draws = DrawStore()  # a report redraws every bootstrap (and stores them for predict and compare)
    runs, fit, boot, warns, checks = _fit_and_check(folder, spec, draws=draws)
    laws = {"study": spec.name, **fit.to_dict(boot)}
    laws["checks"] = [c.to_dict() for c in checks]
    to_6nd = six_nd_per_exact(folder.read_runs_rows())
    bt = backtest_study(runs, spec, fit, draws, to_6nd)
    held = {row["flops"] for row in bt["rows"]}
    for b in laws["budgets"]:
        b["held_out"] = b["flops"] in held
    par = _parametric_fit(runs, spec.laws, draws)  # one Approach 3 fit for its summary and the prediction
    laws["parametric"] = parametric_summary(par, runs, spec.laws, spec.target_flops, tokens_per_image(spec), to_6nd)
    if laws["parametric"] is not None:
        laws["parametric"]["backtest"] = bt["forms"].get("parametric", [])
    laws["backtest"] = bt["rows"]
    laws["backtest_fit"] = bt["fit"]
    laws["prediction"] = _prediction(spec, spec.target_flops, (runs, fit, boot, warns), par, to_6nd)
    laws["exponents"] = laws["prediction"]["exponents"]
    laws["residual_structure"] = laws["prediction"]["residual_structure"]
    laws["noise"] = noise_summary(runs)
    laws["paper"] = PAPER_LAWS
    laws["warnings"] = warns + [e["message"] for e in laws["exponents"] if e["message"]]
    _loss_law_record(laws, fit, spec.laws.loss_law)
    laws["wall_time"] = _wall(folder)
    laws["compute"] = compute_summary(folder)
    laws["quality"] = quality_summary(folder.root, spec)
    laws["provenance"] = provenance(spec)
    laws["wall_time"]["analysis_s"] = round(time.monotonic() - t_start, 1)
    write_draws(folder.root, draws)
    folder.write_laws(laws)
    if report:
        from ditscale.report import write_report
        from ditscale.study.quality import sample_rows

        write_report(folder.root, laws, spec, runs=runs, boot=boot, samples=sample_rows(folder.root))
    return laws


def _loss_law_record(laws: dict, fit, wanted: str) -> None:
    """Add laws.json's ``loss_law_of_record`` (the prediction's form) and ``loss_bend`` (of the isoFLOP
    ``fit``), and warn when the power law stood in for the form ``wanted`` (``laws.loss_law``)."""
    from ditscale.laws.checks import loss_bend

    laws["loss_law_of_record"] = laws["prediction"]["loss_law"]
    bend = loss_bend(fit)
    laws["loss_bend"] = None if bend is None else bend.to_dict()
    if {laws["loss_law_of_record"], *(row["loss_law"] for row in laws["backtest"])} != {wanted}:
        laws["warnings"].append(loss_law_fallback(wanted))


def compare_studies(
    dir_a: str | Path,
    dir_b: str | Path,
    *,
    flops: float | None = None,
    spec_a: StudySpec | None = None,
    spec_b: StudySpec | None = None,
) -> dict:
    """Both studies' laws side by side: each coefficient/exponent with its interval, the difference
    a - b with its 90% interval and whether it is resolved (the interval excludes 0), and the loss
    each predicts at ``flops`` FLOPs (JSON-ready). ``spec_a``/``spec_b``: the studies' specs when
    the caller has them (else read from each folder's spec.yaml).

    Each study's intervals are its stored ones (``bootstrap.npz``; redrawn, with a line in
    ``notes``, when they do not match). Draws drawn from the same runs with the same options (a
    study compared with itself or a copy) are the same draws, paired: the difference is exactly 0.
    Otherwise B's draws are paired with A's shifted by half the resamples, so that two studies
    bootstrapped with the same seed are not paired draw for draw (same seed and design would
    correlate their resamples and narrow the difference's interval).
    """
    from ditscale.laws import compare

    spec_a = spec_a or load_study_spec(dir_a)
    spec_b = spec_b or load_study_spec(dir_b)
    draws_a, draws_b = load_draws(dir_a), load_draws(dir_b)
    runs_a, fa, ba, _ = fit_study(dir_a, spec_a, draws=draws_a)
    runs_b, fb, bb, _ = fit_study(dir_b, spec_b, draws=draws_b)
    same = _isoflop_key(runs_a, spec_a) == _isoflop_key(runs_b, spec_b)
    with np.errstate(over="ignore", invalid="ignore"):  # heavy-tailed bootstrap coefficients
        comp = compare(fa, ba, fb, bb if same else _shifted(bb), flops=flops)
    out = comp.to_dict()
    ci = lambda boot, name: None if boot is None else boot.ci90(name)  # noqa: E731
    for d in out["differences"]:
        d["a_ci90"], d["b_ci90"] = ci(ba, d["name"]), ci(bb, d["name"])
    out["a"] = {"dir": str(dir_a), "study": spec_a.name}
    out["b"] = {"dir": str(dir_b), "study": spec_b.name}
    out["notes"] = [n for n in (draws_note(dir_a, draws_a), draws_note(dir_b, draws_b)) if n]
    return out


def _isoflop_key(runs, spec: StudySpec) -> str:
    """The key of a study's isoFLOP bootstrap (:func:`ditscale.laws.draws.draws_key`)."""
    cfg = spec.laws
    return draws_key(cfg.method, runs, cfg.fit_options(), cfg.resamples, cfg.seed)


def _shifted(boot):
    """``boot`` with its resamples rotated by half their number (None stays None)."""
    from ditscale.laws import Bootstrap

    if boot is None:
        return None
    half = boot.n_resamples // 2
    return Bootstrap(boot.method, {k: np.roll(v, half) for k, v in boot.samples.items()}, boot.seed, boot.n_failed)
