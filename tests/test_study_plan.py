"""Study plan: hand-checked FLOPs/steps, grids centred on the predicted optimum, warnings."""

from __future__ import annotations

import json
import math

import pytest

from ditscale.cli import main
from ditscale.study.plan import choose_grid, fmt_flops, plan_study, run_id_for

from test_study_spec import spec_with

# One rung by hand: in-context DiT, depth 1, width d=16, 2 heads, patch 2 on 8x8x3 "shapes" images,
# 6 classes, no learned sigma. T = (8/2)^2 = 16 image tokens; in-context adds 2 (timestep, class): S = 18.
T, S, D, H = 16, 18, 16, 64
ATTN_PROJ = 4 * T * D * D  # qkv + out over the image tokens: 16,384
ATTN_SCORES = 2 * T * T * D  # QK^T and AV: 8,192
MLP = 2 * T * D * H  # fc1 + fc2: 32,768
BLOCK_S = 4 * S * D * D + 2 * S * S * D + 2 * S * D * H  # the same block over 18 tokens: 65,664
CONDITIONING = BLOCK_S - (ATTN_PROJ + ATTN_SCORES + MLP)  # 8,320
EMBED = T * 3 * 2 * 2 * D + 256 * D + D * D  # patch conv + timestep MLP: 7,424
FINAL = T * D * 2 * 2 * 3  # 3,072
NORM = 2 * S * D + T * D  # two LayerNorms per block over S tokens + the final one: 832
MACS = ATTN_PROJ + ATTN_SCORES + MLP + CONDITIONING + EMBED + FINAL + NORM  # 76,992 MACs / image
N_NON_EMB = (4 * D * D + 4 * D) + (2 * D * H + H + D) + (2 * 1 + 1) * 2 * D  # attn + mlp + 3 affine LNs: 3,312


def test_one_row_by_hand():
    assert MACS == 76_992 and N_NON_EMB == 3_312
    spec = spec_with(
        budgets=[1e9, 2e9, 4e9],
        prior={"coefficient": 3312 / 1e9**0.5, "exponent": 0.5},
        hparams={"batch_size": 8, "lr": 1e-3, "base_width": 32, "warmup_fraction": 0.1},
    )
    row = next(r for r in plan_study(spec).runs if r.run_id == "c1e9-d1w16h2-s0")
    images = 2164  # floor(1e9 / (6 * 76,992)) : 2164 * 461,952 = 999,664,128 <= 1e9 < 2165 * 461,952
    assert row.macs_per_image == MACS
    assert row.params_non_embedding == N_NON_EMB
    assert row.images == images
    assert row.tokens == images * T == 34_624
    assert row.steps == 271  # ceil(2164 / 8): 270 full batches and one of 4 images
    assert row.batch_size == 8
    assert row.warmup_steps == 27  # round(0.1 * 271)
    assert row.lr == pytest.approx(1e-3 * 32 / 16)  # inverse width rule
    assert row.flops_exact == 6 * MACS * images == 999_664_128
    assert row.flops_6nd == 6 * N_NON_EMB * T * images == 688_048_128
    assert row.flops_ratio == pytest.approx(999_664_128 / 688_048_128, abs=1e-6)
    assert row.n_opt == pytest.approx(3312.0) and row.centre == "prior"


def test_choose_grid_takes_the_rungs_nearest_evenly_spaced_log_points():
    sizes = [math.log(n) for n in (1, 2, 4, 8, 16, 32, 64)]
    # centre 8, span 16 -> points 2, 4, 8, 16, 32 (in N)
    assert choose_grid(sizes, math.log(8), 5, math.log(16)) == [1, 2, 3, 4, 5]
    # centre 8, span 4 with 3 points -> 4, 8, 16
    assert choose_grid(sizes, math.log(8), 3, math.log(4)) == [2, 3, 4]
    # a centre beyond the ladder keeps distinct rungs at the top
    assert choose_grid(sizes, math.log(1000), 3, math.log(4)) == [4, 5, 6]


