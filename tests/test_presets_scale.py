"""Paper-scale presets: the liang2024 study and the dit-xl2 training run, their plans and GPU-hours.

Nothing trains here: the plans read only a latent store's meta.json (written by the tests), and the
GPU-hour figures are checked against a hand computation from the FLOPs.
"""

from __future__ import annotations

import json
import math
import shlex

import pytest

from ditscale.cli import build_parser, main
from ditscale.errors import ConfigError
from ditscale.flops import (
    DEFAULT_GPU,
    DEFAULT_MFU,
    GPU_BF16_PEAK_FLOPS,
    forward_macs,
    gpu_hours,
    gpu_peak_flops,
    images_in_budget,
    param_counts,
    resolve_gpu,
)
from ditscale.models.config import named_config
from ditscale.study import load_spec, plan_study
from ditscale.study.cost import plan_cost
from ditscale.study.inputs import study_inputs
from ditscale.study.plan import ladder_sizes
from ditscale.train.config import load_train_config
from ditscale.train.plan import plan_training

LIANG_BUDGETS = [1e17, 3e17, 6e17, 1e18, 3e18, 6e18]  # Liang et al.'s isoFLOP budgets
H100_AT_035 = 989e12 * 0.35  # FLOP/s of one H100 SXM at the default MFU
XL2_MACS = 118_638_231_552  # DiT-XL/2 forward MACs per image (Table 4: 118.64 "Gflops")


def _store(path, *, captions: bool, classes: int, train: int):
    """A latent store's meta.json alone: all a plan reads (32x32x4 latents = 256 px through the SD VAE)."""
    path.mkdir()
    meta = {
        "format": "ditscale-latents",
        "version": 1,
        "shape": [4, 32, 32],
        "has_captions": captions,
        "num_classes": classes,
        "splits": {"train": train, "val": 1000},
    }
    (path / "meta.json").write_text(json.dumps(meta))
    return str(path)


@pytest.fixture
def captions_store(tmp_path):
    return _store(tmp_path / "laion256", captions=True, classes=1, train=2_000_000)


@pytest.fixture
def imagenet_store(tmp_path):
    return _store(tmp_path / "in256", captions=False, classes=1000, train=1_281_167)


def _non_embedding_in_context(depth: int, width: int) -> int:
    """N of an in-context block stack by hand: attention 4d^2+4d, MLP (ratio 4) 8d^2+5d per block, two
    affine LayerNorms (2d each) per block plus the final one."""
    return depth * (4 * width**2 + 4 * width) + depth * (8 * width**2 + 5 * width) + (2 * depth + 1) * 2 * width


# -- the liang2024 study --------------------------------------------------------------------------
def test_liang2024_spec_is_the_papers_setup_and_plans_without_its_data(captions_store, capsys):
    spec = load_spec("liang2024", [f"data.path={captions_store}"])
    assert spec.budgets == LIANG_BUDGETS and spec.hparams.batch_size == 1024 and spec.hparams.batch_exponent == 0
    assert spec.diffusion == {
        "kind": "flow",
        "flow_predict": "v",
        "time_sampling": "logit_normal",
        "logit_mean": 0.0,
        "logit_std": 1.0,
    }
    model = spec.family.model
    assert (model["block"], model["conditioning"], model["patch_size"]) == ("in_context", "text", 2)
    assert spec.data["name"] == "latents" and spec.data["captions"] is True and spec.data["path"] == captions_store
    assert spec.train["text_encoder"] is None and spec.train["precision"] == "bf16"

    no_path = load_spec("liang2024")
    assert no_path.data["path"] is None
    # planned from the declared 32x32x4 latents and 77 text tokens: the runs the store gives (issue 23 item 4)
    assert [r.row() for r in plan_study(no_path).runs] == [r.row() for r in plan_study(spec).runs]
    assert main(["study", "plan", "--preset", "liang2024"]) == 0
    assert "  missing   latent store (data.path): not set;" in capsys.readouterr().out
    ready = {i.name: (i.status, i.detail) for i in study_inputs(spec)}  # the store there: its meta.json names no VAE
    assert ready["latent store"] == ("ready", "2,000,000 train images")
    assert ready["captions"] == ("ready", "the store carries captions") and ready["VAE"][0] == "missing"
    assert ready["text encoder"][0] == "missing"


