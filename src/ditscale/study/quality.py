"""The quality stage of a study: sample the chosen models, score them, write ``quality.csv``.

Runs after training when the spec has a ``quality`` section (:class:`~ditscale.study.spec.QualityConfig`);
on local worker processes each finished budget's model is already sampled and scored on a worker
the training leaves idle (:class:`EarlyScoring`), and the stage does the rest.
Files in the study folder::

    quality/reference.npz        the reference batch: num_samples images of the study's data (val split)
    quality/samples/<run_id>.npz each chosen model's samples (arr_0, labels, label_names), written in
                                 resumable chunks by :func:`ditscale.generate.sample_npz`
    quality/scores/<run_id>.json each model's scores, with the settings that produced them
    quality/frame_reference.npz  2 x num_samples images of the val split (the first num_samples are the
                                 reference's), the real images of the frame (shapes evaluator)
    quality/frame.json           the frame of the scores (:func:`ditscale.metrics.evaluate.reference_frame`):
                                 FD's real-vs-real floor at num_samples images, each accuracy's chance
                                 level (real images, shuffled captions or labels) and real-image value
    quality.csv                  one row per scored model (:data:`QUALITY_CSV_COLUMNS`, and
                                 :data:`ATTRIBUTE_COLUMNS` for text-conditional studies)
    quality/steps/samples|scores/<run_id>-steps<K>.npz|.json
                                 ``study quality-steps`` (:func:`run_quality_steps`): a chosen model
                                 sampled and scored at K sampler steps (at the stage's own K: the files above)
    quality_steps.csv            one row per (model, steps) (:data:`STEPS_CSV_COLUMNS`): sampling FLOPs per
                                 image and scores

Text-conditional models are prompted with the captions of items 0..num_samples-1 of the val split
(held out from training; the reference's own captions), encoded by the run's own text encoder (the
word encoder trained with it, saved beside its weights, or the Hugging Face encoder its config names).

Idempotent and resumable: every file is written atomically; a sample file or score made with the
same settings is never made again, one made with other settings is redone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ditscale.config import from_dict
from ditscale.data.config import DataConfig
from ditscale.data.info import class_names
from ditscale.errors import WARNING, ConfigError, DataError, DitscaleError
from ditscale.flops import fmt_flops, forward_flops
from ditscale.io import atomic_write_json, atomic_write_text, parse_json, read_bytes
from ditscale.metrics.batch import load_batch
from ditscale.metrics.evaluate import (
    CAPTION_ACCURACIES,
    evaluate_inception,
    evaluate_shapes,
    reference_frame,
    shapes_features,
)
from ditscale.study.folder import StudyFolder, read_csv, write_csv
from ditscale.study.spec import QualityConfig, StudySpec
from ditscale.train.rundir import RunDir

# quality.csv: budget and flops in training FLOPs, params non-embedding, loss the run's val loss;
# the scores of the evaluator (fd, accuracy, precision, recall for shapes; fid, sfid,
# inception_score, precision, recall for inception); sample_s / eval_s wall seconds.
QUALITY_CSV_COLUMNS = [
    "run_id",
    "budget",
    "flops",
    "params",
    "loss",
    "optimal",
    "metric",
    "value",
    "fd",
    "fid",
    "sfid",
    "inception_score",
    "accuracy",
    "precision",
    "recall",
    "num_samples",
    "sample_s",
    "eval_s",
]
# the columns every quality.csv row has (the rest may be empty); those of text, the rest numbers
QUALITY_CSV_REQUIRED = ["run_id", "budget", "flops", "params", "loss", "optimal", "metric", "value"]
_QUALITY_TEXT = {"run_id", "metric"}
# quality.csv's further columns, written when a row has them: the accuracy of each caption attribute of a
# text-conditional study (``accuracy`` is every attribute right: laws.json's accuracy_all).
ATTRIBUTE_COLUMNS = [name for key, name in CAPTION_ACCURACIES.items() if key != "all"]


# -- which models ---------------------------------------------------------------------------------
def chosen_runs(rows: list[dict], spec: StudySpec) -> list[dict]:
    """The runs.csv rows to evaluate, each with ``optimal`` set: the lowest-loss run of each budget
    (study seed only: replicates measure noise), or every run of the study seed with ``runs: all``."""
    own = [r for r in rows if int(float(r["seed"])) == spec.seed]
    best: dict[float, dict] = {}
    for r in own:
        b = float(r["budget"])
        if b not in best or float(r["loss"]) < float(best[b]["loss"]):
            best[b] = r
    optimal = {r["run_id"] for r in best.values()}
    picked = own if spec.quality.runs == "all" else list(best.values())
    return [
        {**r, "optimal": r["run_id"] in optimal}
        for r in sorted(picked, key=lambda r: (float(r["budget"]), float(r["params"])))
    ]


def settings_sha(cfg: QualityConfig, data: dict) -> str:
    """SHA-256 of what a model's samples and scores depend on (besides its weights)."""
    text = json.dumps({"quality": vars(cfg), "data": data}, sort_keys=True)  # batch_size too: it seeds the noise
    return hashlib.sha256(text.encode()).hexdigest()


