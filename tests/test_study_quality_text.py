"""The quality stage of a text-conditional study, for real on a micro study: each budget's best model
(a DiT with the word encoder trained jointly, as `tiny-text`) is prompted with held-out captions of
the val split through its own encoder, scored by the shapes evaluator per caption attribute, and
laws.json's ``quality_metrics`` holds every metric's laws, chance level, floor and best value."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from test_study_run import MICRO as RUN_MICRO

from ditscale.data.shapes import caption_of_scene, sample_scene
from ditscale.laws.results import LawsSummary
from ditscale.metrics.batch import ImageBatch, load_batch
from ditscale.metrics.evaluate import evaluate_shapes
from ditscale.metrics.frame import shuffled, split_halves
from ditscale.metrics.shapes_evaluator import load_shapes_evaluator
from ditscale.study import run_study, spec_from_dict

N = 12  # samples per model (and reference images); the frame's reference holds 2 N
MICRO_TEXT = {
    **RUN_MICRO,
    "name": "micro-t2i",
    "data": {"name": "shapes", "image_size": 8, "captions": True},
    "family": {
        **RUN_MICRO["family"],
        "model": {**RUN_MICRO["family"]["model"], "conditioning": "text", "context_dim": 64, "context_len": 16},
    },
    "train": {**RUN_MICRO["train"], "text_encoder": "word"},
    "budgets": [1e8, 2e8, 4e8, 8e8],
    "seed": 1,  # seed 0's isoFLOP parabolas at 1e8-4e8 FLOPs are concave: no loss law to report against
    "repeat": {},
    "laws": {"bootstrap": 100},
    "quality": {"num_samples": N, "steps": 2, "batch_size": N},
}
ATTRIBUTES = {"shape": "kind", "colour": "color", "size": "size", "count": "count", "position": "position"}
METRICS = {"fd", "accuracy_all", "accuracy_background", *(f"accuracy_{a}" for a in ATTRIBUTES)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality-text") / "micro"
    outcome = run_study(spec_from_dict(MICRO_TEXT), out, progress=False, echo=lambda m: None)
    assert outcome.complete
    with open(out / "quality.csv") as fh:
        rows = list(csv.DictReader(fh))
    return out, rows, json.loads((out / "laws.json").read_text())


def test_models_are_prompted_with_held_out_captions_and_scored_per_attribute(study):
    out, rows, _ = study
    held_out = [caption_of_scene(sample_scene(0, i, "val", 1)) for i in range(N)]  # val split, data seed 0
    evaluator = load_shapes_evaluator()
    assert len(rows) == 4
    for row in rows:
        samples = load_batch(out / "quality" / "samples" / f"{row['run_id']}.npz")
        assert list(samples.captions) == held_out and samples.images.shape == (N, 8, 8, 3)
        per_attribute = evaluator.attribute_accuracy(samples.images, captions=samples.captions)
        assert float(row["accuracy"]) == per_attribute["all"]
        for name, key in {**ATTRIBUTES, "background": "background"}.items():
            assert float(row[f"accuracy_{name}"]) == per_attribute[key]
    assert list(load_batch(out / "quality" / "reference.npz").captions) == held_out


def test_quality_metrics_hold_laws_chance_floor_and_the_top_budgets_best(study):
    out, rows, laws = study
    metrics = laws["quality_metrics"]
    assert set(metrics) == METRICS and laws["quality"]["metric"] == "fd"
    top = rows[-1]  # the largest budget's compute-optimal model (quality.csv lists one per budget)
    for name, m in metrics.items():
        column = {"fd": "value", "accuracy_all": "accuracy"}.get(name, name)
        values = np.array([float(r[column]) for r in rows])
        assert m["best_value"] == float(top[column]), name
        if (values <= 0).any():  # an accuracy of 0 somewhere: no power law passes through it
            assert m["law"] is m["backtest"] is m["vs_loss"] is None, name
            continue
        flops, loss = np.array([float(r["budget"]) for r in rows]), np.array([float(r["loss"]) for r in rows])
        slope, _ = np.polyfit(np.log(flops), np.log(values), 1)
        assert m["law"]["exponent"] == pytest.approx(slope, rel=1e-9, abs=1e-12), name
        lo, hi = m["law"]["ci90"]["exponent"]
        assert lo <= hi, name
        assert m["backtest"]["flops"] == 8e8 and m["backtest"]["actual"] == float(top[column])
        assert m["vs_loss"]["spearman"] == pytest.approx(spearmanr(loss, values).statistic), name
    assert metrics["fd"]["law"] == laws["quality"]["law"]  # one home for the math: the primary law is fd's
    assert metrics["fd"]["law"] is not None and any(m["law"] for n, m in metrics.items() if n != "fd")
    assert LawsSummary.read(out / "laws.json").to_dict() == laws  # the strict schema reads it back exactly


def test_chance_and_floor_are_the_frame_of_real_images(study):
    out, _, laws = study
    metrics = laws["quality_metrics"]
    frame_ref = load_batch(out / "quality" / "frame_reference.npz")
    assert len(frame_ref.images) == 2 * N
    evaluator = load_shapes_evaluator()
    chance = evaluator.attribute_accuracy(frame_ref.images, captions=shuffled(frame_ref.captions, 0))
    real = evaluator.attribute_accuracy(frame_ref.images, captions=frame_ref.captions)
    for name, key in {"all": "all", **ATTRIBUTES, "background": "background"}.items():
        assert metrics[f"accuracy_{name}"]["chance"] == chance[key]
        assert metrics[f"accuracy_{name}"]["floor"] == real[key]
    assert real["all"] > chance["all"]  # the evaluator reads real images: their own captions beat shuffled ones
    a, b = split_halves(2 * N, N, 0)
    floor = evaluate_shapes(ImageBatch(frame_ref.images[a]), ImageBatch(frame_ref.images[b]), evaluator).fd
    assert metrics["fd"]["floor"] == pytest.approx(floor, rel=1e-9) and metrics["fd"]["chance"] is None


def test_report_draws_accuracy_and_captions_the_samples(study):
    out, _, _ = study
    html = (out / "report.html").read_text()
    assert "Quality metrics" in html and "accuracy_colour" in html
    assert (out / "accuracy.png").is_file() and (out / "samples.png").is_file() and (out / "quality.png").is_file()