def test_liang2024_plan_budgets_and_a_ladder_of_1m_to_1b_params(captions_store):
    spec = load_spec("liang2024", [f"data.path={captions_store}"])
    sizes = ladder_sizes(spec)
    for s in sizes:
        depth, width, heads = s.rung
        assert width == 64 * depth and width // heads == 64  # depth and width grow together, heads of 64
        assert s.non_embedding == _non_embedding_in_context(depth, width) == param_counts(s.config).non_embedding
        assert s.config.num_patches == 256 and s.config.context_len == 77
    assert [s.rung[0] for s in sizes] == sorted(s.rung[0] for s in sizes)
    assert sizes[0].non_embedding == 1_334_976 and 1.0e6 < sizes[0].non_embedding < 1.5e6
    assert sizes[-1].non_embedding == _non_embedding_in_context(28, 1792) and 1.0e9 < sizes[-1].non_embedding < 1.1e9

    config_of = {s.rung: s.config for s in sizes}
    plan = plan_study(spec)
    by_budget = plan.by_budget()
    assert sorted(by_budget) == LIANG_BUDGETS and all(len(runs) == 5 for runs in by_budget.values())
    assert plan.warnings == [] and plan.dropped == []
    for budget, runs in by_budget.items():
        n_opt = 0.0009 * budget**0.5681  # the paper's N_opt law centres every grid (prior, nothing done yet)
        assert min(r.params_non_embedding for r in runs) < n_opt < max(r.params_non_embedding for r in runs)
        for r in runs:
            per_image = 6 * forward_macs(config_of[r.rung]).total
            assert r.images == images_in_budget(config_of[r.rung], budget)
            assert budget - per_image < r.flops_exact <= budget and r.tokens == 256 * r.images
            assert r.steps == math.ceil(r.images / 1024) and r.lr == 1e-4
    smallest = by_budget[1e17][0]
    assert (smallest.run_id, smallest.images, smallest.steps) == ("c1e17-d3w192h3-s0", 28_479_699, 27_813)


def test_liang2024_gpu_hours_equal_a_hand_computation(captions_store):
    plan = plan_study(load_spec("liang2024", [f"data.path={captions_store}"]))
    cost = plan_cost(plan, gpus_per_run=8)
    assert (cost.gpu, cost.peak_flops, cost.mfu) == ("H100 SXM", 989e12, 0.35) == (DEFAULT_GPU, 989e12, DEFAULT_MFU)
    run = next(r for r in plan.runs if r.run_id == "c6e18-d14w896h14-s0")
    row = next(c for c in cost.runs if c.run_id == run.run_id)
    macs = forward_macs(
        named_config(
            "DiT-XL/2",
            depth=14,
            hidden_size=896,
            num_heads=14,
            block="in_context",
            conditioning="text",
            context_dim=768,
            context_len=77,
            learn_sigma=False,
            num_classes=1,
        )
    ).total
    by_hand = 6 * macs * run.images / (989e12 * 0.35) / 3600
    assert row.flops == run.flops_exact == 6 * macs * run.images
    assert row.gpu_hours == pytest.approx(by_hand, rel=1e-12) and row.gpu_hours == pytest.approx(4.8149, abs=1e-3)
    assert row.wall_hours == pytest.approx(by_hand / 8, rel=1e-12)
    budgets = cost.by_budget()
    assert [b.budget for b in budgets] == LIANG_BUDGETS and [b.runs for b in budgets] == [5] * 6
    for b in budgets:  # every run spends its budget to within one image: 5 x C / (peak x MFU)
        assert b.gpu_hours == pytest.approx(5 * b.budget / H100_AT_035 / 3600, rel=1e-6)
    assert cost.gpu_hours == pytest.approx(5 * sum(LIANG_BUDGETS) / H100_AT_035 / 3600, rel=1e-6)
    assert round(cost.gpu_hours, 1) == 44.1
    # the longest run: 6e18 FLOPs on 8 GPUs = 36.1 min; x1.5 + 15 min = 69.2 -> 70
    assert cost.slurm_time_min() == 70
    a100 = plan_cost(plan, gpu="A100", mfu=0.5)
    assert a100.runs[0].gpu_hours == pytest.approx(plan.runs[0].flops_exact / (312e12 * 0.5) / 3600, rel=1e-12)


