"""The quality metrics: Fréchet distance, Inception Score, precision/recall, sample batches, evaluate.

Values are checked against closed forms and hand counts (ADM's conventions: squared distances, the
k-th neighbour excluding the point itself, ``<=`` on the ball's boundary, IS splits in order).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from PIL import Image

from ditscale.errors import ConfigError, DataError
from ditscale.metrics.batch import ImageBatch, load_batch, save_batch, save_reference_stats
from ditscale.metrics.evaluate import (
    InceptionMetrics,
    ShapesMetrics,
    evaluate_inception,
    evaluate_shapes,
    inception_statistics,
)
from ditscale.metrics.frechet import feature_statistics, frechet_distance, frechet_distance_eig
from ditscale.metrics.scores import inception_score, manifold_radii, precision_recall


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# Fréchet distance -------------------------------------------------------------------------------
def test_feature_statistics_are_float64_mean_and_unbiased_covariance():
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (6, 6)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    centred = x.astype(np.float64) - mu
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-10)
    assert feature_statistics(x[:, :1])[1].shape == (1, 1)
    with pytest.raises(DataError) as err:
        feature_statistics(x[:1])
    assert "at least 2" in one_line(err)
    with pytest.raises(ConfigError):
        feature_statistics(x[0])


def test_fd_of_identical_statistics_is_zero():
    mu, sigma = feature_statistics(np.random.default_rng(1).normal(size=(200, 16)))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    assert abs(frechet_distance_eig(mu, sigma, mu, sigma)) < 1e-6


def test_fd_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    a, b = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.1, 3.0, size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance_eig(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_fd_of_rotated_commuting_covariances_is_the_closed_form():
    # S1 = Q diag(a) Q^T and S2 = Q diag(b) Q^T share eigenvectors: sqrtm(S1 S2) = Q diag(sqrt(ab)) Q^T.
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.2, 2.0, size=6), rng.uniform(0.2, 2.0, size=6)
    mu1, mu2 = np.zeros(6), np.full(6, 0.5)
    expected = 6 * 0.25 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_fd_of_general_covariances_matches_the_eigenvalue_form():
    rng = np.random.default_rng(4)
    s1, s2 = random_spd(rng, 12), random_spd(rng, 12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(frechet_distance_eig(mu1, s1, mu2, s2), rel=1e-9)
    assert got == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)  # symmetric
    assert got > 0.1


def test_fd_retries_with_eps_when_the_product_has_no_finite_square_root():
    # Rank-1 S1 = a a^T with a = (1, 0, 1): S1 S2 = a (S2 a)^T has one nonzero eigenvalue a^T S2 a = 10,
    # so tr sqrtm(S1 S2) = sqrt(10); scipy's sqrtm returns NaN for this singular product.
    s1 = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    s2 = np.array([[5.0, -4.0, 2.0], [-4.0, 5.0, -1.0], [2.0, -1.0, 1.0]])
    z = np.zeros(3)
    exact = 2.0 + 11.0 - 2.0 * math.sqrt(10.0)
    with pytest.warns(RuntimeWarning, match="singular"):
        got = frechet_distance(z, s1, z, s2)
    assert math.isfinite(got) and got == pytest.approx(exact, abs=1e-2)  # eps * I moves it by O(sqrt(eps))
    assert frechet_distance_eig(z, s1, z, s2) == pytest.approx(exact, rel=1e-12)


def test_fd_with_a_large_imaginary_part_is_a_one_line_error():
    # diag(1, -1) is no covariance: sqrtm of the product has imaginary part 1 on the diagonal.
    with pytest.raises(DataError) as err:
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    assert "imaginary component 1 " in one_line(err)


def test_fd_checks_shapes_and_values():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ConfigError) as err:
        frechet_distance(mu, sigma, np.zeros(4), np.eye(4))
    assert "(3,) and (4,)" in one_line(err)
    with pytest.raises(ConfigError) as err:
        frechet_distance(mu, sigma, mu, np.eye(4))
    assert "sigma2 has shape (4, 4)" in one_line(err)
    with pytest.raises(ConfigError):
        frechet_distance_eig(mu, np.eye(2), mu, sigma)
    with pytest.raises(DataError) as err:
        frechet_distance(np.array([0.0, np.nan, 0.0]), sigma, mu, sigma)
    assert "NaN" in one_line(err)


# Inception Score ------------------------------------------------------------------------------
def test_is_of_confident_evenly_spread_predictions_is_the_number_of_classes():
    logits = np.tile(40.0 * np.eye(10), (3, 1))  # 30 images, 3 of each of 10 classes
    assert inception_score(logits) == pytest.approx(10.0, rel=1e-9)


def test_is_of_identical_predictions_is_one():
    row = np.random.default_rng(5).normal(size=7)
    assert inception_score(np.tile(row, (20, 1))) == pytest.approx(1.0, abs=1e-12)
    # softmax underflows to exact zeros: still finite (0 log 0 = 0), still 1
    assert inception_score(np.tile([0.0, -2000.0, 5.0], (4, 1))) == pytest.approx(1.0, abs=1e-12)


def test_is_equals_the_hand_computed_value():
    p = [[0.5, 0.5], [0.9, 0.1]]
    marginal = [0.7, 0.3]
    kl = [sum(pi * math.log(pi / mi) for pi, mi in zip(row, marginal)) for row in p]
    expected = math.exp((kl[0] + kl[1]) / 2)
    logits = np.log(np.array(p)) + np.array([[3.0], [-1.0]])  # a constant per row does not change the softmax
    assert inception_score(logits) == pytest.approx(expected, rel=1e-12)


def test_is_splits_are_consecutive_and_the_last_may_be_smaller():
    confident = 40.0 * np.eye(2)
    # splits of 2 in order: [class 0, class 1] -> 2, [class 0, class 0] -> 1, [class 1] alone -> 1
    logits = np.concatenate([confident[[0, 1]], confident[[0, 0]], confident[[1]]])
    assert inception_score(logits, split_size=2) == pytest.approx((2 + 1 + 1) / 3, rel=1e-9)
    # the same images in another order give other splits: [0, 0] -> 1, [1, 1] -> 1, [0] -> 1
    assert inception_score(logits[[0, 2, 1, 4, 3]], split_size=2) == pytest.approx(1.0, rel=1e-9)
    # one split of all 5 images: p(y) = (3/5, 2/5)
    expected = math.exp(-(3 / 5) * math.log(3 / 5) - (2 / 5) * math.log(2 / 5))
    assert inception_score(logits, split_size=5000) == pytest.approx(expected, rel=1e-9)


def test_is_rejects_bad_input():
    with pytest.raises(ConfigError):
        inception_score(np.zeros(5))
    with pytest.raises(ConfigError):
        inception_score(np.zeros((5, 3)), split_size=0)
    with pytest.raises(DataError) as err:
        inception_score(np.array([[0.0, np.inf]]))
    assert "NaN or inf" in one_line(err)


# Precision and recall ---------------------------------------------------------------------------
def column(values) -> np.ndarray:
    return np.array(values, dtype=np.float64)[:, None]


def test_radii_are_squared_distances_to_the_kth_neighbour_excluding_self():
    real = column([0, 1, 2, 3, 4])
    np.testing.assert_array_equal(manifold_radii(real, 3), [9, 4, 4, 4, 9])
    np.testing.assert_array_equal(manifold_radii(real, 1), [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(manifold_radii(column([0, 0, 5, 7]), 1), [0, 0, 4, 4])  # a duplicate is a neighbour


def test_precision_recall_count_points_on_the_ball_boundary_as_inside():
    real, fake = column([0, 1, 3, 6]), column([9, 10, -1, -2, 5])
    # k=1 squared radii: real 0:1 1:1 3:4 6:9; fake -2:1 -1:1 5:16 9:1 10:1
    # precision: 9 (|9-6|^2 = 9 <= 9), -1 (1 <= 1) and 5 are in a real ball; 10 and -2 are not -> 3/5
    # recall: 0 (|0+1|^2 = 1 <= 1), 1 (|1-5|^2 = 16 <= 16), 3 and 6 are in a fake ball -> 4/4
    assert precision_recall(real, fake, k=1) == (0.6, 1.0)
    # with ADM's k=3 on 0..4: radius of 0 and 4 is 9, so 7 and -3 lie on the boundary, 8 is outside
    assert precision_recall(column([0, 1, 2, 3, 4]), column([-3, 2.5, 7, 8]), k=3) == (0.75, 1.0)


def test_precision_recall_of_a_set_against_itself_is_one_and_disjoint_sets_zero():
    x = np.random.default_rng(6).normal(size=(30, 5))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_precision_recall_blocks_give_the_answer_of_one_block():
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(60, 8)), rng.normal(size=(45, 8)) * 1.4 + 0.3
    whole = precision_recall(real, fake, max_elements=10**9)
    assert 0.0 < whole[0] < 1.0 and 0.0 < whole[1] < 1.0 and whole[0] != whole[1]
    assert precision_recall(real, fake, max_elements=1) == whole  # one row at a time
    assert precision_recall(real, fake, max_elements=7 * 60) == whole  # 7 rows of 60 (last block smaller)
    # (one row at a time BLAS rounds differently in the last bit)
    np.testing.assert_allclose(manifold_radii(real, 3, max_elements=1), manifold_radii(real, 3), rtol=1e-12)
    assert precision_recall(real, fake, dtype=np.float32) == whole


def test_precision_recall_rejects_bad_input():
    x = np.zeros((5, 2))
    with pytest.raises(DataError) as err:
        precision_recall(x, x[:3])
    assert "k=3 needs more than 3" in one_line(err)
    with pytest.raises(ConfigError) as err:
        precision_recall(x, np.zeros((5, 3)))
    assert "different widths" in one_line(err)
    with pytest.raises(ConfigError):
        precision_recall(x, x, k=0)


# Sample batches ---------------------------------------------------------------------------------
def images(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_npz_batch_round_trips_with_labels_names_and_captions(tmp_path):
    ims = images(3)
    path = save_batch(
        tmp_path / "b.npz",
        ims,
        labels=[2, 0, 1],
        label_names=["circle", "red square", "star"],
        captions=["a red circle", "two squares", "ünïcode"],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz"]  # atomic: no temp file left
    with np.load(path, allow_pickle=False) as raw:
        assert raw["captions"].dtype.kind == raw["label_names"].dtype.kind == "U"
    batch = load_batch(path)
    np.testing.assert_array_equal(batch.images, ims)
    assert batch.labels.dtype == np.int64 and batch.labels.tolist() == [2, 0, 1]
    assert batch.label_names == ("circle", "red square", "star")
    assert batch.captions == ("a red circle", "two squares", "ünïcode")
    assert batch.stats is None and batch.path == path and batch.num_images == 3


def test_stats_only_reference_round_trips(tmp_path):
    rng = np.random.default_rng(8)
    stats = {
        "mu": rng.normal(size=4),
        "sigma": random_spd(rng, 4),
        "mu_s": rng.normal(size=3),
        "sigma_s": random_spd(rng, 3),
    }
    batch = load_batch(save_reference_stats(tmp_path / "ref.npz", stats))
    assert batch.images is None and batch.num_images == 0 and sorted(batch.stats) == sorted(stats)
    for key, value in stats.items():
        np.testing.assert_array_equal(batch.stats[key], value)
    # a pytorch-fid statistics file (mu, sigma only) is a reference without spatial statistics
    np.savez(tmp_path / "pfid.npz", mu=stats["mu"].astype(np.float32), sigma=stats["sigma"])
    assert sorted(load_batch(tmp_path / "pfid.npz").stats) == ["mu", "sigma"]


def test_image_folder_is_read_sorted_by_name_as_rgb(tmp_path):
    ims = images(3, size=6)
    Image.fromarray(ims[1]).save(tmp_path / "b.png")
    Image.fromarray(ims[0]).save(tmp_path / "a.bmp")
    Image.fromarray(ims[2]).convert("RGBA").save(tmp_path / "c.PNG")
    Image.fromarray(ims[0][..., 0]).save(tmp_path / "d.png")  # grayscale: converted to RGB
    (tmp_path / "notes.txt").write_text("not an image")
    batch = load_batch(tmp_path)
    assert batch.images.shape == (4, 6, 6, 3) and batch.labels is None
    np.testing.assert_array_equal(batch.images[:3], ims)
    np.testing.assert_array_equal(batch.images[3], np.repeat(ims[0][..., :1], 3, axis=-1))


def _write(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


MALFORMED = {
    "missing": (lambda d: d / "nope.npz", "does not exist"),
    "grayscale NHW": (lambda d: _write(d / "x.npz", arr_0=images(2)[..., 0]), "uint8 (2, 8, 8)"),
    "one channel": (lambda d: _write(d / "x.npz", arr_0=images(2)[..., :1]), "(2, 8, 8, 1) (grayscale?"),
    "float images": (lambda d: _write(d / "x.npz", arr_0=images(2).astype(np.float32)), "got float32"),
    "labels rows": (lambda d: _write(d / "x.npz", arr_0=images(2), labels=np.array([1])), "labels has 1 rows"),
    "float labels": (lambda d: _write(d / "x.npz", arr_0=images(2), labels=np.array([1.0, 2.0])), "integer"),
    "label range": (
        lambda d: _write(d / "x.npz", arr_0=images(2), labels=np.array([0, 2]), label_names=np.array(["a", "b"])),
        "[0, 1]",
    ),
    "captions rows": (
        lambda d: _write(d / "x.npz", arr_0=images(2), captions=np.array(["a", "b", "c"])),
        "captions has 3 rows",
    ),
    "object captions": (
        lambda d: _write(d / "x.npz", arr_0=images(2), captions=np.array(["a", "b"], dtype=object)),
        "holds Python objects",
    ),
    "no images or stats": (lambda d: _write(d / "x.npz", labels=np.array([1])), "neither images"),
    "mu without sigma": (lambda d: _write(d / "x.npz", mu=np.zeros(3)), "without its pair"),
    "sigma shape": (lambda d: _write(d / "x.npz", mu=np.zeros(3), sigma=np.eye(2)), "must be float (D,) and (D, D)"),
    "text file": (lambda d: (d / "x.npz").write_text("hello") and d / "x.npz", "cannot read"),
    "npy file": (lambda d: np.save(d / "x.npy", images(2)) or d / "x.npy", "single .npy array"),
    "empty folder": (lambda d: (d / "empty").mkdir() or d / "empty", "has no png/jpg"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_batches_are_one_line_errors(tmp_path, case):
    make, expected = MALFORMED[case]
    with pytest.raises(DataError) as err:
        load_batch(make(tmp_path))
    assert expected in one_line(err)


def test_folder_with_an_odd_size_or_a_broken_image_names_the_file(tmp_path):
    Image.fromarray(images(1, size=8)[0]).save(tmp_path / "a.png")
    Image.fromarray(images(1, size=6)[0]).save(tmp_path / "b.png")
    with pytest.raises(DataError) as err:
        load_batch(tmp_path)
    assert "b.png' is 6x6 but 'a.png' is 8x8" in one_line(err)
    (tmp_path / "b.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError) as err:
        load_batch(tmp_path)
    assert "cannot decode image" in one_line(err) and "b.png" in str(err.value)


def test_save_batch_and_save_reference_stats_check_their_input(tmp_path):
    with pytest.raises(DataError) as err:
        save_batch(tmp_path / "x.npz", images(2)[..., 0])
    assert "(N, H, W, 3)" in one_line(err)
    with pytest.raises(DataError):
        save_batch(tmp_path / "x.npz", images(2), captions=["only one"])
    with pytest.raises(DataError) as err:
        save_reference_stats(tmp_path / "s.npz", {"mu_s": np.zeros(2), "sigma_s": np.eye(2)})
    assert "no mu/sigma" in one_line(err)
    assert not list(tmp_path.iterdir())


# evaluate: the math wired to stand-in feature networks ------------------------------------------
class FakeShapesEvaluator:
    """Features = the first 4 pixel values (as floats); accuracy = the fraction of labels equal to 0."""

    def __init__(self):
        self.accuracy_calls = []

    def features(self, images, batch_size=256):
        return images.reshape(len(images), -1)[:, :4].astype(np.float64)

    def accuracy(self, images, *, labels=None, label_names=None, captions=None):
        self.accuracy_calls.append((len(images), labels, label_names, captions))
        return float(np.mean(np.asarray(labels) == 0))

    def attribute_accuracies(self, images, conditions):
        return [{"all": self.accuracy(images, **c)} for c in conditions]


def test_evaluate_shapes_wires_features_to_fd_precision_recall_and_accuracy():
    fake_ims, real_ims = images(9, seed=1), images(12, seed=2) // 2  # unlike sets: precision != recall
    samples = ImageBatch(fake_ims, labels=np.array([0, 1, 0, 0, 2, 0, 1, 1, 0]), label_names=("a", "b", "c"))
    evaluator = FakeShapesEvaluator()
    got = evaluate_shapes(samples, ImageBatch(real_ims), evaluator, batch_size=4)  # 3 batches of features
    fake_f, real_f = evaluator.features(fake_ims), evaluator.features(real_ims)
    assert got.fd == pytest.approx(frechet_distance(*feature_statistics(fake_f), *feature_statistics(real_f)))
    assert (got.precision, got.recall) == precision_recall(real_f, fake_f)
    assert got.precision != got.recall
    assert got.accuracy == pytest.approx(5 / 9) and got.num_samples == 9
    assert evaluator.accuracy_calls[0][2] == ("a", "b", "c")
    assert list(got.to_dict()) == ["fd", "accuracy", "precision", "recall", "num_samples", "accuracy_class"]
    unlabelled = evaluate_shapes(ImageBatch(fake_ims), ImageBatch(real_ims), evaluator)
    assert unlabelled.accuracy is None and len(evaluator.accuracy_calls) == 1
    assert unlabelled.fd == pytest.approx(got.fd)


def test_evaluate_shapes_needs_images():
    stats_only = ImageBatch(None, stats={"mu": np.zeros(4), "sigma": np.eye(4)})
    with pytest.raises(DataError) as err:
        evaluate_shapes(ImageBatch(images(5)), stats_only, FakeShapesEvaluator())
    assert "reference batch" in one_line(err)


def fake_inception_features(model, images, *, batch_size=50, mode="adm", device="cpu", progress=False):
    """Stand-in for the Inception network: pool / spatial / logits from the pixels (float64)."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    return {"pool": flat[:, :5], "spatial": flat[:, 5:8], "logits": flat[:, 8:12] / 64.0}