# -- the files ------------------------------------------------------------------------------------
class QualityFiles:
    """Paths of the quality stage in a study folder."""

    def __init__(self, folder: StudyFolder):
        self.root = folder.root / "quality"
        self.csv = folder.root / "quality.csv"
        self.steps = self.root / "steps"  # quality-steps' samples/ and scores/
        self.steps_csv = folder.root / "quality_steps.csv"

    @property
    def reference(self) -> Path:
        return self.root / "reference.npz"

    def samples(self, run_id: str) -> Path:
        return self.root / "samples" / f"{run_id}.npz"

    def scores(self, run_id: str) -> Path:
        return self.root / "scores" / f"{run_id}.json"

    def read_scores(self, run_id: str, sha: str, metric: str) -> dict | None:
        """A model's scores when they were made with settings ``sha`` and hold a number for ``metric``,
        else None (missing, damaged or of the wrong shape: the model is scored again)."""
        return _read_stamped(self.scores(run_id), sha, metric)

    @property
    def frame(self) -> Path:
        return self.root / "frame.json"

    @property
    def frame_reference(self) -> Path:
        return self.root / "frame_reference.npz"

    def read_frame(self, sha: str | None = None) -> dict | None:
        """frame.json (when made with settings ``sha``, if given), else None."""
        try:
            data = parse_json(read_bytes(self.frame))
        except (OSError, ValueError, DataError):
            return None
        if not isinstance(data, dict):
            return None
        return data if sha is None or data.get("settings_sha") == sha else None

    def write_csv(self, rows: list[dict]) -> None:
        extra = [c for c in ATTRIBUTE_COLUMNS if any(row.get(c) is not None for row in rows)]
        write_csv(self.csv, QUALITY_CSV_COLUMNS + extra, rows)

    def read_csv(self) -> list[dict[str, str]]:
        """``quality.csv`` as rows of text cells ([] when it does not exist), checked: every column
        the stage writes first (:data:`QUALITY_CSV_REQUIRED`) present, the numeric cells numbers
        (optional score columns may be empty). A one-line :class:`DataError` otherwise."""
        rows = read_csv(self.csv)
        missing = [c for c in QUALITY_CSV_REQUIRED if rows and c not in rows[0]]
        if missing:
            raise self._damaged(f"has no column {', '.join(missing)}")
        for i, row in enumerate(rows, start=2):
            for column, cell in row.items():
                if column in _QUALITY_TEXT or (cell in ("", None) and column not in QUALITY_CSV_REQUIRED):
                    continue
                try:
                    number = float(cell)
                except (TypeError, ValueError):
                    raise self._damaged(f"line {i}: {column} {str(cell)[:40]!r} is not a number") from None
                if column != "value" and not math.isfinite(number):
                    raise self._damaged(f"line {i}: {column} {cell!r} is not a finite number")
        return rows

    def _damaged(self, what: str) -> DataError:
        return DataError(
            f"{self.csv} is damaged ({what}); delete it and run `ditscale study run` on the study again "
            "to rewrite it from quality/scores"
        )


# -- the stage ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    """One model to sample and score: its runs.csv row, the settings, where its samples and scores go."""

    run: dict
    cfg: QualityConfig
    sha: str
    samples: Path
    scores: Path
    label: str


def _stage_job(files: QualityFiles, cfg: QualityConfig, sha: str, run: dict) -> _Job:
    """The quality stage's job of ``run`` (a runs.csv row): its own samples and score files."""
    return _Job(run, cfg, sha, files.samples(run["run_id"]), files.scores(run["run_id"]), run["run_id"])