def test_cli_study_plan_prints_gpu_hours_and_a_slurm_command_that_parses(captions_store, capsys):
    assert main(["study", "plan", "--preset", "liang2024", "--set", f"data.path={captions_store}"]) == 0
    out = capsys.readouterr().out
    assert "30 runs, 5.5e+19 training FLOPs in all" in out
    assert "GPU time at MFU 0.35 of H100 SXM (989 TFLOP/s dense bf16), 8 GPU(s) per run:" in out
    assert "   total   30   5.500e+19       44.1" in out and "   6e+18    5   3.000e+19       24.1" in out
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith("ditscale study run"))
    assert command == (
        f"ditscale study run --preset liang2024 --set data.path={captions_store} --out runs/liang2024 "
        "--launcher slurm --slurm-gpus-per-node 8 --slurm-tasks-per-node 8 --slurm-cpus-per-task 8 "
        "--slurm-time 70"
    )
    args = build_parser("study").parse_args(shlex.split(command)[1:])  # the real `study run` options
    assert (args.study_command, args.launcher, args.preset, args.out) == ("run", "slurm", "liang2024", "runs/liang2024")
    assert (args.slurm_time, args.slurm_gpus_per_node, args.slurm_tasks_per_node) == (70, 8, 8)

    assert (
        main(
            [
                "study",
                "plan",
                "--preset",
                "liang2024",
                "--set",
                f"data.path={captions_store}",
                "--json",
                "--gpu",
                "B200",
                "--mfu",
                "0.5",
                "--gpus-per-run",
                "4",
                "--out",
                "/scratch/l",
            ]
        )
        == 0
    )
    cost = json.loads(capsys.readouterr().out)["cost"]
    assert (cost["gpu"], cost["peak_flops"], cost["mfu"], cost["gpus_per_run"]) == ("B200", 2250e12, 0.5, 4)
    assert cost["gpu_hours"] == pytest.approx(5.5e19 / (2250e12 * 0.5) / 3600, rel=1e-6)
    assert "--out /scratch/l" in cost["slurm_command"] and "--slurm-tasks-per-node 4" in cost["slurm_command"]
    for bad, message in (
        (["--gpu", "TPU v5"], "unknown GPU 'TPU v5'"),
        (["--mfu", "0"], "argument --mfu: must be > 0, got 0"),
    ):
        assert main(["study", "plan", "--preset", "liang2024", "--set", f"data.path={captions_store}", *bad]) == 2
        assert message in capsys.readouterr().err


# -- GPU peaks and hours: one home ----------------------------------------------------------------
def test_gpu_peaks_have_one_home_and_gpu_hours_are_flops_over_rate():
    from ditscale.train import metrics

    assert metrics.GPU_BF16_PEAK_FLOPS is GPU_BF16_PEAK_FLOPS and metrics.gpu_peak_flops is gpu_peak_flops
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and gpu_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_peak_flops("NVIDIA H200") == 989e12 and gpu_peak_flops("Intel Arc") is None
    assert resolve_gpu("a100") == ("A100", 312e12)
    with pytest.raises(ConfigError, match="unknown GPU"):
        resolve_gpu("TPU v5")
    assert gpu_hours(3600 * 1e12, 2e12, 0.5) == 1.0  # 3.6e15 FLOPs at 1e12 FLOP/s: one hour
    with pytest.raises(ConfigError, match="MFU"):
        gpu_hours(1e18, 989e12, 1.5)


