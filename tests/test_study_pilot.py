"""A pilot that places a study on its own data (issue 23 item 3): the placement arithmetic on
synthetic pilot losses, and a tiny pilot end to end (rounds, resume, cost, the placed spec)."""

from __future__ import annotations

import json
import math

import pytest
from test_study_run import MICRO, micro_spec

from ditscale.cli import main
from ditscale.study import plan_study
from ditscale.study.analyze import compute_summary
from ditscale.study.folder import StudyFolder
from ditscale.study.pilot import candidate_sizes, placed_spec, round_spec, run_pilot
from ditscale.study.placement import (
    BudgetOptimum,
    budget_optimum,
    first_round,
    narrower_rungs,
    next_round,
    place,
    trained_flops,
)

# The starter's ladder on 32x32 RGB images (patch 4) with the narrower rungs: (rung, non-embedding N),
# as ditscale.study.pilot.candidate_sizes gives them (checked against it in the end-to-end test's spec).
LADDER = [
    ((2, 8, 1), 1760),
    ((2, 16, 1), 6592),
    ((2, 24, 1), 14496),
    ((2, 32, 1), 25472),
    ((2, 40, 1), 39520),
    ((2, 48, 2), 56640),
    ((2, 56, 2), 76832),
    ((2, 64, 2), 100096),
    ((2, 96, 3), 223872),
    ((2, 128, 4), 396800),
    ((2, 160, 5), 618880),
    ((2, 192, 6), 890112),
    ((2, 224, 7), 1210496),
    ((2, 256, 8), 1580032),
]
LOG_N = [math.log(n) for _, n in LADDER]
BUDGETS = [1.6e11, 3.2e11, 6.4e11, 1.28e12, 2.56e12]  # the starter's, at 32 px


def test_narrower_rungs_keep_the_depth_and_about_the_head_width():
    assert narrower_rungs((2, 64, 2)) == [r for r, _ in LADDER[:7]]
    assert narrower_rungs((3, 20, 2)) == [(3, 12, 1)]  # widths of multiples of 4 only (the sin-cos embedding)
    assert narrower_rungs((2, 8, 1)) == []


def test_the_rounds_follow_the_falling_loss_past_the_edge():
    # round 1: the prior's optimum (2.2e5: width 96) and 4x below and above it
    assert first_round(LOG_N, 2.2e5) == [5, 8, 11]  # widths 48, 96, 192
    losses = {56640: 0.20, 223872: 0.23, 890112: 0.39}  # the loss rises with N: the optimum is below
    low = budget_optimum(3.2e11, list(losses.items()))
    assert (low.n_opt, low.edge) == (56640.0, "below")
    # round 2: 2x, 4x, 8x below the smallest size trained: 2.8e4, 1.4e4, 7.1e3 -> widths 32, 24, 16
    assert next_round(LOG_N, {5, 8, 11}, [low]) == [1, 2, 3]
    # round 3: widths 16-32 lost to 48 at both budgets: no lowest loss at an edge; refine halfway (in log N)
    # between each lowest loss and its trained neighbours, the largest budget first: 96 -> 64 and 128, then 48 -> 40
    small = {6592: 0.50, 14496: 0.42, 25472: 0.37, 56640: 0.347, 223872: 0.419, 890112: 1.067}
    large = {6592: 0.45, 14496: 0.38, 25472: 0.33, 56640: 0.302, 223872: 0.291, 890112: 0.764}
    optima = [budget_optimum(1.6e11, list(small.items())), budget_optimum(3.2e11, list(large.items()))]
    assert [o.edge for o in optima] == [None, None]
    assert next_round(LOG_N, {1, 2, 3, 5, 8, 11}, optima) == [4, 7, 9]
    # every neighbour of the lowest losses trained: nothing left to learn
    assert next_round(LOG_N, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, optima) == []
    # at the narrowest size with nothing beyond it: refine above it; at the top, pad to 3 sizes
    floor = budget_optimum(3.2e11, [(1760, 0.2), (14496, 0.3), (56640, 0.4)])
    assert next_round(LOG_N, {0, 2, 5}, [floor]) == [1, 3, 4]
    high = BudgetOptimum(3.2e11, 890112.0, "above", ((223872, 0.3), (890112, 0.2)))
    assert next_round(LOG_N, {5, 8, 11}, [high]) == [10, 12, 13]