def test_grid_brackets_the_prior_optimum_and_moves_with_the_budget():
    widths = [8, 16, 24, 32, 40, 48, 56, 64, 80, 96]
    spec = spec_with(
        family={
            "widths": widths,
            "depth": 1,
            "head_dim": 8,
            "model": {"patch_size": 2, "block": "in_context", "learn_sigma": False},
        },
        budgets=[1e10, 4e10, 1.6e11],
        models_per_budget=5,
        span=8,
        prior={"coefficient": 12_000 / 1e10**0.5, "exponent": 0.5},
    )
    plan = plan_study(spec)
    assert plan.warnings == []
    for budget, runs in plan.by_budget().items():
        n_star = 12_000 * (budget / 1e10) ** 0.5  # 12k, 24k, 48k
        sizes = sorted(r.params_non_embedding for r in runs)
        assert len(sizes) == 5
        assert sizes[0] < n_star < sizes[-1]
        assert sizes[-1] / sizes[0] == pytest.approx(8, rel=0.6)
        # the middle run is the rung nearest the optimum in log N
        assert abs(math.log(sizes[2] / n_star)) < 0.35
        assert all(r.n_opt == pytest.approx(n_star) for r in runs)
    mids = [sorted(r.params_non_embedding for r in runs)[2] for runs in plan.by_budget().values()]
    assert mids[0] < mids[1] < mids[2]


def test_warnings_when_the_grid_cannot_bracket_the_optimum():
    low = plan_study(spec_with(prior={"coefficient": 10.0 / 1e9**0.5, "exponent": 0.5}))
    assert any("below the grid" in w and "smallest model of the family is too big" in w for w in low.warnings)
    high = plan_study(spec_with(prior={"coefficient": 1e6 / 1e9**0.5, "exponent": 0.5}))
    assert any("above the grid" in w and "largest model of the family is too small" in w for w in high.warnings)


def test_runs_with_too_few_steps_are_dropped_and_reported():
    spec = spec_with(min_steps=150, hparams={"batch_size": 8}, prior={"coefficient": 5000 / 1e9**0.5, "exponent": 0.5})
    plan = plan_study(spec)
    dropped = {r.run_id: r.steps for r in plan.dropped}
    assert dropped and all(steps < 150 for steps in dropped.values())
    assert all(r.steps >= 150 for r in plan.runs)
    assert any("dropped" in w and "min_steps=150" in w for w in plan.warnings)


def test_repeat_adds_seed_replicates_of_the_smallest_budgets():
    plan = plan_study(spec_with(repeat={"budgets": 1, "seeds": [7]}))
    repeats = [r for r in plan.runs if r.role == "repeat"]
    assert {r.budget for r in repeats} == {1e9} and {r.seed for r in repeats} == {7}
    grid = {(r.depth, r.hidden_size) for r in plan.runs if r.budget == 1e9 and r.role == "grid"}
    assert {(r.depth, r.hidden_size) for r in repeats} == grid


def test_ids_and_labels():
    assert fmt_flops(3e11) == "3e11" and fmt_flops(1.5e12) == "1.5e12" and fmt_flops(9.999e9) == "1e10"
    assert run_id_for(2e9, (1, 16, 2), 3) == "c2e9-d1w16h2-s3"


def test_cli_plan_json_and_csv(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    import yaml

    from test_study_spec import BASE

    path.write_text(yaml.safe_dump(BASE))
    assert main(["study", "plan", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["runs"]) == 9 and {"run_id", "flops_exact", "flops_6nd", "flops_ratio", "steps"} <= set(
        data["runs"][0]
    )
    assert main(["study", "plan", str(path), "--csv", "--set", "models_per_budget=4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("run_id,budget,") and len(lines) == 1 + 12
    assert main(["study", "plan", str(path), "--set", "models_per_budget=2"]) == 2
    assert "models_per_budget is 2" in capsys.readouterr().err


def test_repeat_can_be_limited_to_the_models_nearest_the_optimum():
    spec = spec_with(
        family={
            "widths": [8, 16, 24, 32, 40],
            "depth": 1,
            "head_dim": 8,
            "model": {"patch_size": 2, "block": "in_context", "learn_sigma": False},
        },
        models_per_budget=5,
        repeat={"budgets": 2, "models": 1, "seeds": [5]},
        prior={"coefficient": 9000 / 1e9**0.5, "exponent": 0.5},
    )
    plan = plan_study(spec)
    repeats = [r for r in plan.runs if r.role == "repeat"]
    # one replicate in each of the 2 smallest budgets: the rung nearest N* in log N. Non-embedding
    # params at depth 1: width 24 -> 7,272, width 32 -> 12,768. N* = 9,000 at 1e9 (nearest: 24),
    # 9,000 * sqrt(2) = 12,728 at 2e9 (nearest: 32).
    assert [(r.budget, r.hidden_size, r.seed) for r in repeats] == [(1e9, 24, 5), (2e9, 32, 5)]
