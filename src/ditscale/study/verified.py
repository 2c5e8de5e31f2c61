"""The answers of ``ditscale study verify``, one file format with its writer's paths and its reader.

A verification trains a study's predicted compute-optimal model at a budget C beyond its sweep
(:mod:`ditscale.study.verify`) and records the prediction against the trained loss as a
:class:`Verification`. Each answer is kept in the study folder, written atomically by
:func:`ditscale.study.verify.verify_study`::

    verify/verify-<C>.json  the answer at C (``fmt_flops``: ``verify-5.12e13.json``), one per C verified
    verify/verify.json      the latest answer again (the file of the first version of ``study verify``)

:func:`read_verifications` reads them all back, strictly (:meth:`Verification.from_dict`), for
``study predict`` and the report; :class:`PredictAnswer` is ``study predict --json``, the prediction
with them. Pure Python: no torch, no study loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ditscale.errors import DataError
from ditscale.flops import fmt_flops
from ditscale.io import read_json
from ditscale.laws.results import PredictionSummary

VERIFY_DIR = "verify"  # inside the study folder
VERIFY_JSON = "verify.json"  # inside VERIFY_DIR: the latest answer
VERIFY_AT = "verify-{}.json"  # inside VERIFY_DIR: the answer at each C (fmt_flops), kept


def verify_dir(out_dir: str | Path) -> Path:
    """``DIR/verify``: the verification runs and ``verify.json`` of the study in ``out_dir``."""
    return Path(out_dir) / VERIFY_DIR


def verify_file(out_dir: str | Path, flops: float) -> Path:
    """``DIR/verify/verify-<C>.json``: the kept answer of the verification at ``flops`` FLOPs."""
    return verify_dir(out_dir) / VERIFY_AT.format(fmt_flops(flops))


@dataclass(frozen=True)
class VerifySize:
    """One trained size: its family ``name``, ``run_id``, ``role`` (the target it is nearest: "n_opt",
    "half", "double"), ``params`` (non-embedding N), ``params_total``, optimizer ``steps``, training
    ``images``, exact training ``flops`` and ``loss`` (its validation loss, as runs.csv's ``loss``)."""

    params: int
    loss: float
    name: str
    run_id: str
    role: str
    params_total: int
    steps: int
    images: int
    flops: float


@dataclass(frozen=True)
class Verification:
    """The study's prediction at ``flops`` against training it (``study verify --json``).

    ``predicted_loss`` and ``predicted_ci90``: L_opt of the loss law of record (``loss_law``) and its
    90% interval; ``actual_loss``: the validation loss of the member nearest ``predicted_n_opt``;
    ``relative_error = (predicted_loss - actual_loss) / actual_loss``; ``within_ci90``: actual inside
    the interval (None without one); ``sizes`` ascending in N; ``best_params``: the N of the lowest
    loss; ``factor = flops / largest_budget``.

    Is the predicted size the best? ``n_opt_gap = log(actual_loss / lowest loss)`` (0 when it is the
    best); ``within_seed_noise``: the gap is inside the 90% band of the difference of two runs'
    log losses, ``1.645 sqrt(2) seed_spread`` (the study's seed-to-seed sd of log loss, measured at
    its own budgets; None without it, or with one size)."""

    flops: float
    factor: float
    predicted_loss: float
    predicted_ci90: tuple[float, float] | None
    actual_loss: float
    relative_error: float
    within_ci90: bool | None
    sizes: tuple[VerifySize, ...]
    predicted_n_opt: float
    best_params: int
    predicted_n_opt_ci90: tuple[float, float] | None
    loss_law: str | None
    largest_budget: float
    seed_spread: float | None
    n_opt_gap: float
    within_seed_noise: bool | None
    notes: tuple[str, ...]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for key in ("predicted_ci90", "predicted_n_opt_ci90", "notes"):
            out[key] = None if out[key] is None else list(out[key])
        out["sizes"] = [dataclasses.asdict(s) for s in self.sizes]
        return out

    @classmethod
    def from_dict(cls, data, where: str) -> Verification:
        """The :meth:`to_dict` of a verification, read back, each value of its field's type; anything else
        (a missing or unknown key, a value of the wrong kind) is a one-line DataError naming ``where``."""
        try:
            if set(data) != {f.name for f in dataclasses.fields(cls)}:
                raise ValueError("keys")
            return cls(**{k: _READ[k](v) for k, v in data.items()})
        except (TypeError, ValueError, KeyError, IndexError):
            raise DataError(f"{where} is not a verification written by `ditscale study verify`; run it again") from None


def _optional(read: Callable) -> Callable:
    return lambda x: None if x is None else read(x)


def _pair(x) -> tuple[float, float]:
    low, high = x
    return float(low), float(high)


def _truth(x) -> bool:
    if not isinstance(x, bool):
        raise TypeError("not a boolean")
    return x


def _read_size(s: dict) -> VerifySize:
    if set(s) != set(_SIZE_READ):
        raise ValueError("keys")
    return VerifySize(**{k: _SIZE_READ[k](v) for k, v in s.items()})


# How each field of a verification file is read back (Verification.from_dict).
_SIZE_READ = {"params": int, "loss": float, "name": str, "run_id": str, "role": str, "params_total": int}
_SIZE_READ |= {"steps": int, "images": int, "flops": float}
_READ = {
    **dict.fromkeys(["flops", "factor", "predicted_loss", "actual_loss", "relative_error"], float),
    **dict.fromkeys(["predicted_n_opt", "largest_budget", "n_opt_gap"], float),
    "predicted_ci90": _optional(_pair),
    "predicted_n_opt_ci90": _optional(_pair),
    "within_ci90": _optional(_truth),
    "within_seed_noise": _optional(_truth),
    "sizes": lambda sizes: tuple(_read_size(s) for s in sizes),
    "best_params": int,
    "loss_law": _optional(str),
    "seed_spread": _optional(float),
    "notes": lambda notes: tuple(str(n) for n in notes or ()),
}


def read_verifications(out_dir: str | Path) -> tuple[list[Verification], list[str]]:
    """Every verification of the study in ``out_dir`` (``DIR/verify/verify-<C>.json``, and a
    ``verify.json`` from before those were kept when its C has none), ascending in C, and one line for
    each file that cannot be read (the others are still returned)."""
    folder = verify_dir(out_dir)
    found, damaged = {}, []
    for path in sorted(folder.glob(VERIFY_AT.format("*"))) + [folder / VERIFY_JSON]:
        if not path.is_file():
            continue
        try:
            answer = Verification.from_dict(read_json(path), str(path))
        except (OSError, ValueError) as err:
            damaged.append(f"{path} cannot be read ({err}); run `ditscale study verify` at its --flops again")
        except DataError as err:
            damaged.append(str(err))
        else:
            found.setdefault(answer.flops, answer)
    return [found[c] for c in sorted(found)], damaged


@dataclass(frozen=True)
class PredictAnswer:
    """``ditscale study predict DIR --json``: the study's prediction (the keys of
    :class:`~ditscale.laws.results.PredictionSummary`, at the top level) plus ``verifications``, the
    :class:`Verification` of every C the study trained (:func:`read_verifications`). The CLI writes it
    with :meth:`to_dict`; scripts read it back with :meth:`from_dict`. A file written before ``predict``
    listed the verifications has no ``verifications`` key and reads as having none."""

    prediction: PredictionSummary
    verifications: tuple[Verification, ...]

    def to_dict(self) -> dict:
        return {**self.prediction.to_dict(), "verifications": [v.to_dict() for v in self.verifications]}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> PredictAnswer:
        """Strict: the prediction's keys as :meth:`PredictionSummary.from_dict` reads them, each
        verification as :meth:`Verification.from_dict` does; a one-line DataError names ``where``."""
        if not isinstance(data, dict):
            raise DataError(f"{where} is not an answer of `ditscale study predict --json`; run it again")
        rest = dict(data)
        listed = rest.pop("verifications", [])
        if not isinstance(listed, list):
            raise DataError(f"{where}: 'verifications' must be a list of `study verify` answers")
        found = tuple(Verification.from_dict(v, f"{where} (verification {i})") for i, v in enumerate(listed))
        return cls(PredictionSummary.from_dict(rest, where=where), found)