@pytest.fixture
def fake_inception(monkeypatch):
    import ditscale.metrics.inception as inception

    monkeypatch.setattr(inception, "inception_features", fake_inception_features)


def test_evaluate_inception_wires_features_to_the_adm_metrics(fake_inception, tmp_path):
    fake_ims, real_ims = images(10, seed=3), images(14, seed=4) // 2
    got = evaluate_inception(
        ImageBatch(fake_ims), ImageBatch(real_ims), model=None, save_ref_stats=tmp_path / "ref.npz"
    )
    fake, real = fake_inception_features(None, fake_ims), fake_inception_features(None, real_ims)
    stats = {k: feature_statistics(v) for k, v in fake.items()}
    ref = {k: feature_statistics(v) for k, v in real.items()}
    assert got.fid == pytest.approx(frechet_distance(*stats["pool"], *ref["pool"]))
    assert got.sfid == pytest.approx(frechet_distance(*stats["spatial"], *ref["spatial"]))
    assert got.fid != pytest.approx(got.sfid)
    assert got.inception_score == pytest.approx(inception_score(fake["logits"]))
    assert (got.precision, got.recall) == precision_recall(real["pool"], fake["pool"])
    assert got.num_samples == 10
    assert list(got.to_dict()) == ["fid", "sfid", "inception_score", "precision", "recall", "num_samples"]
    # the saved reference statistics give the same FID and sFID, without precision/recall
    again = evaluate_inception(ImageBatch(fake_ims), load_batch(tmp_path / "ref.npz"), model=None)
    assert (again.fid, again.sfid) == (pytest.approx(got.fid), pytest.approx(got.sfid))
    assert again.precision is None and again.recall is None


