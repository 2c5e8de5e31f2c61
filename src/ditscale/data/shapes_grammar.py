"""The closed grammar of the ``shapes`` dataset: kinds, colours, sizes, positions (pure Python).

Shared by the renderer (:mod:`ditscale.data.shapes`), the caption vocabulary
(:meth:`ditscale.data.text.WordTokenizer.for_shapes`) and the torch-free dataset description
(:func:`ditscale.data.info.dataset_info`).
"""

from __future__ import annotations

import re

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
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
GRID = (0.25, 0.5, 0.75)
JITTER = 0.04  # position jitter, fraction of the side
MAX_OBJECTS = 4  # most objects per image (data.shapes_objects), each on its own grid cell
COUNT_WORDS = ("one", "two", "three", "four")  # captions of several objects start "{count} shapes:"


def shapes_num_classes(shapes_label: str) -> int:
    """Labels of ``shapes``: 6 kinds for ``"kind"``, 6 kinds x 8 colours = 48 for ``"kind_color"``."""
    return len(KINDS) * len(COLORS) if shapes_label == "kind_color" else len(KINDS)


# Caption parsing: the inverse of ``ditscale.data.shapes.caption_of_scene`` ------------------------
# A caption is "[{count} shapes: ]a {size} {color} {kind} at the {position}[ and a ...] on a(n) {bg} background".
def _alternatives(words) -> str:
    return "|".join(sorted(words, key=len, reverse=True))  # longest first: "top left" before "top"


_OBJECT_PATTERN = (
    f"a (?P<size>{_alternatives(SIZE_NAMES)}) (?P<color>{_alternatives(COLOR_NAMES)}) "
    f"(?P<kind>{_alternatives(KINDS)}) at the (?P<position>{_alternatives(POSITIONS)})"
)


def parse_caption(caption: str) -> dict:
    """The scene a ``shapes`` caption describes: ``{"background": str, "objects": [{"kind", "color",
    "size", "position"}, ...]}``, objects in caption order (top object first).

    The inverse of :func:`ditscale.data.shapes.caption_of_scene`: case and runs of spaces are
    ignored, either article is accepted. Raises a one-line ``ValueError`` for a caption outside
    the grammar (unknown word, count that disagrees with the objects, two objects on one cell).
    """
    text = " ".join(str(caption).lower().split())
    head = re.fullmatch(
        rf"(?:(?P<count>{_alternatives(COUNT_WORDS)}) shapes: )?(?P<body>.+) on an? "
        rf"(?P<background>{_alternatives(COLOR_NAMES)}) background",
        text,
    )
    parts = head["body"].split(" and ") if head else []
    matches = [re.fullmatch(_OBJECT_PATTERN, part) for part in parts]
    if not head or not all(matches):
        raise ValueError(
            f"caption {caption!r} is outside the shapes grammar "
            f"('a small red circle at the top left on a blue background')"
        )
    objects = [{k: m[k] for k in ("kind", "color", "size", "position")} for m in matches]
    count = head["count"]
    if (count is None) != (len(objects) == 1) or (count and COUNT_WORDS.index(count) + 1 != len(objects)):
        said = f"says '{count} shapes'" if count else "has no '{count} shapes:' prefix"
        raise ValueError(f"caption {caption!r} describes {len(objects)} shape(s) but {said}; the two must agree")
    if len({o["position"] for o in objects}) != len(objects):
        raise ValueError(f"caption {caption!r} puts two shapes on one grid cell; each must have its own")
    return {"background": head["background"], "objects": objects}