class _Scorer:
    """Where the stage samples and scores, and the scoring network, loaded on first use."""

    def __init__(self, cfg: QualityConfig):
        self.cfg, self.device, self._net = cfg, None, None

    def net(self):
        if self._net is None:
            self.device = _device()
            self._net = _evaluator(self.cfg, self.device)
        return self._net


def run_quality(
    spec: StudySpec, out_dir: str | Path, *, progress: bool = True, echo: Callable[[str], None] = print
) -> int:
    """Sample and score the chosen models of the finished study in ``out_dir``; write
    ``quality.csv``; return how many models were newly scored (those already scored with the same
    settings are skipped)."""
    folder = StudyFolder(out_dir)
    files, cfg = QualityFiles(folder), spec.quality
    sha = settings_sha(cfg, spec.data)
    runs = chosen_runs(folder.read_runs_rows(), spec)
    jobs = [_stage_job(files, cfg, sha, r) for r in runs]
    _check_samplable(folder, jobs, cfg.metric)
    scorer = _Scorer(cfg)
    _write_frame_once(spec, files, sha, scorer, progress)
    scored, new = _score_jobs(spec, folder, jobs, scorer, progress, echo)
    files.write_csv([_csv_row(run, scores, cfg) for run, scores in zip(runs, scored)])
    return new


def _score_jobs(
    spec: StudySpec, folder: StudyFolder, jobs: list[_Job], scorer: _Scorer, progress: bool, echo: Callable
) -> tuple[list[dict], int]:
    """Each job's scores (read back when made with its settings, else sampled and scored now, each score
    file written atomically), and how many were made now."""
    files, cfg = QualityFiles(folder), spec.quality
    scored = [_read_stamped(job.scores, job.sha, cfg.metric) for job in jobs]
    todo = [i for i, scores in enumerate(scored) if scores is None]
    if todo:
        net = scorer.net()
        echo(
            f"quality: sampling and scoring {len(todo)} model(s), {cfg.num_samples} images each "
            f"({cfg.evaluator} evaluator, {scorer.device})"
        )
        reference = _reference(spec, files, settings_sha(cfg, spec.data), progress)
        features = _reference_features(reference, net, cfg, progress)
    for n, i in enumerate(todo):
        scored[i] = _score_job(folder, jobs[i], scorer, reference, features, progress)
        echo(f"quality: {n + 1}/{len(todo)} {jobs[i].label}: {cfg.metric} {scored[i][cfg.metric]:.4g}")
    return scored, len(todo)


def _score_job(folder: StudyFolder, job: _Job, scorer: _Scorer, reference, features, progress: bool) -> dict:
    """Sample (unless drawn with the job's settings) and score one job; its score file written atomically."""
    t0 = time.time()
    samples = _sample_run(folder, job, scorer.device, progress)
    t1 = time.time()
    scores = _score(samples, reference, features, scorer.net(), job.cfg, scorer.device, progress)
    scores.update(settings_sha=job.sha, sample_s=round(t1 - t0, 2), eval_s=round(time.time() - t1, 2))
    atomic_write_json(job.scores, scores)
    return scores


def _check_samplable(folder: StudyFolder, jobs: list[_Job], metric: str) -> None:
    """Refuse, before any file is written, to score a job whose samples must still be drawn from a run
    without EMA weights (:func:`_ema_weights`); jobs already scored, or drawn, with their settings pass."""
    for job in jobs:
        drawn = job.samples.is_file() and _read_stamp(job.samples.with_suffix(".sha")) == job.sha.encode()
        if not drawn and _read_stamped(job.scores, job.sha, metric) is None:
            _ema_weights(folder.run(job.run["run_id"]).root)


