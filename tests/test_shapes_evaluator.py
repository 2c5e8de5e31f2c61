"""The embedded shapes evaluator: caption parsing, accuracy on real images, FD behaviour, loading."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from ditscale.data.shapes import caption_of_scene, sample_scene
from ditscale.data.shapes_grammar import COLOR_NAMES, KINDS, parse_caption
from ditscale.errors import CheckpointError, ConfigError
from ditscale.metrics import shapes_evaluator as se
from ditscale.metrics.frechet import feature_statistics, frechet_distance
from ditscale.metrics.shapes_evaluator import (
    FEATURE_DIM,
    ObjectPrediction,
    Scene,
    caption_scores,
    class_scores,
    load_shapes_evaluator,
    render_real_batch,
)


# Caption parser ---------------------------------------------------------------------------------
@pytest.mark.parametrize("max_objects", [1, 2, 3, 4])
def test_parse_caption_inverts_caption_of_scene(max_objects):
    counts = set()
    for i in range(400):
        objects = sample_scene(7, i, "train", max_objects)
        parsed = parse_caption(caption_of_scene(objects))
        assert parsed["background"] == objects[0]["background"]
        assert parsed["objects"] == [{k: o[k] for k in ("kind", "color", "size", "position")} for o in objects]
        counts.add(len(objects))
    assert counts == set(range(1, max_objects + 1))


def test_parse_caption_is_lenient_on_case_spaces_and_article():
    parsed = parse_caption("  A large  ORANGE ring at the bottom right on a orange background ")
    assert parsed == {
        "background": "orange",
        "objects": [{"kind": "ring", "color": "orange", "size": "large", "position": "bottom right"}],
    }


@pytest.mark.parametrize(
    "caption, words",
    [
        ("a cat on a mat", "outside the shapes grammar"),
        ("a huge red circle at the top on a blue background", "outside the shapes grammar"),
        ("a small red circle at the top", "outside the shapes grammar"),
        ("two shapes: a small red circle at the top on a blue background", "says 'two shapes'"),
        ("a small red circle at the top and a large blue ring at the left on a red background", "no '{count}"),
        (
            "two shapes: a small red circle at the top and a large blue ring at the top on a red background",
            "one grid cell",
        ),
    ],
)
def test_parse_caption_rejects_captions_outside_the_grammar(caption, words):
    with pytest.raises(ValueError, match="^[^\n]*$") as info:
        parse_caption(caption)
    assert words in str(info.value)


# Scoring (no network) ---------------------------------------------------------------------------
def test_caption_scores_need_every_attribute_and_exactly_the_captioned_cells():
    caption = "two shapes: a small red circle at the top and a large blue ring at the left on a green background"
    right = Scene(
        "green", (ObjectPrediction("circle", "red", "small", "top"), ObjectPrediction("ring", "blue", "large", "left"))
    )
    extra = Scene("green", right.objects + (ObjectPrediction("cross", "red", "small", "center"),))
    wrong_size = Scene("green", (right.objects[0], ObjectPrediction("ring", "blue", "medium", "left")))
    wrong_bg = Scene("red", right.objects)
    scores = caption_scores([right, extra, wrong_size, wrong_bg], [caption] * 4)
    assert scores["all"] == [True, False, False, False]
    assert scores["count"] == [True, False, True, True]
    assert scores["background"] == [True, True, True, False]
    assert scores["size"] == [True, True, True, True, True, False, True, True]  # per captioned shape
    with pytest.raises(ConfigError, match="caption accuracy needs shapes captions"):
        caption_scores([right], ["a photo of a dog"])


def test_class_scores_use_kinds_or_label_names():
    scene = Scene(
        "green", (ObjectPrediction("circle", "red", "small", "top"), ObjectPrediction("ring", "blue", "large", "left"))
    )
    assert class_scores([scene] * 3, np.array([0, 5, 1]))["all"] == [True, True, False]
    names = [f"{c} {k}" for k in KINDS for c in COLOR_NAMES]  # the kind_color classes
    labels = np.array([names.index("red circle"), names.index("blue circle"), names.index("blue ring")])
    scores = class_scores([scene] * 3, labels, names)
    assert scores["all"] == [True, False, True] and scores["color"] == [True, True, True]
    with pytest.raises(ConfigError, match="pass the batch's label_names"):
        class_scores([scene], np.array([40]))


# The shipped network on real images -------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluator():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the network's convolutions are the slow part of this file
    yield load_shapes_evaluator()
    torch.set_num_threads(threads)


@pytest.mark.parametrize("image_size, max_objects", [(16, 1), (32, 4)])
def test_accuracy_on_real_images(evaluator, image_size, max_objects):
    images, labels, captions = render_real_batch(256, image_size=image_size, max_objects=max_objects)
    per_attribute = evaluator.attribute_accuracy(images, captions=captions)
    print(f"{image_size}px K<={max_objects}:", {k: round(v, 4) for k, v in per_attribute.items()})
    assert set(per_attribute) == {"background", "count", "position", "kind", "color", "size", "all"}
    assert min(per_attribute.values()) >= 0.98
    assert evaluator.accuracy(images, captions=captions) == per_attribute["all"]
    assert evaluator.accuracy(images, labels=labels) >= 0.98
    assert evaluator.accuracy(images, labels=labels, captions=captions) == per_attribute["all"]  # captions win
    assert evaluator.accuracy(images) is None
    # Wrong conditions: captions and labels of other images.
    shuffled = captions[1:] + captions[:1]
    assert evaluator.accuracy(images, captions=shuffled) < 0.1
    assert evaluator.accuracy(images, labels=(labels + 1) % len(KINDS)) < 0.5


def test_colour_classes_on_real_images(evaluator):
    images, _, captions = render_real_batch(128, image_size=32, max_objects=1, start=500)
    names = [f"{c} {k}" for k in KINDS for c in COLOR_NAMES]  # shapes_label: kind_color
    top = [parse_caption(c)["objects"][0] for c in captions]
    labels = np.array([names.index(f"{o['color']} {o['kind']}") for o in top])
    assert evaluator.accuracy(images, labels=labels, label_names=names) >= 0.98
    other = {c: COLOR_NAMES[i - 1] for i, c in enumerate(COLOR_NAMES)}
    wrong_colour = np.array([names.index(f"{other[o['color']]} {o['kind']}") for o in top])
    scores = evaluator.attribute_accuracy(images, labels=wrong_colour, label_names=names)
    assert scores["kind"] >= 0.98 and scores["color"] < 0.1 and scores["all"] < 0.1


def test_predict_returns_scenes_and_checks_input(evaluator):
    images, _, captions = render_real_batch(4, image_size=32, max_objects=4, start=100)
    scenes = evaluator.predict(images)
    want = [parse_caption(c) for c in captions]
    assert [s.background for s in scenes] == [w["background"] for w in want]
    assert [sorted(s.cells()) for s in scenes] == [sorted(o["position"] for o in w["objects"]) for w in want]
    with pytest.raises(ConfigError, match=r"uint8 \(N, H, W, 3\)"):
        evaluator.predict(images.astype(np.float32))


# Features for a Fréchet distance ----------------------------------------------------------------
def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (N, F)."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def add_noise(images: np.ndarray, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0.0, sigma, images.shape)
    return np.clip(np.rint(images + noise), 0, 255).astype(np.uint8)


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    out = scipy.ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, sigma, sigma, 0), mode="nearest")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def two_real_batches():
    first, _, _ = render_real_batch(512, image_size=32, max_objects=4, start=0)
    second, _, _ = render_real_batch(512, image_size=32, max_objects=4, start=10_000)
    return first, second


def test_fd_separates_real_from_noisy_and_grows_with_corruption(evaluator, two_real_batches):
    first, second = two_real_batches
    reference = evaluator.features(second)
    assert reference.shape == (512, FEATURE_DIM) and reference.dtype == np.float64
    real = frechet(evaluator.features(first), reference)
    noisy = [frechet(evaluator.features(add_noise(first, s)), reference) for s in (0, 8, 16, 32, 64)]
    blurred = [frechet(evaluator.features(blur(first, s)), reference) for s in (0.5, 1.0, 2.0)]
    print(f"FD real {real:.3f}, noise {np.round(noisy, 3)}, blur {np.round(blurred, 3)}")
    assert noisy[0] == pytest.approx(real)  # sigma 0 changes nothing
    assert real < 0.1 * noisy[3]
    assert all(a < b for a, b in zip(noisy, noisy[1:]))
    assert all(a < b for a, b in zip([real] + blurred, blurred))


def test_features_of_any_size_and_batching(evaluator):
    images, _, _ = render_real_batch(10, image_size=48, max_objects=2)
    whole = evaluator.features(images)
    # batch size changes the conv kernels' summation order: float32 rounding of features up to ~10
    # (2e-6 absolute on an AMD EPYC without AVX-512), far below any difference a score would see
    np.testing.assert_allclose(evaluator.features(images, batch_size=3), whole, rtol=1e-5, atol=1e-5)
    assert evaluator.features(images[:0]).shape == (0, FEATURE_DIM)


# Loading ----------------------------------------------------------------------------------------
def test_shipped_weights_load_strictly_and_are_cached(evaluator):
    assert se.DEFAULT_WEIGHTS.stat().st_size < 1_000_000
    assert load_shapes_evaluator() is evaluator
    assert not evaluator.model.training
    meta = evaluator.metadata
    assert meta["format"] == se.FORMAT and int(meta["steps"]) > 0 and meta["seed"] == "0"
    again = load_shapes_evaluator(se.DEFAULT_WEIGHTS)  # a path: a fresh, uncached load
    assert again is not evaluator
    assert all((a == b).all() for a, b in zip(again.model.state_dict().values(), evaluator.model.state_dict().values()))


def test_bad_weights_files_raise_one_line_checkpoint_errors(tmp_path, evaluator):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(se.DEFAULT_WEIGHTS.read_bytes()[:5000])
    missing = tmp_path / "missing.safetensors"
    se.save_shapes_evaluator(se.ShapesNet(), tmp_path / "ok.safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "ok.safetensors")
    state.pop("background.bias")
    save_file(state, tmp_path / "short.safetensors")
    for path in (corrupt, missing, tmp_path / "short.safetensors"):
        with pytest.raises(CheckpointError, match="^cannot load shapes evaluator weights [^\n]*$"):
            load_shapes_evaluator(path)
    assert load_shapes_evaluator(tmp_path / "ok.safetensors").metadata["format"] == se.FORMAT


# Training ---------------------------------------------------------------------------------------
def test_training_batches_are_real_images_with_matching_targets():
    x, targets = se.training_batch(3, 16)
    again, _ = se.training_batch(3, 16)
    assert x.shape == (16, 3, 32, 32) and torch.equal(x, again)  # a batch depends on its step alone
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert not torch.equal(x, se.training_batch(4, 16)[0])
    occupied = targets["occupied"].sum(1)
    assert occupied.min() >= 1 and occupied.max() <= 4 and occupied.float().mean() > 1.5  # several shapes mixed in
    assert ((targets["kind"] >= 0) == (targets["occupied"] == 1)).all()  # attributes exactly on occupied cells


def test_training_is_deterministic_for_a_seed():
    def weights(seed):
        model = se.train_shapes_evaluator(seed=seed, steps=2, batch_size=8, progress=False)
        assert not model.training and model.training_info["steps"] == 2
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    first = weights(0)
    assert torch.equal(first, weights(0)) and not torch.equal(first, weights(1))
    with pytest.raises(ConfigError, match="steps >= 1"):
        se.train_shapes_evaluator(steps=0)
