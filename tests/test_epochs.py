"""Finite data is flagged (issue 23, item 7): plans state the epochs of a finite train split and warn
past 16 (Muennighoff et al. 2023); procedural data (shapes) has no epochs and nothing is said."""

from __future__ import annotations

from pathlib import Path

from ditscale.cli import main
from ditscale.study import load_spec
from ditscale.train.config import load_train_config
from ditscale.train.plan import plan_text, plan_training

QUICKSTART = Path(__file__).parent / "data" / "studies" / "quickstart-p2" / "spec.yaml"
DIGITS = ["data.name=digits", "data.image_size=8", "data.channels=1", "model.patch_size=2"]


def image_folder(root: Path, per_class: int = 10) -> Path:
    """Two class folders of ``per_class`` (empty) .png files: planning lists files, it never decodes them."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(b"")
    return root


def test_train_plan_states_epochs_and_warns_past_the_threshold():
    plan = plan_training(load_train_config("tiny", [*DIGITS, "max_steps=1000"]))
    assert plan.train_images == 1797 - 180  # scikit-learn's digits less the 10% val split
    text = plan_text(plan, "tiny", [], "runs/t")
    assert "= 39.6 epochs of the 1,617 train images" in text  # 64,000 images
    assert "warning     this run is 39.6 epochs of the 1,617 train images, past 16" in text
    assert "Muennighoff et al. 2023" in text
    short = plan_text(plan_training(load_train_config("tiny", [*DIGITS, "max_steps=100"])), "tiny", [], "runs/t")
    assert "= 4.0 epochs of the 1,617 train images" in short  # 6,400 images
    assert "warning" not in short  # 4 epochs: below the threshold


def test_train_plan_of_procedural_data_says_nothing_of_epochs():
    text = plan_text(plan_training(load_train_config("tiny", [])), "tiny", [], "runs/t")
    assert "epoch" not in text


def test_study_plan_states_epochs_of_a_folder(tmp_path, capsys):
    folder = image_folder(tmp_path / "imgs")
    argv = ["study", "plan", str(QUICKSTART), "--set", "data.name=folder", "--set", f"data.path={folder}"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    line = next(x for x in out.splitlines() if x.startswith("data: "))
    assert line.startswith("data: 18 train images; the runs make ")  # 20 files less the 2 of the val split
    most = float(line.split(" to ")[1].split(" epochs")[0])
    assert most > 16
    assert f"is {most:.3g} epochs of the 18 train images, past 16" in err
    from ditscale.study.epochs import study_train_images  # here: the other tests run on main's code

    assert study_train_images(load_spec(str(QUICKSTART))) is None  # shapes: procedural, no epochs


def test_no_warning_up_to_the_threshold():
    from ditscale.data.epochs import epochs_warning  # here: the other tests run on main's code

    assert epochs_warning(4.0, 1000, "x") is None and epochs_warning(16.0, 1000, "x") is None
    assert "x is 16 epochs of the 1,000 train images, past 16" in epochs_warning(16.01, 1000, "x")