def test_a_budget_optimum_is_the_vertex_of_the_parabola_through_the_lowest_loss():
    # loss = 0.1 + (ln N - ln 3e4)^2 / 10 at 1e4, 2e4, 5e4, 1e5: the vertex 3e4, exactly
    pts = [(n, 0.1 + (math.log(n) - math.log(3e4)) ** 2 / 10) for n in (1e4, 2e4, 5e4, 1e5)]
    opt = budget_optimum(6.4e11, pts)
    assert opt.edge is None and opt.n_opt == pytest.approx(3e4, rel=1e-9)
    assert budget_optimum(6.4e11, [(1e4, 0.3), (2e4, 0.2)]).edge == "above"
    with pytest.raises(ValueError, match="1 pilot point"):
        budget_optimum(6.4e11, [(1e4, 0.3)])


def test_optima_below_the_ladder_move_the_prior_and_the_rungs_down():
    """The own-data case: the ladder's prior (0.0781 C^0.5681, 4e5 at 6.4e11) put every grid above the
    optimum; the pilot's optima (2.5e4 and 3.5e4, inside the sizes it trained) give the prior through
    both (its exponent measured between them) and rungs from width 16."""
    optima = [BudgetOptimum(1.6e11, 2.5e4, None, ()), BudgetOptimum(3.2e11, 3.5e4, None, ())]
    p = place(optima, LADDER, BUDGETS, span=6, exponent=0.5681, models=5)
    assert p.exponent_source == "pilot" and p.prior.exponent == float(f"{math.log(1.4) / math.log(2):.3g}") == 0.485
    log_k = (math.log(2.5e4) + math.log(3.5e4) - 0.485 * (math.log(1.6e11) + math.log(3.2e11))) / 2
    assert p.prior.coefficient == float(f"{math.exp(log_k):.3g}") == 0.092
    assert p.prior.n_opt(1.6e11) == pytest.approx(2.5e4, rel=5e-3) and p.prior.n_opt(3.2e11) == pytest.approx(
        3.5e4, rel=5e-3
    )
    # grids reach N_opt(1.6e11) / sqrt(6) = 1.0e4 .. N_opt(2.56e12) * sqrt(6) = 2.3e5: widths 16 to 128
    assert p.rungs == tuple(r for r, _ in LADDER[1:10])
    assert p.warnings == ()
    # a falling optimum (noise) is held inside EXPONENT_RANGE: 0.1
    falling = [BudgetOptimum(1.6e11, 1e5, None, ()), BudgetOptimum(3.2e11, 9e4, None, ())]
    assert place(falling, LADDER, BUDGETS, 6, 0.5681, 5).prior.exponent == 0.1


def test_an_optimum_at_the_narrowest_rung_is_a_bound_and_says_so():
    optima = [BudgetOptimum(1.6e11, 1760.0, "below", ()), BudgetOptimum(3.2e11, 6592.0, None, ())]
    p = place(optima, LADDER, BUDGETS, span=6, exponent=0.5681, models=5)
    assert (p.prior.exponent, p.exponent_source) == (0.5681, "spec")  # a bound measures no exponent
    assert p.rungs == tuple(r for r, _ in LADDER[:5])  # from the narrowest, at least 5 rungs
    (warning,) = p.warnings
    assert warning.startswith("pilot budget 1.6e11: the lowest loss is at the smallest size trained (N=1.76e+03)")
    assert "the narrowest the pilot builds" in warning
    top = place([BudgetOptimum(3.2e11, 1580032.0, "above", ())], LADDER, BUDGETS, 6, 0.5681, 5)
    assert top.rungs == tuple(r for r, _ in LADDER[9:])
    assert any("add wider rungs" in w for w in top.warnings)