def _read_stamped(path: Path, sha: str, metric: str) -> dict | None:
    """The JSON scores of ``path`` when its ``settings_sha`` is ``sha`` and it holds a number for ``metric``,
    else None (missing, damaged, nested too deep, of the wrong shape or other settings: scored again)."""
    try:
        data = parse_json(read_bytes(path))
    except (OSError, ValueError, DataError):
        return None
    if not isinstance(data, dict) or data.get("settings_sha") != sha:
        return None
    value = data.get(metric)
    return data if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _csv_row(run: dict, scores: dict, cfg: QualityConfig) -> dict:
    row = {k: run[k] for k in ("run_id", "budget", "flops", "params", "loss")}
    row.update({k: v for k, v in scores.items() if k in QUALITY_CSV_COLUMNS or k in ATTRIBUTE_COLUMNS})
    return {**row, "optimal": int(run["optimal"]), "metric": cfg.metric, "value": scores[cfg.metric]}


def _reference(spec: StudySpec, files: QualityFiles, sha: str, progress: bool):
    """The reference batch, exported once per settings (:func:`_restamp`): ``num_samples`` images of
    the study's data (val split), converted exactly as samples are (:func:`ditscale.generate.save_dataset_npz`)."""
    from ditscale.generate import save_dataset_npz  # lazy: torch (generate.reference); study stays torch-free

    path = files.reference
    _restamp(path, sha)
    if not path.is_file():
        save_dataset_npz(
            from_dict(DataConfig, spec.data, where="data"),
            path,
            num=spec.quality.num_samples,
            split="val",
            progress=progress,
        )
    return load_batch(path)


def _write_frame_once(spec: StudySpec, files: QualityFiles, sha: str, scorer: _Scorer, progress: bool) -> None:
    """frame.json (shapes evaluator) unless it was made with settings ``sha``."""
    if spec.quality.evaluator == "shapes" and files.read_frame(sha) is None:
        _write_frame(spec, files, sha, scorer.net(), progress)


def _write_frame(spec: StudySpec, files: QualityFiles, sha: str, evaluator, progress: bool) -> None:
    """frame.json: :func:`~ditscale.metrics.evaluate.reference_frame` of ``2 x num_samples`` images of the
    val split (``frame_reference.npz``), so the floor compares two sets of the samples' count."""
    from ditscale.generate import save_dataset_npz  # lazy: torch (generate.reference); study stays torch-free

    cfg, path = spec.quality, files.frame_reference
    _restamp(path, sha)
    if not path.is_file():
        data = from_dict(DataConfig, spec.data, where="data")
        save_dataset_npz(data, path, num=2 * cfg.num_samples, split="val", progress=progress)
    kind = {"text": "captions", "class": "labels"}.get(spec.family.model.get("conditioning", "class"))
    frame = reference_frame(load_batch(path), cfg.num_samples, kind, evaluator, seed=cfg.seed)
    atomic_write_json(files.frame, {"settings_sha": sha, "num_samples": cfg.num_samples, **frame.to_dict()})


def _restamp(path: Path, sha: str) -> None:
    """Drop ``path`` (and the chunks of an unfinished draw) when its ``.sha`` stamp is not ``sha``, then
    stamp it ``sha`` before any work: an interrupted draw resumes only under the same settings."""
    from ditscale.generate import parts_dir  # lazy: torch (generate.npz); study stays torch-free

    stamp = path.with_suffix(".sha")
    if not (stamp.is_file() and _read_stamp(stamp) == sha.encode()):
        path.unlink(missing_ok=True)
        shutil.rmtree(parts_dir(path), ignore_errors=True)
        atomic_write_text(stamp, sha)


def _read_stamp(stamp: Path) -> bytes | None:
    """A ``.sha`` stamp's bytes (compared as bytes: a damaged, non-UTF-8 stamp is simply not ``sha``);
    None when it cannot be read."""
    try:
        return read_bytes(stamp)
    except (OSError, DataError):
        return None


def _device() -> str:
    """Where the stage samples and scores: the GPU when there is one."""
    import torch  # lazy: torch; study stays torch-free

    return "cuda" if torch.cuda.is_available() else "cpu"


def _evaluator(cfg: QualityConfig, device: str):
    """The scoring network: the embedded shapes evaluator or the FID Inception."""
    if cfg.evaluator == "shapes":
        from ditscale.metrics.shapes_evaluator import load_shapes_evaluator  # lazy: torch; study stays torch-free

        return load_shapes_evaluator(device=device)
    from ditscale.metrics.inception import load_fid_inception  # lazy: torch; study stays torch-free

    return load_fid_inception(cfg.inception, device=device)


