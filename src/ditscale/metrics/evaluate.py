"""One call from a sample batch and a reference batch to the metrics.

- :func:`evaluate_inception`: ADM's suite (``evaluations/evaluator.py`` of guided-diffusion) on the
  FID-Inception network: FID on pool features, sFID on spatial features, Inception Score of the samples'
  logits, improved precision/recall (k = 3) on pool features. A reference's precomputed statistics
  (``mu``, ``sigma``, ``mu_s``, ``sigma_s``) are used when present, as ADM does; precision/recall need the
  reference's images, so a statistics-only reference gives ``None`` for them.
- :func:`evaluate_shapes`: the same Fréchet distance and precision/recall on the shipped shapes
  evaluator's features, and the fraction of samples that show their class or caption.

With ``frame=True`` each also returns the scores' frame (:mod:`ditscale.metrics.frame`): the real-vs-real
floor of two halves of the reference scored by the same code, and the chance level and real-image ceiling
of each accuracy.

The feature networks are imported only when called, so this module loads without torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ditscale.errors import ConfigError, DataError
from ditscale.metrics.batch import STAT_KEYS, STAT_PAIRS, ImageBatch, save_reference_stats
from ditscale.metrics.frame import QualityFrame, real_vs_real, shuffled
from ditscale.metrics.frechet import feature_statistics, frechet_distance
from ditscale.metrics.scores import inception_score, precision_recall

# Inception feature key -> the statistics keys it yields (pool -> FID, spatial -> sFID).
FEATURE_STATS = {"pool": STAT_PAIRS[0], "spatial": STAT_PAIRS[1]}


@dataclass
class InceptionMetrics:
    """ADM's metrics of a sample batch: FID and sFID (lower is better), Inception Score, precision and
    recall in [0, 1] (None when the reference carries statistics only; sFID None when it has no spatial
    statistics and no images), the number of samples evaluated, and their frame (None unless asked for)."""

    fid: float
    sfid: float | None
    inception_score: float
    precision: float | None
    recall: float | None
    num_samples: int
    frame: QualityFrame | None = None

    def scores(self) -> dict[str, Any]:
        """{"fid", "sfid", "inception_score", "precision", "recall", "num_samples"}."""
        return _scores(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready :meth:`scores`, and with a frame its keys (:meth:`QualityFrame.to_dict`)."""
        return _with_frame(self)


@dataclass
class ShapesMetrics:
    """The shapes evaluator's metrics: Fréchet distance of its features (lower is better), accuracy (the
    fraction of samples showing their class or caption; None without labels or captions), precision and
    recall in [0, 1], the number of samples evaluated, each accuracy the conditions name (``named``,
    :func:`named_accuracies`: ``accuracy_all`` and ``accuracy_<attribute>`` for captions,
    ``accuracy_class`` for labels; {} unconditioned) and their frame (None unless asked for)."""

    fd: float
    accuracy: float | None
    precision: float
    recall: float
    num_samples: int
    named: dict[str, float] = dataclasses.field(default_factory=dict)
    frame: QualityFrame | None = None

    def scores(self) -> dict[str, Any]:
        """{"fd", "accuracy", "precision", "recall", "num_samples"} and the named accuracies (flat keys, as a
        study's quality.csv names them)."""
        scores = _scores(self)
        named = scores.pop("named")
        return {**scores, **named}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready :meth:`scores`, and with a frame its keys (:meth:`QualityFrame.to_dict`)."""
        return _with_frame(self)


def _scores(metrics: InceptionMetrics | ShapesMetrics) -> dict[str, Any]:
    return {f.name: getattr(metrics, f.name) for f in dataclasses.fields(metrics) if f.name != "frame"}


def _with_frame(metrics: InceptionMetrics | ShapesMetrics) -> dict[str, Any]:
    scores = metrics.scores()
    return scores if metrics.frame is None else {**scores, **metrics.frame.to_dict()}


def _named(batch: ImageBatch) -> str:
    return f" '{batch.path}'" if batch.path is not None else ""


def _images(batch: ImageBatch, role: str, why: str) -> np.ndarray:
    if batch.images is None:
        raise DataError(f"the {role}{_named(batch)} has no images (arr_0), which {why}; pass a batch with images")
    return batch.images


def _statistics(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{"mu", "sigma", "mu_s", "sigma_s"} float64 of Inception features {"pool": (N, 2048), "spatial": (N, 2023)}."""
    stats = {}
    for key, (mu_key, sigma_key) in FEATURE_STATS.items():
        stats[mu_key], stats[sigma_key] = feature_statistics(features[key])
    return stats