MICRO_FAMILY = {  # widths 32..48; the pilot adds 8, 16 and 24 below
    "widths": [32, 40, 48],
    "depth": 1,
    "head_dim": 8,
    "model": {"patch_size": 2, "block": "in_context", "learn_sigma": False},
}


def test_a_tiny_pilot_places_the_study_and_resumes_without_training(tmp_path):
    hparams = {**MICRO["hparams"], "schedule": "wsd", "warmup_steps": 2}  # shared trunks need both
    spec = micro_spec(
        family=MICRO_FAMILY, prior={"coefficient": 2.0, "exponent": 0.5}, share_trunks=True, hparams=hparams
    )
    sizes = candidate_sizes(spec)
    assert [s.rung[1] for s in sizes] == [8, 16, 24, 32, 40, 48]
    out = tmp_path / "pilot"
    pilot = run_pilot(spec, out, workers=0, progress=False, echo=lambda m: None)
    # every point is a finished run of a round folder; round 2 exists exactly when round 1's optimum was at an edge
    first = {r.rung for runs in StudyFolder(out / "round1").read_plan().values() for r in runs}
    round1 = [p for p in pilot.points if p.rung in first]
    assert len(round1) == 6 and {p.budget for p in round1} == {1e8, 2e8}
    optima1 = [budget_optimum(b, [(p.n, p.loss) for p in round1 if p.budget == b]) for b in (1e8, 2e8)]
    log_n = [math.log(s.non_embedding) for s in sizes]
    tried = {i for i, s in enumerate(sizes) if s.rung in first}
    assert (out / "round2").is_dir() == bool(next_round(log_n, tried, optima1))
    assert pilot.rounds == 1 + (out / "round2").is_dir()
    # the placement is place() of the pilot's own optima
    optima = [budget_optimum(b, [(p.n, p.loss) for p in pilot.points if p.budget == b]) for b in (1e8, 2e8)]
    again = place(optima, [(s.rung, s.non_embedding) for s in sizes], spec.budgets, spec.span, 0.5, 3)
    assert pilot.placement == again
    # its cost: the rounds' trained FLOPs (trunks counted once), which the plan's estimate matches
    rounds = [StudyFolder(out / f"round{k}") for k in range(1, pilot.rounds + 1)]
    assert pilot.flops == sum(compute_summary(f)["trained_flops"] for f in rounds)
    assert pilot.wall_s == sum(compute_summary(f)["study_s"] for f in rounds) > 0
    spec1 = round_spec(spec, [s for s in sizes if s.rung in first], [1e8, 2e8], 1)
    estimate = trained_flops(plan_study(spec1).runs, True, spec.hparams.cooldown_frac)
    assert estimate == pytest.approx(compute_summary(rounds[0])["trained_flops"], rel=0.05)  # runs of ~20 steps
    assert pilot.study_flops == trained_flops(plan_study(placed_spec(spec, pilot.placement)).runs, True, 0.2)
    assert json.loads((out / "pilot.json").read_text())["prior"]["coefficient"] == pilot.placement.prior.coefficient
    # run again: every round is done, nothing trains, the same placement
    before = {p: p.stat().st_mtime_ns for p in out.glob("round*/runs/*/result.json")}
    assert run_pilot(spec, out, workers=0, progress=False, echo=lambda m: None).placement == pilot.placement
    assert {p: p.stat().st_mtime_ns for p in out.glob("round*/runs/*/result.json")} == before


def test_init_pilot_refuses_a_pilot_folder_inside_the_images_before_anything_trains(own_images, tmp_path, capsys):
    inside = own_images / "pilot"
    argv = [
        "study",
        "init",
        "--data",
        "folder",
        "--path",
        str(own_images),
        "--out",
        str(tmp_path / "s.yaml"),
        "--pilot",
    ]
    assert main([*argv, "--pilot-dir", str(inside)]) == 2
    assert "--pilot-dir" in capsys.readouterr().err and not inside.exists() and not (tmp_path / "s.yaml").exists()
    # the default pilot folder is the spec's name plus -pilot, beside it: an existing spec is refused first
    (tmp_path / "s.yaml").write_text("name: x\n")
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err and not (tmp_path / "s-pilot").exists()
