"""Fit, backtest and predict from a study folder (numpy/scipy through :mod:`ditscale.laws`).

- :func:`analyze_study` writes ``DIR/laws.json`` (and the report): Approach 2 laws on all budgets
  with bootstrap 90% intervals, the per-budget optima with edge flags, Approach 3 when it
  converges, the backtest (refit without the ``holdout`` largest budgets, predict their
  compute-optimal loss), the measured noise and the wall time.
- :func:`predict_study` answers "what should I train with C FLOPs": N_opt, D_opt (tokens and
  images), loss, each with a 90% interval, and the nearest model of the study's family.
- :func:`compare_studies` puts two studies' laws side by side.

Units: C in training FLOPs, N non-embedding parameters, D image tokens, loss in the runs' val-loss
units; ``relative_error = (predicted - actual) / actual``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import yaml

from ditscale.errors import ConfigError, DataError
from ditscale.io import atomic_write_json
from ditscale.study.spec import PAPER_LAWS, StudySpec, spec_from_dict


def load_study_spec(out_dir: str | Path) -> StudySpec:
    """The spec a study folder was run with (``DIR/spec.yaml``)."""
    path = Path(out_dir) / "spec.yaml"
    if not path.is_file():
        raise DataError(f"{out_dir} is not a study folder (no spec.yaml); give the --out folder of `ditscale study run`")
    return spec_from_dict(yaml.safe_load(path.read_text()))


def load_runs(out_dir: str | Path, *, budgets: list[float] | None = None):
    """The study's ``runs.csv`` as a :class:`ditscale.laws.Runs` (optionally only some budgets)."""
    from ditscale.laws import read_runs_csv

    path = Path(out_dir) / "runs.csv"
    if not path.is_file():
        raise DataError(f"{out_dir} has no runs.csv yet; run `ditscale study run` to finish the study first")
    runs = read_runs_csv(path)
    if budgets is not None:
        runs = runs.take(np.isin(runs.budget, budgets))
    return runs


def complete_budgets(spec: StudySpec, out_dir: Path) -> list[float]:
    """Budgets whose planned runs all have results or failed for good (``plan.csv``, ``runs.csv``)."""
    import csv

    from ditscale.study.run import frozen_runs

    try:
        with open(out_dir / "runs.csv", newline="") as fh:
            finished = {row["run_id"] for row in csv.DictReader(fh)}
    except OSError:
        return []
    finished |= {p.parent.name for p in (out_dir / "runs").glob("*/failed.json")}  # failed for good
    return [b for b, runs in sorted(frozen_runs(out_dir).items()) if all(r.run_id in finished for r in runs)]