def test_evaluate_inception_uses_the_reference_statistics_when_present(fake_inception):
    fake_ims, real_ims = images(6, seed=5), images(6, seed=6)
    stored = {"mu": np.full(5, 7.0), "sigma": np.eye(5), "mu_s": np.zeros(3), "sigma_s": np.eye(3)}
    got = evaluate_inception(ImageBatch(fake_ims), ImageBatch(real_ims, stats=stored), model=None)
    mu, sigma = feature_statistics(fake_inception_features(None, fake_ims)["pool"])
    assert got.fid == pytest.approx(frechet_distance(mu, sigma, stored["mu"], stored["sigma"]))
    assert got.precision is not None  # the reference's images still give precision/recall
    assert inception_statistics(ImageBatch(real_ims, stats=stored), model=None) == stored
    pfid = evaluate_inception(ImageBatch(fake_ims), ImageBatch(None, stats={"mu": mu, "sigma": sigma}), model=None)
    assert abs(pfid.fid) < 1e-6 and pfid.sfid is None and pfid.precision is None


def test_inception_statistics_from_images(fake_inception):
    ims = images(7, seed=9)
    stats = inception_statistics(ImageBatch(ims), model=None)
    mu, sigma = feature_statistics(fake_inception_features(None, ims)["spatial"])
    assert sorted(stats) == ["mu", "mu_s", "sigma", "sigma_s"]
    np.testing.assert_allclose(stats["mu_s"], mu)
    np.testing.assert_allclose(stats["sigma_s"], sigma)
    with pytest.raises(DataError):
        inception_statistics(ImageBatch(None, stats={"mu": mu, "sigma": sigma}), model=None)