# -- the dit-xl2 training run ---------------------------------------------------------------------
def test_dit_xl2_preset_is_the_papers_recipe_with_118_64_gflops(imagenet_store):
    cfg = load_train_config("dit-xl2", [f"data.path={imagenet_store}"])
    optim = cfg.optim
    assert (optim.lr, optim.weight_decay, optim.schedule, optim.warmup_steps) == (1e-4, 0.0, "constant", 0)
    assert (cfg.batch_size, cfg.max_steps, cfg.ema_decay, cfg.precision) == (256, 400_000, 0.9999, "bf16")
    d = cfg.diffusion_config()
    assert (d.kind, d.noise_schedule, d.diffusion_steps, d.learn_sigma) == ("gaussian", "linear", 1000, True)
    plan = plan_training(cfg)
    assert plan.model == named_config("DiT-XL/2")  # 32x32x4 input, 1000 classes, learned sigma
    assert forward_macs(plan.model).total == XL2_MACS and round(XL2_MACS / 1e9, 2) == 118.64
    assert plan.length.total_images == 102_400_000 and plan.train_images == 1_281_167 and plan.note is None
    assert plan.flops == 6 * XL2_MACS * 102_400_000
    assert plan.gpu_hours == pytest.approx(6 * XL2_MACS * 102_400_000 / H100_AT_035 / 3600, rel=1e-12)
    assert round(plan.gpu_hours, 1) == 58.5 and round(plan.wall_hours, 2) == 7.31


def test_cli_train_plan_prints_torchrun_and_slurm_and_writes_nothing(imagenet_store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["train", "dit-xl2", f"data.path={imagenet_store}", "--plan"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, nothing written
    assert "118.6382 GMACs per image" in out and "102,400,000 images = 79.9 epochs of the 1,281,167 train images" in out
    assert "58.5 GPU-hours at MFU 0.35 of H100 SXM (989 TFLOP/s dense bf16) = 7.3 h on 1 node(s) x 8 GPUs" in out
    assert (
        f"torchrun --standalone --nproc_per_node 8 -m ditscale train dit-xl2 --out runs/dit-xl2 "
        f"data.path={imagenet_store}"
    ) in out
    assert "#SBATCH --time=0-10:00:00" in out and "#SBATCH --gpus-per-node=8" in out and "srun torchrun --nnodes" in out

    assert (
        main(
            [
                "train",
                "dit-xl2",
                f"data.path={imagenet_store}",
                "--plan",
                "--nodes",
                "2",
                "--mfu",
                "0.24",
                "--max-steps",
                "7000000",
                "--out",
                "/scratch/xl2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    hours = 6 * XL2_MACS * 7_000_000 * 256 / (989e12 * 0.24) / 3600
    assert f"{hours:,.1f} GPU-hours at MFU 0.24" in out and f"= {hours / 16:,.1f} h on 2 node(s) x 8 GPUs" in out
    assert "(16 images per GPU per step" in out and "--out /scratch/xl2" in out and "max_steps=7000000" in out

    assert main(["train", "dit-xl2", "--plan"]) == 2
    assert "data.path is required" in capsys.readouterr().err
    assert main(["train", "dit-xl2", f"data.path={imagenet_store}"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_train_plan_of_a_store_not_extracted_yet_uses_the_declared_shape(tmp_path, capsys):
    assert main(["train", "dit-xl2", f"data.path={tmp_path / 'missing'}", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "118.6382 GMACs per image" in out and "epochs" not in out
    assert "does not exist; create it with `ditscale extract-latents` (planned from the declared" in out


def test_train_plan_runs_without_torch(imagenet_store):
    from test_structure import run_without_torch

    proc = run_without_torch("train", "dit-xl2", f"data.path={imagenet_store}", "--plan")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "58.5 GPU-hours" in proc.stdout


def test_study_run_refuses_a_text_family_without_an_encoder_before_writing(tmp_path, capsys):
    out = tmp_path / "study"
    store = tmp_path / "store"
    _store(store, captions=True, classes=0, train=1000)
    args = ["study", "run", "--preset", "liang2024", "--out", str(out), "--set", f"data.path={store}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no text encoder is set; give one with --set train.text_encoder=PATH" in err and err.count("\n") == 1
    assert not out.exists()
