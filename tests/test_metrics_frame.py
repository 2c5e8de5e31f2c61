"""The frame of a quality score (``ditscale.metrics.frame``): the real-vs-real floor and the chance level.

The floor and chance are checked on real exported batches (``ditscale data export --preset tiny``, 16 px
single shapes of 6 kinds) with the shipped shapes evaluator: the floor equals ``evaluate_shapes`` of the
two halves computed directly, bit for bit; chance is near 1/6 and below the true labels' accuracy; a
real batch lands near the floor and noise far above it.
"""

from __future__ import annotations

import numpy as np
import pytest

from ditscale.cli import main
from ditscale.errors import ConfigError
from ditscale.metrics.batch import ImageBatch, load_batch
from ditscale.metrics.evaluate import (
    evaluate_inception,
    evaluate_shapes,
    named_accuracies,
    overall_accuracy,
    shapes_features,
)
from ditscale.metrics.frame import MIN_HALF, QualityFrame, floor_size, real_vs_real, shuffled, split_halves
from ditscale.metrics.shapes_evaluator import DEFAULT_WEIGHTS

NUM_REF, NUM_SAMPLES, KINDS = 200, 100, 6

needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"{DEFAULT_WEIGHTS.name} is not built yet")


# The split and the shuffle -----------------------------------------------------------------------
def test_floor_size_takes_the_samples_count_when_the_reference_holds_twice_as_many():
    assert floor_size(2000, 1000) == (1000, None)
    n, note = floor_size(1000, 1000)  # equal counts: half the reference, said so
    assert n == 500 and "at 500 images per half" in note and "export 2,000" in note and "\n" not in note
    assert floor_size(2 * MIN_HALF, 1000) == (MIN_HALF, floor_size(2 * MIN_HALF, 1000)[1])
    n, note = floor_size(2 * MIN_HALF - 1, 5)
    assert n == 5 and note is None  # 19 images still hold two halves of the 5 samples
    n, note = floor_size(2 * MIN_HALF - 1, 1000)
    assert n is None and note.startswith("no real-vs-real floor: the reference holds 19 images") and "\n" not in note


def test_split_halves_are_disjoint_sorted_and_seeded():
    a, b = split_halves(50, 20, seed=3)
    assert len(a) == len(b) == 20 and not set(a) & set(b) and set(a) | set(b) <= set(range(50))
    assert list(a) == sorted(a) and list(b) == sorted(b)
    again = split_halves(50, 20, seed=3)
    assert np.array_equal(a, again[0]) and np.array_equal(b, again[1])
    assert not np.array_equal(a, split_halves(50, 20, seed=4)[0])
    assert not np.array_equal(a, np.arange(20))  # random, not the first 20


def test_real_vs_real_scores_half_a_against_half_b():
    calls = []
    floor, n, note = real_vs_real(30, 12, lambda a, b: calls.append((a, b)) or {"fd": float(a.sum() - b.sum())}, 1)
    a, b = split_halves(30, 12, 1)
    assert n == 12 and note is None and np.array_equal(calls[0][0], a) and np.array_equal(calls[0][1], b)
    assert floor == {"fd": float(a.sum() - b.sum())}
    assert real_vs_real(15, 12, lambda a, b: pytest.fail("no split"), 1)[:2] == (None, None)


def test_shuffled_keeps_the_multiset_and_the_type():
    labels = np.arange(40) % 4
    got = shuffled(labels, seed=2)
    assert isinstance(got, np.ndarray) and sorted(got) == sorted(labels) and not np.array_equal(got, labels)
    assert np.array_equal(got, shuffled(labels, seed=2))
    captions = tuple(f"caption {i}" for i in range(10))
    assert isinstance(shuffled(captions), tuple) and sorted(shuffled(captions)) == sorted(captions)


def test_the_frame_in_words_and_as_json():
    frame = QualityFrame({"fd": 26.1, "precision": 0.71, "recall": None}, 1000, {"accuracy": 0.168}, {"accuracy": 0.98})
    assert frame.beside("fd") == "(real-vs-real 26.1000 at 1,000 images)"
    assert frame.beside("precision") == "(real-vs-real 0.7100 at 1,000 images)"
    assert frame.beside("accuracy") == "(chance 0.1680, real 0.9800)"
    assert frame.beside("recall") == frame.beside("num_samples") == ""
    assert frame.to_dict() == {
        "chance": {"accuracy": 0.168},
        "ceiling": {"accuracy": 0.98},
        "floor": {"fd": 26.1, "precision": 0.71, "recall": None},
        "floor_images": 1000,
        "frame_notes": [],
    }
    none = QualityFrame(None, None, {"accuracy": None}, {"accuracy": None}, ("why",))
    assert none.beside("fd") == none.beside("accuracy") == "" and none.to_dict()["floor"] is None