def test_metrics_to_dict_keeps_none():
    assert InceptionMetrics(1.0, None, 2.0, None, None, 3).to_dict()["sfid"] is None
    assert ShapesMetrics(1.0, None, 0.5, 0.25, 4).to_dict() == {
        "fd": 1.0,
        "accuracy": None,
        "precision": 0.5,
        "recall": 0.25,
        "num_samples": 4,
    }


# evaluate: end to end with the real networks (random weights) -----------------------------------
def test_evaluate_shapes_end_to_end_with_a_random_weight_evaluator():
    import torch

    from ditscale.metrics.shapes_evaluator import ShapesEvaluator, ShapesNet

    torch.manual_seed(0)
    evaluator = ShapesEvaluator(ShapesNet())
    samples = ImageBatch(images(6, size=16, seed=10), labels=np.array([0, 1, 2, 3, 4, 5]))
    got = evaluate_shapes(samples, samples, evaluator)
    assert list(got.to_dict()) == ["fd", "accuracy", "precision", "recall", "num_samples", "accuracy_class"]
    assert abs(got.fd) < 1e-8 and (got.precision, got.recall) == (1.0, 1.0) and got.num_samples == 6
    assert 0.0 <= got.accuracy <= 1.0
    grey = np.repeat(np.arange(0, 200, 40, dtype=np.uint8), 24 * 24 * 3).reshape(5, 24, 24, 3)  # other size
    other = evaluate_shapes(samples, ImageBatch(grey), evaluator)
    assert other.fd > 1e-5 and other.recall < 1.0  # random weights: small features, yet apart