def fit_so_far(spec: StudySpec, out_dir: str | Path):
    """Where to centre the next grids, from the study's finished budgets: a function C -> N*
    (non-embedding params; C in FLOPs), or None with fewer than 2 finished budgets.

    Extrapolating a law fitted to two or three noisy budgets can throw a grid far off, so the
    centre is anchored at the best-determined point, the largest finished budget C_last:
    ``N*(C) = N_last * (C / C_last) ** a``. ``N_last`` is the fitted law at C_last when the
    optima are inside their grids (else the best run of that budget), ``a`` the fitted exponent
    once 3 budgets have interior optima and it lies in [0, 1], else the prior's exponent.
    """
    from ditscale.laws import fit_isoflop

    from ditscale.study.run import collect_runs

    out_dir = Path(out_dir)
    collect_runs(out_dir)
    done = complete_budgets(spec, out_dir)
    if len(done) < 2:
        return None
    runs = load_runs(out_dir, budgets=done)
    c_last = max(done)
    last = runs.budget == c_last
    best = float(runs.params[last][np.argmin(runs.loss[last])])
    anchor, exponent = best, spec.prior.exponent
    options = {**spec.laws.fit_options(), "exclude_edge": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_isoflop(runs, **options)
        interior = [b for b in fit.budgets if not (b.edge or b.degenerate)]
        if any(b.flops == c_last for b in interior):
            anchor = float(fit.params_law(c_last))
        if len(interior) >= 3 and 0.0 <= fit.params_law.exponent <= 1.0:
            exponent = fit.params_law.exponent
    except DataError:
        pass
    return lambda c: anchor * (c / c_last) ** exponent


# -- family members for "nearest model" ------------------------------------------------------------
def family_members(spec: StudySpec, up_to_params: float = 0.0) -> list[tuple[str, float, tuple[int, int, int]]]:
    """``(name, non-embedding params, rung)`` of the family; a rule-based family is extended
    (deeper or wider) until a member has at least ``2 * up_to_params`` parameters."""
    from ditscale.flops import param_counts
    from ditscale.study.plan import rung_config

    def member(rung):
        d, w, h = rung
        return (f"d{d}-w{w}-h{h}", float(param_counts(rung_config(spec, rung)).non_embedding), rung)

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


def tokens_per_image(spec: StudySpec) -> int:
    """Image tokens per training image of the family (equal for every rung)."""
    from ditscale.flops import tokens_per_image as tpi
    from ditscale.study.plan import rung_config

    return int(tpi(rung_config(spec, spec.family.ladder()[0])))


# -- noise ----------------------------------------------------------------------------------------
def noise_summary(runs) -> dict:
    """Seed-to-seed spread vs the spread of the isoFLOP residuals, both relative to the loss.

    ``seed_spread``: pooled standard deviation of log loss among seed replicates of one (budget, N)
    (None without replicates). ``residual_spread``: root-mean-square of log-loss residuals of the
    per-budget parabolas (loss vs log N), with 3 parameters per budget taken from the degrees of
    freedom. A ratio near 1 means the isoFLOP curves scatter only as much as the seeds do.
    """
    from ditscale.laws.isoflop import parabola_fit

    label, budget_flops = runs.budgets()
    log_l = np.log(runs.loss)
    # seed replicates
    ss, dof, pairs = 0.0, 0, 0
    keys = {}
    for i in range(len(runs)):
        keys.setdefault((int(label[i]), float(runs.params[i])), []).append(i)
    for idx in keys.values():
        if len(idx) > 1:
            v = log_l[idx]
            ss += float(((v - v.mean()) ** 2).sum())
            dof += len(idx) - 1
            pairs += 1
    seed_spread = math.sqrt(ss / dof) if dof else None
    # parabola residuals (on the per-configuration mean, so replicates do not count twice)
    res_ss, res_dof = 0.0, 0
    per_budget = []
    for b, c in enumerate(budget_flops):
        configs = [(p, np.mean(log_l[idx])) for (bb, p), idx in keys.items() if bb == b]
        if len(configs) < 4:
            per_budget.append({"flops": float(c), "residual_rms": None})
            continue
        x = np.log([p for p, _ in configs])
        y = np.array([v for _, v in configs])
        xs = (x - x.mean()) / max(np.ptp(x), 1e-12)
        coef = parabola_fit(xs, np.exp(y), np.ones((1, len(xs))))[0]
        r = y - np.log(np.maximum(coef[0] + coef[1] * xs + coef[2] * xs * xs, 1e-300))
        res_ss += float((r**2).sum())
        res_dof += len(xs) - 3
        per_budget.append({"flops": float(c), "residual_rms": float(math.sqrt((r**2).sum() / (len(xs) - 3)))})
    residual_spread = math.sqrt(res_ss / res_dof) if res_dof else None
    ratio = residual_spread / seed_spread if (seed_spread and residual_spread is not None) else None
    return {
        "seed_spread": seed_spread, "seed_groups": pairs, "seed_dof": dof,
        "residual_spread": residual_spread, "residual_dof": res_dof, "residual_to_seed_ratio": ratio,
        "per_budget": per_budget,
        "units": "standard deviation of log(loss), i.e. relative spread of the loss",
    }


# -- fits -------------------------------------------------------------------------------------------
def fit_study(out_dir: str | Path, spec: StudySpec | None = None, *, seed_offset: int = 0):
    """Approach 2 fit of all budgets (options: ``spec.laws``) with its bootstrap.

    Returns ``(runs, fit, boot, warnings)``; ``boot`` is None with ``laws.bootstrap: 0``.
    """
    from ditscale.laws import bootstrap, fit_isoflop

    spec = spec or load_study_spec(out_dir)
    cfg = spec.laws
    runs = load_runs(out_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_isoflop(runs, **cfg.fit_options())
        boot = bootstrap(runs, fit, cfg.resamples, cfg.seed + seed_offset) if cfg.resamples else None
    return runs, fit, boot, sorted({str(w.message) for w in caught})


def backtest_study(runs, spec: StudySpec, fit=None) -> dict:
    """Refit without the ``spec.holdout`` largest budgets and predict their compute-optimal loss.

    ``fit`` is the study's isoFLOP fit of all runs (``fit_study``), which gives the held-out
    budgets' actual L*; it is refitted when not given. Returns ``{"rows": [{flops,
    predicted_loss, predicted_ci90, actual_loss, relative_error, within_ci90}], "fit": the
    refit's laws (JSON shape), "budgets": fitted budget FLOPs}``.
    """
    from ditscale.laws import bootstrap, fit_isoflop, predict
    from ditscale.laws.predict import backtest_rows, holdout_split

    cfg, holdout = spec.laws, spec.holdout
    budget_flops = [float(c) for c in runs.budgets(cfg.budget_rtol)[1]]
    if holdout < 1:
        return {"rows": [], "fit": None, "budgets": budget_flops}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sub, held_flops = holdout_split(runs, holdout, cfg.budget_rtol)
        refit = fit_isoflop(sub, **cfg.fit_options())
        boot = bootstrap(sub, refit, cfg.resamples, cfg.seed) if cfg.resamples else None
        rows = backtest_rows(refit, fit if fit is not None else fit_isoflop(runs, **cfg.fit_options()), held_flops)
    out = []
    for row in rows:
        est = predict(refit, row.flops, boot=boot).loss_opt
        out.append({**row.to_dict(), "predicted_ci90": est.ci90,
                    "within_ci90": None if est.ci90 is None else bool(est.ci90[0] <= row.actual_loss <= est.ci90[1])})
    return {"rows": out, "fit": refit.to_dict(boot), "budgets": budget_flops[: len(budget_flops) - holdout]}


def parametric_summary(runs) -> dict | None:
    """Approach 3 (``L = E + A/N^alpha + B/D^beta``) as JSON, or None if it does not converge."""
    from ditscale.laws import fit_parametric

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_parametric(runs)
    except (DataError, ValueError, FloatingPointError):
        return None
    out = fit.to_dict()
    return out if all(math.isfinite(out.get(k, float("nan"))) for k in ("E", "A", "B", "alpha", "beta")) else None


def predict_study(out_dir: str | Path, flops: float, *, fitted=None, with_backtest: bool = True) -> dict:
    """Compute-optimal model at ``flops`` training FLOPs from the study in ``out_dir`` (JSON-ready).

    Keys: ``flops``; ``n_opt`` (non-embedding params), ``d_opt`` (tokens), ``images_opt`` (images),
    ``loss_opt``, each ``{"value", "ci90"}``; ``nearest`` (the family member nearest N_opt:
    name, depth, hidden_size, num_heads, params, params_total, in_ladder); ``tokens_per_image``;
    ``backtest`` (see :func:`backtest_study`; unless ``with_backtest`` is False); ``warnings``.
    """
    from ditscale.flops import param_counts
    from ditscale.laws import predict
    from ditscale.study.plan import rung_config

    if not (flops > 0 and math.isfinite(flops)):
        raise ConfigError(f"--flops must be a positive number of training FLOPs, got {flops}")
    spec = load_study_spec(out_dir)
    runs, fit, boot, warns = fitted or fit_study(out_dir, spec)
    tpi = tokens_per_image(spec)
    n_point = float(fit.params_law(flops))
    members = family_members(spec, n_point)
    pred = predict(fit, flops, boot=boot, tokens_per_image=tpi, family=[(m[0], m[1]) for m in members])
    out = pred.to_dict()
    name = pred.nearest[0]
    rung = next(m[2] for m in members if m[0] == name)
    cfg = rung_config(spec, rung)
    out["nearest"] = {"name": name, "depth": rung[0], "hidden_size": rung[1], "num_heads": rung[2],
                      "params": int(param_counts(cfg).non_embedding), "params_total": int(param_counts(cfg).total),
                      "in_ladder": rung in spec.family.ladder()}
    out["tokens_per_image"] = tpi
    if with_backtest:
        out["backtest"] = backtest_study(runs, spec, fit)["rows"]
    out["warnings"] = warns
    return out


def _wall(out_dir: Path) -> dict:
    try:
        data = json.loads((out_dir / "wall.json").read_text())
    except (OSError, ValueError):
        data = {}
    import csv

    run_wall = cpu = 0.0
    with open(out_dir / "runs.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            run_wall += float(row.get("wall_s") or 0)
            cpu += float(row.get("cpu_s") or 0)
    return {"study_s": data.get("total_s"), "calls": len(data.get("calls", [])),
            "runs_wall_s_sum": round(run_wall, 1), "runs_cpu_s_sum": round(cpu, 1)}


def analyze_study(out_dir: str | Path, spec: StudySpec | None = None, *, report: bool = True) -> dict:
    """Fit the finished study in ``out_dir``; write ``laws.json`` (and ``report.html``); return laws.json's dict.

    laws.json keys: ``study``, ``method``, ``params_law`` / ``tokens_law`` / ``loss_law`` (each
    ``coefficient``, ``exponent``, ``ci90``, ``se``), ``loss_law_saturating``, ``budgets`` (per-budget
    optima with ``edge`` / ``degenerate`` flags and ``held_out``), ``parametric`` (Approach 3 or
    null), ``backtest`` (rows ``flops, predicted_loss, predicted_ci90, actual_loss, relative_error``),
    ``backtest_fit``, ``prediction`` (at the spec's ``target_flops``), ``noise``, ``paper``,
    ``warnings``, ``wall_time``.
    """
    out_dir = Path(out_dir)
    spec = spec or load_study_spec(out_dir)
    runs, fit, boot, warns = fit_study(out_dir, spec)
    laws = {"study": spec.name, **fit.to_dict(boot)}
    bt = backtest_study(runs, spec, fit)
    held = {row["flops"] for row in bt["rows"]}
    for b in laws["budgets"]:
        b["held_out"] = b["flops"] in held
    laws["parametric"] = parametric_summary(runs)
    laws["backtest"] = bt["rows"]
    laws["backtest_fit"] = bt["fit"]
    laws["prediction"] = predict_study(out_dir, spec.target_flops, fitted=(runs, fit, boot, warns), with_backtest=False)
    laws["noise"] = noise_summary(runs)
    laws["paper"] = PAPER_LAWS
    laws["warnings"] = warns
    laws["wall_time"] = _wall(out_dir)
    atomic_write_json(out_dir / "laws.json", laws)
    if report:
        from ditscale.report import write_report

        write_report(out_dir, laws, spec, runs=runs, boot=boot)
    return laws


def compare_studies(dir_a: str | Path, dir_b: str | Path, *, flops: float | None = None) -> dict:
    """Both studies' laws side by side: each coefficient/exponent with its interval, the difference
    a - b with its 90% interval and whether it is resolved (the interval excludes 0), and the loss
    each predicts at ``flops`` FLOPs (JSON-ready)."""
    from ditscale.laws import compare

    _, fa, ba, _ = fit_study(dir_a)
    _, fb, bb, _ = fit_study(dir_b, seed_offset=1)  # independent bootstraps, also for a study compared with itself
    with np.errstate(over="ignore", invalid="ignore"):  # heavy-tailed bootstrap coefficients
        comp = compare(fa, ba, fb, bb, flops=flops)
    out = comp.to_dict()
    ci = lambda boot, name: None if boot is None else boot.ci90(name)  # noqa: E731
    for d in out["differences"]:
        d["a_ci90"], d["b_ci90"] = ci(ba, d["name"]), ci(bb, d["name"])
    out["a"] = {"dir": str(dir_a), "study": load_study_spec(dir_a).name}
    out["b"] = {"dir": str(dir_b), "study": load_study_spec(dir_b).name}
    return out