def inception_statistics(
    batch: ImageBatch, model, *, batch_size: int = 50, mode: str = "adm", device: str = "cpu", progress: bool = False
) -> dict[str, np.ndarray]:
    """Inception statistics of a batch: float64 ``mu`` (2048,), ``sigma`` (2048, 2048), ``mu_s`` (2023,),
    ``sigma_s`` (2023, 2023); the batch's stored ones when it carries all four, else computed from its images
    with ``model`` (a :class:`~ditscale.metrics.inception.FIDInceptionV3`)."""
    from ditscale.metrics.inception import inception_features  # lazy: torch; this module loads without it

    stored = batch.stats or {}
    if all(key in stored for key in STAT_KEYS):
        return dict(stored)
    images = _images(batch, "batch", "its missing statistics need")
    features = inception_features(model, images, batch_size=batch_size, mode=mode, device=device, progress=progress)
    return {**_statistics(features), **stored}


def _fd(stats1: dict[str, np.ndarray], stats2: dict[str, np.ndarray], pair: tuple[str, str]) -> float | None:
    mu, sigma = pair
    return frechet_distance(stats1[mu], stats1[sigma], stats2[mu], stats2[sigma]) if mu in stats2 else None


def evaluate_inception(
    samples: ImageBatch,
    ref: ImageBatch,
    model,
    *,
    batch_size: int = 50,
    mode: str = "adm",
    device: str = "cpu",
    progress: bool = False,
    save_ref_stats: str | Path | None = None,
    frame: bool = False,
    frame_seed: int = 0,
) -> InceptionMetrics:
    """FID, sFID, Inception Score and precision/recall of ``samples`` against ``ref`` with ``model`` (a
    :class:`~ditscale.metrics.inception.FIDInceptionV3`); ``mode`` is its preprocessing ("adm" or
    "pytorch-fid"). ``save_ref_stats`` also writes the reference statistics used to that ``.npz``.
    ``frame`` adds the real-vs-real floor of each score (:func:`_inception_floor`; no accuracy, so no chance)."""
    from ditscale.metrics.inception import inception_features  # lazy: torch; this module loads without it

    if ref.images is None and not (ref.stats and "mu" in ref.stats):
        raise DataError(
            f"the reference batch{_named(ref)} has neither images (arr_0) nor statistics (mu, sigma); "
            "pass a reference batch from ADM or one written by save_batch / --save-ref-stats"
        )
    options = dict(batch_size=batch_size, mode=mode, device=device, progress=progress)
    fake = inception_features(model, _images(samples, "sample batch", "the metrics need"), **options)
    real = inception_features(model, ref.images, **options) if ref.images is not None else None
    # Stored reference statistics win over those of its images, as in ADM's read_statistics.
    ref_stats = dict(ref.stats or {})
    if real is not None and not all(key in ref_stats for key in STAT_KEYS):
        ref_stats = {**_statistics(real), **ref_stats}
    if save_ref_stats is not None:  # before the metrics: a long reference pass is kept even if they fail
        save_reference_stats(save_ref_stats, ref_stats)
    fake_stats = _statistics(fake)
    precision, recall = precision_recall(real["pool"], fake["pool"]) if real is not None else (None, None)
    return InceptionMetrics(
        fid=_fd(fake_stats, ref_stats, STAT_PAIRS[0]),
        sfid=_fd(fake_stats, ref_stats, STAT_PAIRS[1]),
        inception_score=inception_score(fake["logits"]),
        precision=precision,
        recall=recall,
        num_samples=len(samples.images),
        frame=_inception_frame(real, len(samples.images), frame_seed) if frame else None,
    )