def test_evaluate_shapes_with_the_shipped_evaluator():
    from ditscale.metrics.shapes_evaluator import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_WEIGHTS.name} is not built yet")
    from ditscale.metrics.shapes_evaluator import render_real_batch

    real, _, captions = render_real_batch(64, image_size=16, max_objects=1)
    other, _, _ = render_real_batch(64, image_size=16, max_objects=1, start=1000)
    got = evaluate_shapes(ImageBatch(real, captions=tuple(captions)), ImageBatch(other))
    assert got.accuracy >= 0.98 and got.fd > 0 and got.precision > 0.5 and got.recall > 0.5
    wrong = evaluate_shapes(ImageBatch(real, captions=tuple(captions[1:] + captions[:1])), ImageBatch(other))
    assert wrong.accuracy < 0.2 and wrong.fd == pytest.approx(got.fd)  # the captions change the accuracy only


@pytest.mark.slow  # two scipy sqrtm of ~2048 x 2048 products: ~25 s each on one core
def test_evaluate_inception_end_to_end_with_random_weights():
    import torch

    from ditscale.metrics.inception import FIDInceptionV3

    torch.manual_seed(0)
    model = FIDInceptionV3().eval()
    batch = ImageBatch(images(4, size=16, seed=14))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rank-3 covariances may take the eps retry
        got = evaluate_inception(batch, batch, model, batch_size=4)
    assert list(got.to_dict()) == ["fid", "sfid", "inception_score", "precision", "recall", "num_samples"]
    assert all(math.isfinite(v) for v in got.to_dict().values())
    assert abs(got.fid) < 1e-2 and abs(got.sfid) < 1e-2 and (got.precision, got.recall) == (1.0, 1.0)
    assert 1.0 <= got.inception_score <= 4.0 and got.num_samples == 4  # IS of N images is at most N