def _reference_features(reference, evaluator, cfg: QualityConfig, progress: bool):
    """The shapes evaluator's features of the reference, computed once for every model the stage scores
    (None for the Inception evaluator, whose reference statistics are computed per call)."""
    return shapes_features(evaluator, reference.images, progress=progress) if cfg.evaluator == "shapes" else None


def _score(samples, reference, features, evaluator, cfg: QualityConfig, device: str, progress: bool) -> dict:
    """The scores of one model's ``samples``: FD, precision, recall and the accuracies, against the
    ``reference`` batch (its shapes evaluator ``features``, :func:`_reference_features`): every accuracy
    the conditions name, from one prediction of the samples' scenes (:func:`evaluate_shapes`)."""
    if cfg.evaluator == "shapes":
        metrics = evaluate_shapes(
            samples, reference, evaluator, device=device, progress=progress, reference_features=features
        )
        return metrics.to_dict()
    return evaluate_inception(samples, reference, evaluator, device=device, progress=progress).to_dict()


def _sample_run(folder: StudyFolder, job: _Job, device: str, progress: bool):
    """The job's samples (:class:`~ditscale.metrics.batch.ImageBatch`), drawn unless its file exists
    with the job's settings (:func:`_restamp`)."""
    _restamp(job.samples, job.sha)
    if not job.samples.is_file():
        _draw(folder.run(job.run["run_id"]).root, job.samples, job.cfg, device, progress)
    return load_batch(job.samples)


def _draw(run_dir: Path, path: Path, cfg: QualityConfig, device: str, progress: bool) -> None:
    """Sample ``cfg.num_samples`` images of the run's newest EMA weights into ``path``."""
    from ditscale.diffusion import create_diffusion  # lazy: torch; study stays torch-free
    from ditscale.generate import sample_npz  # lazy: torch; study stays torch-free
    from ditscale.models.io import load_model, read_metadata  # lazy: torch; study stays torch-free

    run, weights = RunDir(run_dir), _ema_weights(run_dir)
    model, meta = load_model(weights, map_location=device), read_metadata(weights)
    config = run.read_result()["config"]  # the run finished: its result.json is there (runs.csv row)
    data = from_dict(DataConfig, config["data"], where="data")
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_npz(
        model,
        create_diffusion(meta["diffusion"]),
        path,
        num_samples=cfg.num_samples,
        seed=cfg.seed,
        sampler=cfg.sampler,
        steps=cfg.steps,
        cfg_scale=cfg.cfg_scale,
        label_names=class_names(data),
        batch_size=cfg.batch_size,
        device=device,
        progress=progress,
        **_prompts(run, weights, model.config, data, cfg.num_samples, device),
    )


def _ema_weights(run_dir: Path) -> Path:
    """The EMA weights of the newest checkpoint of the run in ``run_dir``; a one-line DataError without."""
    from ditscale.train.checkpoint import latest_checkpoint  # lazy: torch; study stays torch-free

    found = latest_checkpoint(RunDir(run_dir).checkpoints)
    if found is None or not (found[0] / "ema.safetensors").is_file():
        raise DataError(
            f"run {run_dir.name} has no checkpoint with EMA weights to sample; train it again "
            "(delete its folder and run `ditscale study run` again)"
        )
    return found[0] / "ema.safetensors"


def _prompts(run: RunDir, weights: Path, model_config, data: DataConfig, num: int, device: str) -> dict:
    """A text-conditional model's ``captions`` (those of items 0..num-1 of the val split, held out from
    training: the reference's own) and ``encode_captions`` (the run's own text encoder: the word encoder
    trained with it, beside ``weights``, or its config's Hugging Face encoder); {} for other models."""
    if model_config.conditioning != "text":
        return {}
    from ditscale.data.text import text_encoder_for  # lazy: torch; study stays torch-free
    from ditscale.generate import dataset_captions  # lazy: torch; study stays torch-free

    encoder = text_encoder_for(
        weights,
        context_len=model_config.context_len,
        context_dim=model_config.context_dim,
        run_encoder=run.text_encoder(),
        device=device,
        progress=False,
    )
    return {"captions": dataset_captions(data, num, split="val"), "encode_captions": encoder.encode}


