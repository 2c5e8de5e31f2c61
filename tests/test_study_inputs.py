"""`study plan` before the data exists (issue 23 item 4) and a study of one's own images (item 3):
plans from the declared shapes with the missing inputs listed, `study init`, the suggested prior."""

from __future__ import annotations

import csv
import io
import re

import yaml

from ditscale.cli import main
from ditscale.study import load_spec, plan_study


def test_plan_of_liang2024_without_its_data_lists_what_a_run_needs(tmp_path, capsys):
    assert main(["study", "plan", "--preset", "liang2024", "--csv"]) == 0
    csv_out, csv_err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(csv_out)))  # --csv: stdout is the CSV alone, the inputs go to stderr
    assert len(rows) == 30 and all(r["run_id"] and float(r["flops_exact"]) > 0 for r in rows)
    assert "inputs a real run needs (4 missing" in csv_err and "inputs" not in csv_out
    assert main(["study", "plan", "--preset", "liang2024"]) == 0
    out = capsys.readouterr().out
    assert "30 runs, 5.5e+19 training FLOPs in all" in out  # 6 budgets x 5 models, from 32x32x4 latents
    assert re.search(r"total\s+30\s+5\.500e\+19\s+44\.1", out)  # the GPU-hour table of the declared shapes
    assert "inputs a real run needs (4 missing; this plan counts the declared shapes):" in out
    lines = {line.split()[1].rstrip(":"): line for line in out.splitlines() if line.startswith("  missing ")}
    assert set(lines) == {"latent", "captions", "VAE", "text"}
    assert "--image-size 256" in lines["latent"] and "model.context_len=77" in lines["text"]
    # a run still refuses up front, before writing anything
    out_dir = tmp_path / "study"
    assert (
        main(["study", "run", "--preset", "liang2024", "--set", "train.text_encoder=word", "--out", str(out_dir)]) == 2
    )
    assert "data.path is required for the 'latents' dataset" in capsys.readouterr().err
    assert not out_dir.exists()


def _grid_misses(plan) -> list[str]:
    return [w for w in plan.warnings if "below the grid" in w or "above the grid" in w]


def test_study_init_writes_a_commented_spec_whose_grids_sit_inside_the_ladder(own_images, tmp_path, capsys):
    out = tmp_path / "spec.yaml"
    assert main(["study", "init", "--data", "folder", "--path", str(own_images), "--out", str(out)]) == 0
    text = out.read_text()
    spec = load_spec(str(out))
    assert spec.data == {"name": "folder", "path": str(own_images), "image_size": 8, "channels": 3, "val_fraction": 0.1}
    assert spec.family.model["patch_size"] == 2 and len(spec.family.ladder()) == 7
    # the quickstart's budgets x (16 tokens of 2x2x3 over 64 of 4x4x3: 0.257 the FLOPs per image)
    assert spec.budgets == [4.11e10, 8.21e10, 1.64e11, 3.29e11, 6.57e11]
    assert (spec.prior.coefficient, spec.prior.exponent) == (0.169, 0.5681)
    assert "6 images in 2 class folders (cats, dogs)" in text
    lines = text.splitlines()
    bare = [  # a comment on every field: on its line, on the line above, or (a mapping's key) on the line below
        line
        for i, line in enumerate(lines)
        if re.match(r"^\s*[a-z_]+:", line)
        and "#" not in line
        and not lines[i - 1].lstrip().startswith("#")
        and not (line.rstrip().endswith(":") and "#" in lines[i + 1])
    ]
    assert bare == [] and sum(1 for line in lines if "#" in line) >= 30
    plan = plan_study(spec)
    assert len(plan.runs) == 30 and _grid_misses(plan) == []
    assert main(["study", "init", "--data", "folder", "--path", str(own_images), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_plan_suggests_a_prior_when_the_default_puts_every_grid_below_the_ladder(own_images, tmp_path, capsys):
    out = tmp_path / "spec.yaml"
    assert main(["study", "init", "--data", "folder", "--path", str(own_images), "--out", str(out)]) == 0
    bare = yaml.safe_load(out.read_text())
    del bare["prior"]  # the default prior, Liang et al.'s: N_opt = 0.0009 C^0.5681, ~1e3 here
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(bare))
    capsys.readouterr()
    assert main(["study", "plan", str(tmp_path / "bare.yaml")]) == 0
    err = capsys.readouterr().err
    assert err.count("is below the grid") == 5
    line = next(line for line in err.splitlines() if line.startswith("prior: "))
    assert line == "prior: {coefficient: 0.169, exponent: 0.5681}"
    bare.update(yaml.safe_load(line))
    (tmp_path / "fixed.yaml").write_text(yaml.safe_dump(bare))
    assert _grid_misses(plan_study(load_spec(str(tmp_path / "fixed.yaml")))) == []
    assert main(["study", "plan", str(tmp_path / "fixed.yaml")]) == 0
    assert "prior: " not in capsys.readouterr().err  # a prior inside the ladder: nothing suggested
