"""``DIR/report.html``: one self-contained page (PNG figures base64-embedded, also saved next to it)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from ditscale.io import atomic_write_text


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


def render_html(laws: dict, figures: list[tuple[Path, str]], *, title: str) -> str:
    """The report page for ``laws`` (the laws.json dict) with ``(png, caption)`` figures embedded."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    pred = laws.get("prediction") or {}
    # headline
    bt = laws.get("backtest") or []
    if pred:
        near = pred.get("nearest") or {}
        parts.append("<h2>Compute-optimal model at the target budget</h2>")
        parts.append(_table(
            ["quantity", "value", "90% interval"],
            [["target compute C (FLOPs)", _num(pred.get("flops"), ".3g"), ""],
             ["N_opt (non-embedding params)", _num(pred["n_opt"]["value"], ".4g"), _ci(pred["n_opt"]["ci90"])],
             ["D_opt (image tokens)", _num(pred["d_opt"]["value"], ".4g"), _ci(pred["d_opt"]["ci90"])],
             ["D_opt (images)", _num((pred.get("images_opt") or {}).get("value"), ".4g"),
              _ci((pred.get("images_opt") or {}).get("ci90"))],
             ["L_opt (validation loss)", _num(pred["loss_opt"]["value"], ".4f"), _ci(pred["loss_opt"]["ci90"], ".4f")],
             ["nearest family model", html.escape(f"{near.get('name', '–')} ({_num(near.get('params'), ',')} params)"), ""]]))
    if bt:
        parts.append("<h2>Backtest: refit without the held-out budget(s)</h2>")
        rows = []
        for r in bt:
            err = r["relative_error"]
            cls = "ok" if abs(err) <= 0.02 else "bad"
            rows.append([_num(r["flops"], ".3g"), _num(r["predicted_loss"], ".4f"), _ci(r.get("predicted_ci90"), ".4f"),
                         _num(r["actual_loss"], ".4f"), f"<span class='{cls}'>{err:+.2%}</span>"])
        parts.append(_table(["held-out C (FLOPs)", "predicted L*", "90% interval", "actual L*", "relative error"], rows))
    # laws vs paper
    parts.append("<h2>Fitted laws vs Liang et al. (2026)</h2>")
    paper = laws.get("paper") or {}
    rows = []
    for law, what in (("params_law", "N_opt = a C^b (params)"), ("tokens_law", "D_opt = c C^d (tokens)"),
                      ("loss_law", "L_opt = e C^f")):
        f = laws.get(law) or {}
        ci = f.get("ci90") or {}
        p = paper.get(law) or {}
        bf = (laws.get("backtest_fit") or {}).get(law) or {}
        rows.append([what, _num(f.get("coefficient"), ".4g"), _ci(ci.get("coefficient")), _num(f.get("exponent"), ".4f"),
                     _ci(ci.get("exponent"), ".4f"), _num(bf.get("exponent"), ".4f"),
                     _num(p.get("coefficient"), ".4g"), _num(p.get("exponent"), ".4f")])
    parts.append(_table(["law", "coefficient", "90% CI", "exponent", "90% CI", "exponent (backtest refit)",
                         "paper coefficient", "paper exponent"], rows))
    parts.append("<p class='muted'>Paper: in-context DiTs with rectified flow on latent images, isoFLOP budgets "
                 "1e17–6e18 FLOPs, Approach 2, no intervals. Coefficients depend on data, tokenisation and the "
                 "loss, so only the exponents are comparable.</p>")
    for png, caption in figures:
        parts.append(_img(png, caption))
    # per-budget
    parts.append("<h2>Per-budget optima</h2>")
    rows = [[_num(b["flops"], ".3g"), str(b["n_runs"]), _num(b["n_opt"], ".4g"), _num(b["d_opt"], ".4g"),
             _num(b["loss_opt"], ".4f"), "yes" if b.get("edge") else "no", "yes" if b.get("degenerate") else "no",
             "yes" if b.get("held_out") else "no"] for b in laws.get("budgets", [])]
    parts.append(_table(["C (FLOPs)", "runs", "N*", "D* (tokens)", "L*", "edge", "degenerate", "held out"], rows))
    noise = laws.get("noise") or {}
    parts.append("<h2>Noise</h2>")
    ratio = noise.get("residual_to_seed_ratio")
    parts.append(_table(["measure", "value"], [
        ["seed-to-seed spread of the loss (std of log L)", _num(noise.get("seed_spread"), ".3%") if noise.get("seed_spread") else "–"],
        ["replicated configurations", str(noise.get("seed_groups", 0))],
        ["isoFLOP parabola residuals (rms of log L)", _num(noise.get("residual_spread"), ".3%") if noise.get("residual_spread") else "–"],
        ["residual / seed spread", _num(ratio, ".2f")]]))
    sat = laws.get("loss_law_saturating")
    par = laws.get("parametric")
    parts.append("<h2>Other fits</h2>")
    rows = [["saturating loss L = E + k C^-gamma",
             "–" if not sat else f"E={_num(sat['E'])}, k={_num(sat['k'])}, gamma={_num(sat['gamma'])}"],
            ["Approach 3 L = E + A/N^alpha + B/D^beta",
             "did not converge" if not par else
             f"E={_num(par['E'])}, A={_num(par['A'])}, B={_num(par['B'])}, alpha={_num(par['alpha'])}, beta={_num(par['beta'])}"]]
    parts.append(_table(["fit", "values"], rows))
    wall = laws.get("wall_time") or {}
    parts.append(f"<p class='muted'>Study wall time {_num(wall.get('study_s'), '.0f')} s over {wall.get('calls', 0)} "
                 f"call(s); sum of run wall times {_num(wall.get('runs_wall_s_sum'), '.0f')} s, run CPU time "
                 f"{_num(wall.get('runs_cpu_s_sum'), '.0f')} s. {laws.get('n_runs', '')} runs.</p>")
    for w in laws.get("warnings") or []:
        parts.append(f"<p class='muted'>warning: {html.escape(w)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: str | Path, laws: dict, figures: list[tuple[Path, str]], *, title: str) -> Path:
    """Write the report page atomically; returns ``path``."""
    atomic_write_text(path, render_html(laws, figures, title=title))
    return Path(path)