# -- scoring while the last runs train -----------------------------------------------------------------
@dataclass(frozen=True)
class QualityTask:
    """Sample and score the chosen model ``run`` (its runs.csv row, ``optimal`` set) of the study in
    ``study_dir`` with the quality stage's settings (:func:`score_one`), in a worker process with
    ``threads`` torch threads (:func:`ditscale.study.executor.execute_task`)."""

    study_dir: str
    run: dict
    threads: int = 1

    @property
    def run_id(self) -> str:
        return f"quality {self.run['run_id']}"


class EarlyScoring:
    """The quality jobs of the budgets whose runs have all finished while others still train.

    Local studies with worker processes submit them to the same pool (``more`` of
    :meth:`ditscale.study.launchers.LocalLauncher.run`): a worker that would idle at the end of the
    training (the last trunk's cooldowns train one after another on one worker) samples and scores the
    finished budgets' chosen models instead, with the same files and settings as the quality stage,
    which then finds them scored and does the rest. A budget is finished when every planned run of
    the study seed has its result (:func:`chosen_runs` then picks the same runs as the stage). The
    reference batch and frame.json are written here, in the study's process, before the first job."""

    def __init__(self, spec: StudySpec, folder: StudyFolder, planned: list, threads: int, echo: Callable = print):
        self.spec, self.folder, self.threads, self.echo = spec, folder, threads, echo
        self.sha, self.prepared = settings_sha(spec.quality, spec.data), False
        self.pending: dict[float, list] = {}
        for run in planned:
            if run.seed == spec.seed:
                self.pending.setdefault(run.budget, []).append(run)

    def more(self) -> list:
        """Tasks (:class:`QualityTask`) for the budgets finished since the last call, their chosen models
        not yet scored with the stage's settings. An error (e.g. the data of the reference cannot be
        read) is echoed once and ends the early scoring, never the training: the quality stage meets it
        again and says what to do."""
        try:
            return self._more()
        except DitscaleError as err:
            self.echo(f"{WARNING} quality: not scoring while the runs train ({err})")
            self.pending.clear()
            return []

    def _more(self) -> list:
        files, rows = QualityFiles(self.folder), []
        for budget, runs in list(self.pending.items()):
            finished = self.folder.finished_rows(runs)
            if len(finished) == len(runs):
                del self.pending[budget]
                rows += [
                    r
                    for r in chosen_runs(finished, self.spec)
                    if files.read_scores(r["run_id"], self.sha, self.spec.quality.metric) is None
                ]
        if rows and not self.prepared:  # the reference batch and frame.json, which every job reads
            _reference(self.spec, files, self.sha, progress=False)
            _write_frame_once(self.spec, files, self.sha, _Scorer(self.spec.quality), progress=False)
            self.prepared = True
        return [QualityTask(str(self.folder.root), row, self.threads) for row in rows]


def score_one(study_dir: str, run: dict) -> str:
    """Sample and score the chosen model ``run`` (its runs.csv row, ``optimal`` set) of the study in
    ``study_dir`` with the quality stage's settings, in a worker process (:class:`EarlyScoring`): its
    score file, as the stage would write it. Returns "scored: METRIC VALUE" (e.g. "scored: fd 1410")."""
    folder = StudyFolder(study_dir)
    spec = folder.read_spec()
    files, cfg = QualityFiles(folder), spec.quality
    sha = settings_sha(cfg, spec.data)
    job = _stage_job(files, cfg, sha, run)
    _check_samplable(folder, [job], cfg.metric)
    scorer, reference, features = _worker_scoring(study_dir, sha)
    scores = _score_job(folder, job, scorer, reference, features, progress=False)
    return f"scored: {cfg.metric} {scores[cfg.metric]:.4g}"


@functools.lru_cache(maxsize=1)
def _worker_scoring(study_dir: str, sha: str):
    """The scorer, the reference batch the study's process wrote and its evaluator features: made once
    per worker process, study and settings ``sha`` (a worker scores several models)."""
    folder = StudyFolder(study_dir)
    cfg = folder.read_spec().quality
    scorer, reference = _Scorer(cfg), load_batch(QualityFiles(folder).reference)
    return scorer, reference, _reference_features(reference, scorer.net(), cfg, progress=False)