def _inception_floor(real: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """Reference images ``a`` scored against reference images ``b`` (indices into Inception features
    ``real``) as :func:`evaluate_inception` scores samples: FID, sFID, precision/recall, and the IS of ``a``."""
    half_a, half_b = ({key: value[idx] for key, value in real.items()} for idx in (a, b))
    stats_a, stats_b = _statistics(half_a), _statistics(half_b)
    precision, recall = precision_recall(half_b["pool"], half_a["pool"])
    return {
        "fid": _fd(stats_a, stats_b, STAT_PAIRS[0]),
        "sfid": _fd(stats_a, stats_b, STAT_PAIRS[1]),
        "inception_score": inception_score(half_a["logits"]),
        "precision": precision,
        "recall": recall,
    }


def _inception_frame(real: dict[str, np.ndarray] | None, num_samples: int, seed: int) -> QualityFrame:
    """The floor of :func:`_inception_floor` on two halves of the reference; none for a statistics-only one."""
    if real is None:
        note = "no real-vs-real floor: the reference holds statistics only; pass a reference with its images"
        return QualityFrame(None, None, {}, {}, (note,))
    floor, n, note = real_vs_real(len(real["pool"]), num_samples, lambda a, b: _inception_floor(real, a, b), seed)
    return QualityFrame(floor, n, {}, {}, (note,) if note else ())


def shapes_features(evaluator, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """The shapes evaluator's features float64 (N, F) of ``images``, a tqdm bar over batches when ``progress``."""
    from tqdm.auto import tqdm  # lazy: tqdm.auto imports asyncio (~20 ms); study start-up imports this module

    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    starts = range(0, len(images), batch_size)
    parts = [
        evaluator.features(images[s : s + batch_size], batch_size=batch_size)
        for s in tqdm(starts, desc="shapes evaluator", unit="batch", disable=not progress)
    ]
    return np.concatenate(parts).astype(np.float64, copy=False)


def _shapes_scores(fake: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """{"fd", "precision", "recall"} of sample features ``fake`` (M, F) against reference features ``real`` (N, F)."""
    precision, recall = precision_recall(real, fake)
    fd = frechet_distance(*feature_statistics(fake), *feature_statistics(real))
    return {"fd": fd, "precision": precision, "recall": recall}


def evaluate_shapes(
    samples: ImageBatch,
    ref: ImageBatch,
    evaluator=None,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = False,
    frame: bool = False,
    frame_seed: int = 0,
    reference_features: np.ndarray | None = None,
) -> ShapesMetrics:
    """Fréchet distance and precision/recall (k = 3) of ``samples`` against ``ref`` on the shapes evaluator's
    features, and the samples' accuracies given their labels / label_names or captions: overall and each
    attribute the conditions name (:func:`named_accuracies`, the scenes predicted once; the overall
    accuracy is its ``accuracy_all`` / ``accuracy_class``). ``evaluator=None`` loads the shipped
    :class:`~ditscale.metrics.shapes_evaluator.ShapesEvaluator` on ``device``. ``frame`` adds the
    real-vs-real floor of FD, precision and recall and the chance level and ceiling of each accuracy
    (:func:`_shapes_frame`), drawn from ``frame_seed``.

    A caller scoring many sample batches against one reference passes its features once computed
    (``reference_features``, :func:`shapes_features` of ``ref``'s images, the same floats)."""
    fake_images = _images(samples, "sample batch", "the metrics need")
    real_images = _images(ref, "reference batch", "the shapes evaluator needs (stored statistics are Inception's)")
    if reference_features is not None and len(reference_features) != len(real_images):
        raise ConfigError(
            f"reference_features hold {len(reference_features)} rows for a reference of {len(real_images)} images; "
            "pass shapes_features of this reference's images"
        )
    if evaluator is None:
        from ditscale.metrics.shapes_evaluator import load_shapes_evaluator  # lazy: torch; this module loads without it

        evaluator = load_shapes_evaluator(device=device)
    fake = shapes_features(evaluator, fake_images, batch_size, progress)
    real = (
        shapes_features(evaluator, real_images, batch_size, progress)
        if reference_features is None
        else reference_features
    )
    scores = _shapes_scores(fake, real)
    named = named_accuracies(samples, evaluator)
    return ShapesMetrics(
        fd=scores["fd"],
        accuracy=overall_accuracy(named),
        precision=scores["precision"],
        recall=scores["recall"],
        num_samples=len(fake_images),
        named=named,
        frame=_shapes_frame(evaluator, samples, ref, real, frame_seed) if frame else None,
    )


def _reference_conditions(samples: ImageBatch, ref: ImageBatch) -> tuple[dict[str, Any] | None, str | None]:
    """The reference's conditions of the kind the samples' accuracy reads (captions, else labels) as keyword
    arguments of the evaluator's accuracy, or (None, why not); (None, None) for unconditioned samples."""
    if samples.captions is not None:
        kind, conditions = "captions", {"captions": ref.captions} if ref.captions is not None else None
    elif samples.labels is not None:
        names = ref.label_names or samples.label_names
        kind, conditions = "labels", {"labels": ref.labels, "label_names": names} if ref.labels is not None else None
    else:
        return None, None
    if conditions is None:
        return None, f"no chance level: the samples carry {kind} but the reference has none; export one that has"
    return conditions, None


# -- named accuracies and the frame of a study's quality stage (laws.json's quality_metrics) -----------------
# The evaluator's attributes (ShapesEvaluator.attribute_accuracy) under the names a study reports them by:
# captions name every attribute ("all": every one right), class labels only the class.
CAPTION_ACCURACIES = {
    "all": "accuracy_all",
    "kind": "accuracy_shape",
    "color": "accuracy_colour",
    "size": "accuracy_size",
    "count": "accuracy_count",
    "position": "accuracy_position",
    "background": "accuracy_background",
}
CLASS_ACCURACIES = {"all": "accuracy_class"}


def condition_kind(batch: ImageBatch) -> str | None:
    """What the samples' accuracy reads: "captions" (they win), "labels", or None for unconditioned samples."""
    return "captions" if batch.captions is not None else "labels" if batch.labels is not None else None


def _conditions(batch: ImageBatch, kind: str) -> dict[str, Any]:
    if kind == "captions":
        return {"captions": batch.captions}
    return {"labels": batch.labels, "label_names": batch.label_names}


def _by_name(scores: dict[str, float], kind: str) -> dict[str, float]:
    names = CAPTION_ACCURACIES if kind == "captions" else CLASS_ACCURACIES
    return {name: scores[key] for key, name in names.items() if key in scores}


def named_accuracies(samples: ImageBatch, evaluator) -> dict[str, float]:
    """The samples' accuracy of each attribute their conditions name, by name: ``accuracy_all`` and one
    ``accuracy_<attribute>`` per caption attribute (:data:`CAPTION_ACCURACIES`), or ``accuracy_class``
    for class labels (:data:`CLASS_ACCURACIES`); {} for unconditioned samples."""
    kind = condition_kind(samples)
    if kind is None:
        return {}
    images = _images(samples, "sample batch", "the accuracies need")
    return _by_name(evaluator.attribute_accuracies(images, [_conditions(samples, kind)])[0], kind)


def overall_accuracy(named: dict[str, float]) -> float | None:
    """The fraction of samples right on every attribute their conditions name, from
    :func:`named_accuracies` (its ``accuracy_all`` or ``accuracy_class``: the value of
    :meth:`ShapesEvaluator.accuracy`); None for unconditioned samples."""
    return named.get("accuracy_all", named.get("accuracy_class"))


def reference_frame(
    ref: ImageBatch, num_samples: int, kind: str | None, evaluator, *, batch_size: int = 256, seed: int = 0
) -> QualityFrame:
    """The frame of ``num_samples`` samples conditioned by ``kind`` (:func:`condition_kind`), from a reference
    of real images alone (hold at least 2 x ``num_samples`` for a floor at the samples' count):

    - floor of ``fd``, ``precision``, ``recall``: two random halves of the reference scored against each
      other (:func:`ditscale.metrics.frame.real_vs_real`, as :func:`evaluate_shapes` with ``frame=True``);
    - chance of each :func:`named_accuracies` name: its accuracy on all the reference's images with their
      conditions randomly permuted (:func:`ditscale.metrics.frame.shuffled`); ceiling: with their own.
    """
    images = _images(ref, "reference batch", "the frame needs")
    real = shapes_features(evaluator, images, batch_size, False)
    floor, n, note = real_vs_real(len(real), num_samples, lambda a, b: _shapes_scores(real[a], real[b]), seed)
    chance: dict[str, float | None] = {}
    ceiling: dict[str, float | None] = {}
    notes = [note] if note else []
    if kind is not None and (ref.captions if kind == "captions" else ref.labels) is None:
        notes.append(f"no chance level: the samples carry {kind} but the reference has none; export one that has")
    elif kind is not None:
        chance, ceiling = _chance_and_ceiling(evaluator, images, _conditions(ref, kind), kind, seed)
    return QualityFrame(floor, n, chance, ceiling, tuple(notes))


def _chance_and_ceiling(evaluator, images: np.ndarray, own: dict[str, Any], kind: str, seed: int):
    """({name: chance}, {name: ceiling}) of each :func:`named_accuracies` name: the accuracies of real
    ``images`` under their conditions ``own`` (of ``kind``) randomly permuted, and as they are (the
    scenes predicted once)."""
    key = "captions" if kind == "captions" else "labels"
    random, true = evaluator.attribute_accuracies(images, [{**own, key: shuffled(own[key], seed)}, own])
    return _by_name(random, kind), _by_name(true, kind)


def _shapes_frame(evaluator, samples: ImageBatch, ref: ImageBatch, real: np.ndarray, seed: int) -> QualityFrame:
    """Floor: :func:`_shapes_scores` of two halves of the reference's features ``real``. Chance and ceiling
    of the overall accuracy and of each named one (:func:`_chance_and_ceiling`): the accuracies of all the
    reference's images under its conditions shuffled, and as they are."""
    floor, n, floor_note = real_vs_real(
        len(real), len(samples.images), lambda a, b: _shapes_scores(real[a], real[b]), seed
    )
    conditions, chance_note = _reference_conditions(samples, ref)
    chance: dict[str, float | None] = {"accuracy": None}
    ceiling: dict[str, float | None] = {"accuracy": None}
    if conditions is not None:
        kind = "captions" if "captions" in conditions else "labels"
        named_chance, named_ceiling = _chance_and_ceiling(evaluator, ref.images, conditions, kind, seed)
        chance = {"accuracy": overall_accuracy(named_chance), **named_chance}
        ceiling = {"accuracy": overall_accuracy(named_ceiling), **named_ceiling}
    notes = tuple(note for note in (floor_note, chance_note) if note)
    return QualityFrame(floor, n, chance, ceiling, notes)
