"""The closed grammar of the ``shapes`` dataset: kinds, colours, sizes, positions (pure Python).

Shared by the renderer (:mod:`ditscale.data.shapes`), the caption vocabulary
(:meth:`ditscale.data.text.WordTokenizer.for_shapes`) and the torch-free dataset description
(:func:`ditscale.data.info.dataset_info`).
"""

from __future__ import annotations

KINDS = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 70, 230),
    "yellow": (245, 215, 30),
    "orange": (245, 130, 20),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOR_NAMES = tuple(COLORS)
SIZES = {"small": 0.10, "medium": 0.16, "large": 0.22}  # half-extent as a fraction of the side
SIZE_NAMES = tuple(SIZES)
# 3x3 grid: (row, col) -> name; centres at 0.25, 0.5, 0.75 of the side.
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
GRID = (0.25, 0.5, 0.75)
JITTER = 0.04  # position jitter, fraction of the side
MAX_OBJECTS = 4  # most objects per image (data.shapes_objects), each on its own grid cell
COUNT_WORDS = ("one", "two", "three", "four")  # captions of several objects start "{count} shapes:"


def shapes_num_classes(shapes_label: str) -> int:
    """Labels of ``shapes``: 6 kinds for ``"kind"``, 6 kinds x 8 colours = 48 for ``"kind_color"``."""
    return len(KINDS) * len(COLORS) if shapes_label == "kind_color" else len(KINDS)