# -- sampling compute vs model compute (`ditscale study quality-steps`) ------------------------------
# quality_steps.csv: one row per (model, sampler steps). flops: the model's training FLOPs; forward_flops:
# FLOPs of one forward pass of one image (ditscale.flops: 2 x multiply-adds); sampling_flops: FLOPs of
# sampling one image, forward_flops x model calls (steps, x 2 with classifier-free guidance); the scores
# as quality.csv's.
_SCORES_FROM = QUALITY_CSV_COLUMNS.index("metric")  # quality.csv's columns from "metric" on: the scores
STEPS_CSV_COLUMNS = [
    *QUALITY_CSV_COLUMNS[:_SCORES_FROM],
    "steps",
    "sampler",
    "cfg_scale",
    "forward_flops",
    "model_calls",
    "sampling_flops",
    *QUALITY_CSV_COLUMNS[_SCORES_FROM:],
]


@dataclass(frozen=True)
class StepsPoint:
    """One model scored at one sampler step count (a row of ``quality_steps.csv``).

    Attributes:
        run_id, budget (training FLOPs of its budget), params (non-embedding), steps: the model and steps.
        sampling_flops: FLOPs of sampling one image (forward FLOPs x model calls).
        value: the quality metric (``fd`` or ``fid``, lower is better).
        metric: its name.
    """

    run_id: str
    budget: float
    params: float
    steps: int
    sampling_flops: float
    value: float
    metric: str


def model_calls(cfg: QualityConfig, steps: int) -> int:
    """Forward passes of one image in sampling at ``steps`` steps: one a step (euler, ddpm, ddim), twice
    that with classifier-free guidance (``cfg_scale != 1``: conditional and unconditional)."""
    if cfg.sampler == "heun":
        raise ConfigError(
            "quality-steps counts one model call per sampler step, and heun makes two (one fewer for an "
            "x0-predicting model); set quality.sampler to euler (flow), ddpm or ddim (gaussian)"
        )
    return steps * (2 if cfg.cfg_scale != 1.0 else 1)