# Real exported batches and the shipped evaluator -------------------------------------------------
def export(folder, name: str, num: int, seed: int) -> ImageBatch:
    path = folder / name
    argv = ["data", "export", "--preset", "tiny", "--num", str(num), "--seed", str(seed), "--out", str(path)]
    assert main([*argv, "--quiet"]) == 0
    return load_batch(path)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(reference: 200 val images of data seed 0, samples: 100 val images of data seed 1, the evaluator)."""
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_WEIGHTS.name} is not built yet")
    from ditscale.metrics.shapes_evaluator import load_shapes_evaluator

    folder = tmp_path_factory.mktemp("frame")
    ref, other = export(folder, "ref.npz", NUM_REF, 0), export(folder, "real.npz", NUM_SAMPLES, 1)
    samples = ImageBatch(other.images, labels=other.labels, label_names=other.label_names)  # labels only
    return ref, samples, load_shapes_evaluator()


def test_the_floor_is_evaluate_shapes_of_the_two_halves(real):
    ref, samples, evaluator = real
    got = evaluate_shapes(samples, ref, evaluator, frame=True, frame_seed=5).frame
    assert got.floor_images == NUM_SAMPLES and got.notes == ()
    a, b = split_halves(NUM_REF, NUM_SAMPLES, seed=5)
    direct = evaluate_shapes(ImageBatch(ref.images[a]), ImageBatch(ref.images[b]), evaluator)
    assert got.floor == {"fd": direct.fd, "precision": direct.precision, "recall": direct.recall}  # exact
    other_seed = evaluate_shapes(samples, ref, evaluator, frame=True, frame_seed=6).frame
    assert other_seed.floor["fd"] != got.floor["fd"]  # the seed picks the split


def test_chance_is_near_one_in_six_and_below_the_true_labels(real):
    ref, samples, evaluator = real
    metrics = evaluate_shapes(samples, ref, evaluator, frame=True)
    chance, ceiling = metrics.frame.chance["accuracy"], metrics.frame.ceiling["accuracy"]
    assert abs(chance - 1 / KINDS) < 0.08  # one shape of 6 kinds, labels shuffled
    assert ceiling > 0.95 and chance < ceiling and chance < metrics.accuracy  # real samples show their class
    assert ceiling == evaluator.accuracy(ref.images, labels=ref.labels, label_names=ref.label_names)
    shuffled_labels = shuffled(ref.labels, 0)
    assert chance == evaluator.accuracy(ref.images, labels=shuffled_labels, label_names=ref.label_names)


def test_caption_chance_shuffles_the_reference_captions(real):
    ref, samples, evaluator = real
    captioned = ImageBatch(ref.images[:NUM_SAMPLES], captions=ref.captions[:NUM_SAMPLES])
    frame = evaluate_shapes(captioned, ref, evaluator, frame=True).frame
    assert frame.chance["accuracy"] < 0.05 < 0.95 < frame.ceiling["accuracy"]  # every attribute must match
    assert frame.chance["accuracy"] == evaluator.accuracy(ref.images, captions=shuffled(ref.captions, 0))
    unconditioned = evaluate_shapes(ImageBatch(samples.images), ref, evaluator, frame=True).frame
    assert unconditioned.chance == unconditioned.ceiling == {"accuracy": None} and unconditioned.notes == ()
    unlabelled_ref = evaluate_shapes(samples, ImageBatch(ref.images), evaluator, frame=True).frame
    assert unlabelled_ref.chance == {"accuracy": None}
    assert unlabelled_ref.notes == (
        "no chance level: the samples carry labels but the reference has none; export one that has",
    )


def test_a_real_batch_lands_near_the_floor_and_noise_far_above(real):
    ref, samples, evaluator = real
    got = evaluate_shapes(samples, ref, evaluator, frame=True)
    floor = got.frame.floor
    assert floor["fd"] / 3 < got.fd < 3 * floor["fd"]
    assert floor["precision"] > 0.8 and floor["recall"] > 0.8 and got.precision > 0.8 and got.recall > 0.8
    noise = np.random.default_rng(0).integers(0, 256, size=samples.images.shape, dtype=np.uint8)
    bad = evaluate_shapes(ImageBatch(noise), ref, evaluator, frame=True)
    assert bad.frame.floor == floor  # the floor is the reference's: it does not depend on the samples
    assert bad.fd > 10 * floor["fd"] and bad.precision < 0.1


def test_a_small_reference_gives_a_lower_floor_count_or_none(real):
    ref, samples, evaluator = real

    def head(n: int) -> ImageBatch:
        return ImageBatch(ref.images[:n], labels=ref.labels[:n], label_names=ref.label_names)

    half = evaluate_shapes(samples, head(150), evaluator, frame=True).frame
    assert half.floor_images == 75 and half.floor is not None
    assert half.notes == (
        "the real-vs-real floor is at 75 images per half: the reference holds 150, fewer than 2 x 100 samples; "
        "at fewer images FD lies higher, so export 200 for a floor at the samples' count",
    )
    tiny = evaluate_shapes(samples, head(19), evaluator, frame=True)
    assert tiny.frame.floor is None and tiny.frame.floor_images is None and np.isfinite(tiny.fd)
    assert tiny.frame.notes == (
        "no real-vs-real floor: the reference holds 19 images, fewer than the 2 x 10 two halves need; "
        "export more reference images",
    )
    assert tiny.to_dict()["floor"] is None and tiny.to_dict()["frame_notes"] == list(tiny.frame.notes)
    assert tiny.frame.chance["accuracy"] is not None  # chance needs no split


# The Inception path, on stand-in features --------------------------------------------------------
def fake_inception_features(model, images, *, batch_size=50, mode="adm", device="cpu", progress=False):
    flat = images.reshape(len(images), -1).astype(np.float64)
    return {"pool": flat[:, :5], "spatial": flat[:, 5:8], "logits": flat[:, 8:12] / 64.0}


def test_the_inception_floor_is_evaluate_inception_of_the_two_halves(monkeypatch):
    import ditscale.metrics.inception as inception

    monkeypatch.setattr(inception, "inception_features", fake_inception_features)
    rng = np.random.default_rng(0)
    ref = ImageBatch(rng.integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8))
    samples = ImageBatch(rng.integers(0, 128, size=(15, 8, 8, 3), dtype=np.uint8))
    got = evaluate_inception(samples, ref, model=None, frame=True)
    a, b = split_halves(40, 15, seed=0)
    direct = evaluate_inception(ImageBatch(ref.images[a]), ImageBatch(ref.images[b]), model=None)
    assert got.frame.floor == {k: v for k, v in direct.scores().items() if k != "num_samples"}
    assert got.frame.floor_images == 15 and got.frame.chance == {} and got.frame.notes == ()
    assert list(got.to_dict())[:6] == ["fid", "sfid", "inception_score", "precision", "recall", "num_samples"]
    stats_only = ImageBatch(None, stats={"mu": np.zeros(5), "sigma": np.eye(5)})
    frame = evaluate_inception(samples, stats_only, model=None, frame=True).frame
    assert frame.floor is None and frame.notes[0].startswith("no real-vs-real floor: the reference holds statistics")


def test_precomputed_reference_features_and_one_scene_prediction_give_the_same_scores(real, monkeypatch):
    """The study's quality stage scores each model with the reference's features computed once and the
    samples' scenes predicted once (named accuracies give the overall one): the same floats as
    evaluate_shapes alone."""
    ref, samples, evaluator = real
    alone = evaluate_shapes(samples, ref, evaluator)
    calls, predict = [], type(evaluator).predict
    monkeypatch.setattr(type(evaluator), "predict", lambda self, *a, **k: calls.append(1) or predict(self, *a, **k))
    features = shapes_features(evaluator, ref.images)
    reused = evaluate_shapes(samples, ref, evaluator, reference_features=features)
    assert len(calls) == 1  # the samples' scenes, once for every accuracy
    assert (reused.fd, reused.precision, reused.recall) == (alone.fd, alone.precision, alone.recall)
    assert reused.named == alone.named == named_accuracies(samples, evaluator) and list(reused.named) == [
        "accuracy_class"
    ]
    assert reused.accuracy == alone.accuracy == overall_accuracy(reused.named) == reused.named["accuracy_class"]
    assert alone.accuracy == evaluator.accuracy(samples.images, labels=samples.labels, label_names=samples.label_names)
    with pytest.raises(ConfigError, match="reference_features hold 199 rows for a reference of 200"):
        evaluate_shapes(samples, ref, evaluator, reference_features=features[:-1])
