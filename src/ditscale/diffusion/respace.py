"""Timestep respacing: which steps of a T-step process a shorter sampler keeps (ADM / DiT)."""

from __future__ import annotations

from typing import Sequence

from ditscale.errors import ConfigError


def space_timesteps(num_timesteps: int, section_counts: str | int | Sequence[int]) -> list[int]:
    """The sorted timesteps (indices in ``[0, num_timesteps)``) kept by a respaced process.

    ``section_counts`` is, as in ADM/DiT:

    - ``"ddimN"``: the DDIM paper's striding ``range(0, T, stride)`` with the integer stride that
      gives exactly N steps;
    - ``"N"`` or ``N``: N steps evenly spaced over the whole process (fractional stride
      ``(T - 1) / (N - 1)``, rounded half to even, as Python's ``round``);
    - ``"a,b,c"`` or ``[a, b, c]``: the process is cut into equal sections (the first
      ``T % sections`` one step longer) and section i keeps ``a``/``b``/``c`` evenly spaced steps;
    - ``""``: all ``num_timesteps`` steps.

    Example: ``space_timesteps(1000, "ddim50") == [0, 20, ..., 980]``.
    """
    if isinstance(section_counts, int):
        section_counts = str(section_counts)
    text = section_counts.strip() if isinstance(section_counts, str) else None
    if text == "":
        return list(range(num_timesteps))
    if text is not None and text.startswith("ddim"):
        return _ddim_steps(num_timesteps, text)
    counts = _section_counts(section_counts, text)
    return _sections(num_timesteps, counts, section_counts)


def _ddim_steps(num_timesteps: int, text: str) -> list[int]:
    """``"ddimN"``: ``range(0, T, stride)`` with the integer stride giving exactly N steps (DDIM paper)."""
    try:
        wanted = int(text[len("ddim") :])
    except ValueError:
        raise ConfigError(f"bad timestep respacing {text!r}; write 'ddimN' with an integer N, e.g. 'ddim50'") from None
    for stride in range(1, num_timesteps):
        steps = range(0, num_timesteps, stride)
        if len(steps) == wanted:
            return list(steps)
    raise ConfigError(
        f"cannot take exactly {wanted} DDIM steps of {num_timesteps} with an integer stride; "
        "choose another count or use plain spacing like '50'"
    )


def _section_counts(section_counts: str | int | Sequence[int], text: str | None) -> list[int]:
    """Steps per section from ``"a,b,c"`` / ``"N"`` (``text``) or a sequence; each at least 1."""
    if text is not None:
        try:
            counts = [int(part) for part in text.split(",")]
        except ValueError:
            raise ConfigError(
                f"bad timestep respacing {text!r}; use '' (all steps), 'N', 'ddimN' or comma-separated counts like '10,20'"
            ) from None
    else:
        counts = [int(c) for c in section_counts]
    if not counts or min(counts) < 1:
        raise ConfigError(f"timestep respacing {section_counts!r} must ask for at least 1 step per section")
    return counts


def _sections(num_timesteps: int, counts: list[int], section_counts) -> list[int]:
    """Cut ``T`` steps into ``len(counts)`` equal sections (the first ``T % sections`` one longer)
    and keep ``counts[i]`` evenly spaced steps of section i (fractional stride, rounded half to even)."""
    size_per, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ConfigError(
                f"cannot take {count} steps from a section of {size} steps (respacing {section_counts!r} "
                f"of {num_timesteps}); ask for fewer steps"
            )
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0  # accumulated, not multiplied, so rounding matches the reference exactly
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))