def run_quality_steps(
    out_dir: str | Path,
    steps: list[int],
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> int:
    """Score the quality stage's chosen models (:func:`chosen_runs`) of the finished study in ``out_dir``
    at each sampler step count of ``steps``, with its other quality settings; write ``quality_steps.csv``;
    return how many (model, steps) pairs were newly scored. Files go to ``quality/steps/`` (at the quality
    stage's own step count: the stage's own files, shared with it); a pair scored with the same settings
    is never scored again."""
    folder = StudyFolder(out_dir)
    spec = folder.read_spec()
    if spec.quality is None:
        raise ConfigError(
            f"study {folder.root} has no quality section; run `ditscale study run` on it again with a quality: "
            "section in the spec (its trained runs are kept), then quality-steps"
        )
    if not steps or min(steps) < 1:
        raise ConfigError(f"quality-steps needs step counts >= 1, got {steps}")
    files, base = QualityFiles(folder), spec.quality
    runs = chosen_runs(folder.read_runs_rows(), spec)
    jobs = [_steps_job(files, spec, run, k) for run in runs for k in sorted(set(steps))]
    for job in jobs:
        model_calls(job.cfg, job.cfg.steps)  # refuse a sampler whose calls are not counted before any work
    _check_samplable(folder, jobs, base.metric)
    scored, new = _score_jobs(spec, folder, jobs, _Scorer(base), progress, echo)
    rows = [_steps_row(folder, job, scores) for job, scores in zip(jobs, scored)]
    write_csv(files.steps_csv, STEPS_CSV_COLUMNS, rows)
    return new


def _steps_job(files: QualityFiles, spec: StudySpec, run: dict, steps: int) -> _Job:
    cfg = replace(spec.quality, steps=steps)
    sha, run_id = settings_sha(cfg, spec.data), run["run_id"]
    if steps == spec.quality.steps:  # the quality stage's own settings: its own files
        return _Job(run, cfg, sha, files.samples(run_id), files.scores(run_id), f"{run_id} at {steps} steps")
    stem = f"{run_id}-steps{steps}"
    return _Job(run, cfg, sha, files.steps / "samples" / f"{stem}.npz", files.steps / "scores" / f"{stem}.json", stem)


def _steps_row(folder: StudyFolder, job: _Job, scores: dict) -> dict:
    """quality_steps.csv's row of a job: its model, its sampling FLOPs per image, its scores."""
    result = folder.run(job.run["run_id"]).read_result()
    if result is None:
        raise DataError(
            f"run {job.run['run_id']} has no readable result.json; train it again (delete its folder and run "
            "`ditscale study run` again)"
        )
    forward, calls = forward_flops(result["config"]["model"]), model_calls(job.cfg, job.cfg.steps)
    row = _csv_row(job.run, scores, job.cfg)
    row.update(
        steps=job.cfg.steps,
        sampler=job.cfg.sampler or "default",
        cfg_scale=job.cfg.cfg_scale,
        forward_flops=forward,
        model_calls=calls,
        sampling_flops=forward * calls,
    )
    return {k: v for k, v in row.items() if k in STEPS_CSV_COLUMNS}


def steps_points(out_dir: str | Path) -> list[StepsPoint]:
    """``quality_steps.csv`` as :class:`StepsPoint` rows ([] when the study has none); :class:`DataError`
    when a row lacks a column or holds a cell that is not a number where one belongs."""
    path = QualityFiles(StudyFolder(out_dir)).steps_csv
    rows = read_csv(path)
    try:
        return [
            StepsPoint(
                r["run_id"],
                float(r["budget"]),
                float(r["params"]),
                int(r["steps"]),
                float(r["sampling_flops"]),
                float(r["value"]),
                r["metric"],
            )
            for r in rows
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(
            f"{path} is damaged ({type(e).__name__}: {e}); delete it and run `ditscale study quality-steps` again"
        ) from None


# -- reading back ---------------------------------------------------------------------------------
def quality_points(out_dir: str | Path) -> tuple[str, list] | None:
    """``(metric, [QualityPoint])`` from ``quality.csv``, or None when the study has none."""
    rows = QualityFiles(StudyFolder(out_dir)).read_csv()
    if not rows:
        return None
    return rows[0]["metric"], _points(rows, "value")


def _points(rows: list[dict[str, str]], column: str) -> list:
    from ditscale.laws.quality import QualityPoint  # lazy: its scipy.stats takes ~0.3 s; only reports read it

    return [
        QualityPoint(
            r["run_id"],
            float(r["budget"]),
            float(r[column]),
            float(r["loss"]),
            float(r["params"]),
            bool(int(r["optimal"])),
        )
        for r in rows
    ]


def metric_points(out_dir: str | Path, conditioning: str) -> dict[str, list]:
    """Each metric's ``[QualityPoint]`` from ``quality.csv`` by its laws.json name: the primary metric
    (``fd`` or ``fid``), ``accuracy`` as ``accuracy_all`` (text-conditional studies: every caption
    attribute right) or ``accuracy_class`` (``conditioning`` "class"), and each attribute column; a
    metric with an empty cell is left out; {} without quality.csv."""
    rows = QualityFiles(StudyFolder(out_dir)).read_csv()
    if not rows:
        return {}
    columns = {rows[0]["metric"]: "value"}
    accuracy = {"text": "accuracy_all", "class": "accuracy_class"}.get(conditioning)
    if accuracy is not None:
        columns[accuracy] = "accuracy"
    columns.update({name: name for name in ATTRIBUTE_COLUMNS})
    return {name: _points(rows, col) for name, col in columns.items() if all(r.get(col) for r in rows)}


def quality_frame(out_dir: str | Path) -> dict | None:
    """The study's frame.json (:func:`_write_frame`) as written, or None when it has none."""
    return QualityFiles(StudyFolder(out_dir)).read_frame()


def sample_rows(out_dir: str | Path, per_row: int = 8) -> list[tuple[str, object, list[str] | None]]:
    """``(label, the first per_row images, their prompts or None)`` of each budget's compute-optimal model,
    for the report's grid (prompts: the captions of a text-conditional model's samples)."""
    files = QualityFiles(StudyFolder(out_dir))
    out = []
    for row in files.read_csv():
        path = files.samples(row["run_id"])
        if int(row["optimal"]) and path.is_file():
            with np.load(path, allow_pickle=False) as data:
                images = data["arr_0"][:per_row]
                captions = [str(c) for c in data["captions"][:per_row]] if "captions" in data else None
            label = f"{fmt_flops(float(row['budget']))}\n{row['metric']} {float(row['value']):.3g}"
            if row.get("accuracy"):
                label += f"\naccuracy {float(row['accuracy']):.3g}"
            out.append((label, images, captions))
    return out
