"""``ditscale eval``: exit codes, the JSON object and table, reference statistics, one-line errors.

The feature networks are replaced by stand-ins (features from pixels) so the values can be checked
against the metric functions; the networks themselves are tested in their own modules.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ditscale.cli import main
from ditscale.metrics.batch import first_images, load_batch, npz_keys, save_batch
from ditscale.metrics.evaluate import evaluate_shapes

SHAPES_KEYS = ["fd", "accuracy", "precision", "recall", "num_samples"]
CAPTION_KEYS = [f"accuracy_{a}" for a in ("all", "shape", "colour", "size", "count", "position", "background")]
INCEPTION_KEYS = ["fid", "sfid", "inception_score", "precision", "recall", "num_samples"]
FRAME_KEYS = ["chance", "ceiling", "floor", "floor_images", "frame_notes"]


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)


class FakeShapesEvaluator:
    """Features = the first 4 pixel values; accuracy = the fraction of labels equal to 0."""

    def features(self, images, batch_size=256):
        return images.reshape(len(images), -1)[:, :4].astype(np.float64)

    def accuracy(self, images, *, labels=None, label_names=None, captions=None):
        return float(np.mean(np.asarray(labels) == 0))

    def accuracies(self, images, conditions):
        return [self.accuracy(images, **c) for c in conditions]

    def attribute_accuracies(self, images, conditions):
        return [{"all": self.accuracy(images, **c)} for c in conditions]


def fake_inception_features(model, images, *, batch_size=50, mode="adm", device="cpu", progress=False):
    flat = images.reshape(len(images), -1).astype(np.float64)
    return {"pool": flat[:, :5], "spatial": flat[:, 5:8], "logits": flat[:, 8:12] / 64.0}


@pytest.fixture
def batches(tmp_path):
    samples = save_batch(tmp_path / "samples.npz", images(9, 1), labels=[0, 1, 0, 0, 2, 0, 1, 1, 0])
    ref = save_batch(tmp_path / "ref.npz", images(12, 2) // 2)
    return str(samples), str(ref)


@pytest.fixture
def fakes(monkeypatch):
    import ditscale.metrics.inception as inception
    import ditscale.metrics.shapes_evaluator as shapes_evaluator

    monkeypatch.setattr(
        shapes_evaluator, "load_shapes_evaluator", lambda path=None, device="cpu": FakeShapesEvaluator()
    )
    monkeypatch.setattr(inception, "load_fid_inception", lambda path, device="cpu": "inception-model")
    monkeypatch.setattr(inception, "inception_features", fake_inception_features)


def run_eval(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["eval", *argv, "--quiet", "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def test_shapes_is_the_default_and_prints_one_json_object(batches, fakes, capsys):
    samples, ref = batches
    code, out, err = run_eval(capsys, samples, "--ref", ref, "--json")
    assert code == 0 and err == ""
    got = json.loads(out)
    assert list(got) == SHAPES_KEYS + ["accuracy_class"] + FRAME_KEYS  # the scores' keys first, then the named
    expected = evaluate_shapes(load_batch(samples), load_batch(ref), FakeShapesEvaluator()).to_dict()
    assert {k: got[k] for k in SHAPES_KEYS + ["accuracy_class"]} == pytest.approx(expected)
    assert got["accuracy"] == got["accuracy_class"] == pytest.approx(5 / 9) and got["num_samples"] == 9
    # 12 reference images hold no two halves of 10 or more: no floor; the reference has no labels: no chance
    assert got["floor"] is None and got["floor_images"] is None
    assert got["chance"] == got["ceiling"] == {"accuracy": None}
    assert [note.split(":")[0] for note in got["frame_notes"]] == ["no real-vs-real floor", "no chance level"]


def test_table_shows_each_metric_and_n_a_for_missing_ones(batches, fakes, capsys, tmp_path):
    _, ref = batches
    unlabelled = str(save_batch(tmp_path / "plain.npz", images(6, 3)))
    code, out, _ = run_eval(capsys, unlabelled, "--ref", ref)
    assert code == 0
    lines = out.strip().splitlines()
    rows = {line[:22].strip(): line[23:].split() for line in lines if not line.startswith("note: ")}
    assert rows["accuracy"] == ["n/a"] and rows["samples"] == ["6"]
    fd, precision = float(rows["FD (shapes features)"][0]), float(rows["precision"][0])
    assert fd > 0 and 0 <= precision <= 1
    frame = evaluate_shapes(load_batch(unlabelled), load_batch(ref), FakeShapesEvaluator(), frame=True).frame
    assert rows["FD (shapes features)"][1:] == "(real-vs-real {:.4f} at 6 images)".format(frame.floor["fd"]).split()
    assert frame.floor_images == 6 and len(rows) == len(lines)  # 12 = 2 x 6 reference images: no note
    code, out, _ = run_eval(capsys, batches[0], "--ref", ref)  # 9 labelled samples, 12 unlabelled real images
    notes = [line for line in out.strip().splitlines() if line.startswith("note: ")]
    assert code == 0 and [n.split(":")[1].strip() for n in notes] == ["no real-vs-real floor", "no chance level"]


def test_inception_json_and_reference_statistics_reuse(batches, fakes, capsys, tmp_path):
    samples, ref = batches
    weights = tmp_path / "pt_inception.pth"  # loading is faked: the path is only passed through
    stats = tmp_path / "ref_stats.npz"
    code, out, _ = run_eval(
        capsys, samples, "--ref", ref, "--inception", str(weights), "--json", "--save-ref-stats", str(stats)
    )
    assert code == 0
    first = json.loads(out)
    assert list(first) == INCEPTION_KEYS + FRAME_KEYS and first["num_samples"] == 9
    assert first["chance"] == first["ceiling"] == {} and first["floor"] is None  # 12 images: no two halves of 10
    assert all(np.isfinite(first[k]) for k in INCEPTION_KEYS) and first["fid"] > 0
    assert sorted(load_batch(stats).stats) == ["mu", "mu_s", "sigma", "sigma_s"]
    code, out, _ = run_eval(
        capsys, samples, "--ref", str(stats), "--evaluator", "inception", "--inception", str(weights), "--json"
    )
    again = json.loads(out)
    assert code == 0 and again["fid"] == pytest.approx(first["fid"]) and again["sfid"] == pytest.approx(first["sfid"])
    assert again["precision"] is None and again["recall"] is None  # a statistics-only reference
    assert again["floor"] is None and "statistics only" in again["frame_notes"][0]


ERRORS = {
    "inception without weights": (["--evaluator", "inception"], "pass --inception FILE"),
    "mode with shapes": (["--mode", "adm"], "--mode belong to the inception evaluator"),
    "stats with shapes": (["--save-ref-stats", "s.npz"], "--save-ref-stats belong to the inception"),
    "inception file with shapes": (["--evaluator", "shapes", "--inception", "w.pth"], "--inception belong to"),
    "batch size": (["--batch-size", "0"], "argument --batch-size: must be between 1 and"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_option_errors_are_one_line(batches, fakes, capsys, case):
    argv, expected = ERRORS[case]
    samples, ref = batches
    code, out, err = run_eval(capsys, samples, "--ref", ref, *argv)
    assert code == 2 and out == ""
    assert err.startswith("ditscale: error: ") and err.count("\n") == 1 and expected in err


def test_missing_files_and_bad_arrays_are_one_line(batches, capsys, tmp_path):
    samples, ref = batches
    bad = tmp_path / "bad.npz"
    np.savez(bad, arr_0=images(3, 4).astype(np.float32))
    cases = [
        ([str(tmp_path / "missing.npz"), "--ref", ref], "missing.npz' does not exist"),
        ([samples, "--ref", str(bad)], "must be uint8 images (N, H, W, 3)"),
        ([samples, "--ref", ref, "--inception", str(tmp_path / "none.pth")], "none.pth' do not exist"),
    ]
    for argv, expected in cases:
        code, out, err = run_eval(capsys, *argv)
        assert code == 2 and out == ""
        assert err.startswith("ditscale: error: ") and err.count("\n") == 1 and expected in err, err


def test_eval_is_a_registered_command(capsys):
    assert main(["eval", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--save-ref-stats" in text and "--inception" in text


def test_first_images_reads_the_head_of_arr_0_only(tmp_path):
    images = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    path = save_batch(tmp_path / "b.npz", images, captions=list("abcde"))
    assert npz_keys(path) == ["arr_0", "captions"]
    assert np.array_equal(first_images(path, 2), images[:2]) and np.array_equal(first_images(path, 64), images)


def test_json_frame_on_real_exported_batches(tmp_path, capsys):
    """The shipped evaluator on 120 reference images (data seed 0) and 60 other real ones (seed 1) of the
    tiny preset: the floor is at 60 images, the real batch scores near it, chance is far below the ceiling."""
    from ditscale.metrics.shapes_evaluator import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_WEIGHTS.name} is not built yet")
    for name, num, seed in (("ref.npz", 120, 0), ("real.npz", 60, 1)):
        argv = ["data", "export", "--preset", "tiny", "--num", str(num), "--seed", str(seed)]
        assert main([*argv, "--out", str(tmp_path / name), "--quiet"]) == 0
    capsys.readouterr()  # the exports' "wrote ..." lines
    code, out, _ = run_eval(capsys, str(tmp_path / "real.npz"), "--ref", str(tmp_path / "ref.npz"), "--json")
    got = json.loads(out)
    assert code == 0 and list(got) == SHAPES_KEYS + CAPTION_KEYS + FRAME_KEYS and got["floor_images"] == 60
    assert sorted(got["floor"]) == ["fd", "precision", "recall"] and got["frame_notes"] == []
    assert got["floor"]["fd"] / 3 < got["fd"] < 3 * got["floor"]["fd"]
    # the exported batch carries captions: accuracy is caption accuracy, its chance the shuffled captions'
    assert got["chance"]["accuracy"] < 0.1 < 0.9 < got["ceiling"]["accuracy"] and got["accuracy"] > 0.9
    code, out, _ = run_eval(capsys, str(tmp_path / "real.npz"), "--ref", str(tmp_path / "ref.npz"))
    rows = {line[:22].strip(): line[23:] for line in out.strip().splitlines()}
    assert rows["accuracy"].endswith(
        "(chance {:.4f}, real {:.4f})".format(got["chance"]["accuracy"], got["ceiling"]["accuracy"])
    )
    assert rows["FD (shapes features)"].endswith("(real-vs-real {:.4f} at 60 images)".format(got["floor"]["fd"]))
    # each attribute the captions name: real images score it, shuffled captions far less often (count: one
    # shape per image, so any caption's count is right); the table shows it under the overall row
    assert got["accuracy_all"] == got["accuracy"] and got["chance"]["accuracy_all"] == got["chance"]["accuracy"]
    for name in CAPTION_KEYS[1:]:
        chance, real = got["chance"][name], got["ceiling"][name]
        assert got[name] > 0.9 and real > 0.9 and (chance < 0.5 or name == "accuracy_count"), name
        row = rows[name.replace("accuracy_", "")]
        assert row == "{:.4f}     (chance {:.4f}, real {:.4f})".format(got[name], chance, real), name
    assert list(rows)[1:8] == ["accuracy", "shape", "colour", "size", "count", "position", "background"]
