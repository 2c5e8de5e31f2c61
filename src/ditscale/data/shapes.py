"""``shapes``: an embedded, infinite, procedural dataset of coloured shapes with captions.

Item ``i`` of seed ``s`` is drawn from a hash of ``(s, split, i)``: a shape kind (6), a
colour (8), a size (3), a position on a 3x3 grid (9) and a background colour (one of the 7 other
colours), plus a small continuous jitter of position (+-4% of the side) and size (+-10%). It is
rendered at any resolution with vectorised numpy signed-distance functions and anti-aliased edges
(pixel coverage = clip(0.5 - distance in pixels, 0, 1)), and described by a caption such as
``"a small red circle at the top left on a blue background"``.

The class label is the shape kind (index into ``KINDS``), or ``kind * 8 + colour`` with
``shapes_label="kind_color"``. The "val" split is a different seed stream of the same generator.
The grammar's words and geometry (``KINDS``, ``COLORS``, ``SIZES``, ``POSITIONS``, ``GRID``) live in
:mod:`ditscale.data.shapes_grammar` (pure Python) and are importable from here too.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct

import numpy as np
import torch

from ditscale.data.base import RNG_SHAPES, EpochDataset
from ditscale.data.config import DataConfig, check_split
from ditscale.data.shapes_grammar import (  # noqa: F401  (re-exported: the grammar's old home)
    COLOR_NAMES,
    COLORS,
    COUNT_WORDS,
    GRID,
    JITTER,
    KINDS,
    POSITIONS,
    SIZE_NAMES,
    SIZES,
    shapes_num_classes,
)

LENGTH = 2**31  # "infinite": items are generated on demand; a bound for DataLoader compatibility

_PALETTE = np.array([COLORS[c] for c in COLOR_NAMES], dtype=np.float32) / 127.5 - 1.0  # (8, 3) in [-1, 1]
_SPLIT_STREAM = {"train": 0, "val": 1}


def sample_attributes(seed: int, index: int, split: str = "train") -> dict:
    """The attributes of item ``index``: names plus the continuous ``cx, cy, r`` (fractions of the side).

    They are read off a 128-bit BLAKE2b hash of (seed, split, index): a counter-based generator,
    cheap (~2 us) and stable across numpy versions, so a seed names the same images forever.
    """
    key = struct.pack("<4Q", seed, RNG_SHAPES, _SPLIT_STREAM[split], index)
    # kind, colour, size, position, background, 3 jitters
    draws = _hash_draws(key, (6, 8, 3, 9, 7, 1 << 20, 1 << 20, 1 << 20))
    kind, color, size, pos, bg = draws[:5]
    return _shape(kind, color, size, pos, bg + (bg >= color), draws[5:])  # background: any colour but the shape's


def _shape(kind: int, color: int, size: int, pos: int, bg: int, jitters) -> dict:
    """An object's attribute dict from its drawn indices and three jitter draws in ``range(2**20)``."""
    jx, jy, js = (r / (1 << 19) - 1.0 for r in jitters)  # uniform in [-1, 1)
    return {
        "kind": KINDS[kind],
        "color": COLOR_NAMES[color],
        "size": SIZE_NAMES[size],
        "position": POSITIONS[pos],
        "background": COLOR_NAMES[bg],
        "cx": GRID[pos % 3] + JITTER * jx,
        "cy": GRID[pos // 3] + JITTER * jy,
        "r": SIZES[SIZE_NAMES[size]] * (1.0 + 0.1 * js),
    }


def _hash_draws(key: bytes, radices: tuple[int, ...]) -> list[int]:
    """Uniform integers in ``range(k)`` for each ``k`` of ``radices``, read off a 128-bit hash of ``key``."""
    u = int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "little")
    draws = []
    for k in radices:
        u, r = divmod(u, k)
        draws.append(r)
    return draws


def sample_scene(seed: int, index: int, split: str = "train", max_objects: int = 1) -> list[dict]:
    """The objects of item ``index``, top one first: a list of :func:`sample_attributes`-style dicts
    (all with the image's one ``background``).

    ``max_objects == 1`` is exactly ``[sample_attributes(seed, index, split)]``. Otherwise one hash
    of (seed, split, index) draws the count (1..max_objects), the background and distinct grid
    cells; a hash per object draws its kind, colour (any but the background's), size and jitter.
    """
    if max_objects == 1:
        return [sample_attributes(seed, index, split)]
    stream = _SPLIT_STREAM[split]
    scene = struct.pack("<5Q", seed, RNG_SHAPES, stream, index, 1 << 32)
    count, bg, *cells = _hash_draws(scene, (max_objects, len(COLORS), *range(len(POSITIONS), 0, -1)))
    free = list(range(len(POSITIONS)))
    objects = []
    for j in range(count + 1):
        pos = free.pop(cells[j])  # cells without replacement
        key = struct.pack("<5Q", seed, RNG_SHAPES, stream, index, j)
        kind, color, size, *jit = _hash_draws(key, (6, 7, 3, 1 << 20, 1 << 20, 1 << 20))
        objects.append(_shape(kind, color + (color >= bg), size, pos, bg, jit))  # colour: any but the background's
    return objects


def caption_of_scene(objects: list[dict]) -> str:
    """One object: :func:`caption_of`; several: ``"{count} shapes: a {size} {color} {kind} at the
    {position} and ... on a(n) {background} background"``, top object first."""
    if len(objects) == 1:
        return caption_of(objects[0])
    parts = " and ".join(f"a {a['size']} {a['color']} {a['kind']} at the {a['position']}" for a in objects)
    bg = objects[0]["background"]
    article = "an" if bg[0] in "aeiou" else "a"
    return f"{COUNT_WORDS[len(objects) - 1]} shapes: {parts} on {article} {bg} background"


def caption_of(attrs: dict) -> str:
    """``"a {size} {color} {kind} at the {position} on a(n) {background} background"``."""
    a = attrs
    article = "an" if a["background"][0] in "aeiou" else "a"
    return f"a {a['size']} {a['color']} {a['kind']} at the {a['position']} on {article} {a['background']} background"


def shape_distance(kind: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (fraction of the side, < 0 inside) of a shape of half-extent ``r`` centred at 0.

    ``dx`` is a row ``(1, S)`` and ``dy`` a column ``(S, 1)`` of offsets (y grows downwards).
    """
    if kind == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if kind == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - r
    if kind == "diamond":
        return (np.abs(dx) + np.abs(dy) - r) * (1.0 / math.sqrt(2.0))
    if kind == "triangle":  # equilateral, apex up, circumradius 1.2 r, centroid at the centre
        s = 0.5 * math.sqrt(3.0)
        return np.maximum(dy, np.maximum(s * dx - 0.5 * dy, -s * dx - 0.5 * dy)) - 0.6 * r
    if kind == "cross":  # plus sign: two bars of half-width r / 3
        ax, ay, w = np.abs(dx), np.abs(dy), r / 3.0
        return np.minimum(np.maximum(ax - r, ay - w), np.maximum(ax - w, ay - r))
    if kind == "ring":  # annulus between 0.4 r and r
        return np.abs(np.sqrt(dx * dx + dy * dy) - 0.7 * r) - 0.3 * r
    raise ValueError(f"unknown shape kind {kind!r}")


@functools.lru_cache(maxsize=16)
def _pixel_centres(image_size: int) -> np.ndarray:
    return (np.arange(image_size, dtype=np.float32) + 0.5) / image_size


def render(attrs: dict, image_size: int) -> np.ndarray:
    """Float32 image ``(3, S, S)`` in [-1, 1] of the shape described by ``attrs``, anti-aliased."""
    cover = _coverage(attrs, image_size)
    fg = _PALETTE[COLOR_NAMES.index(attrs["color"])]
    bg = _PALETTE[COLOR_NAMES.index(attrs["background"])]
    rest = np.float32(1.0) - cover
    out, tmp = np.empty((3, image_size, image_size), dtype=np.float32), np.empty_like(cover)
    for c in range(3):  # cover * fg + (1 - cover) * bg: exactly fg inside and exactly bg outside
        np.multiply(cover, fg[c], out=out[c])
        out[c] += np.multiply(rest, bg[c], out=tmp)
    return out


def render_scene(objects: list[dict], image_size: int) -> np.ndarray:
    """Float32 image ``(3, S, S)`` of a scene (top object first), painted bottom to top."""
    if len(objects) == 1:
        return render(objects[0], image_size)
    out = np.empty((3, image_size, image_size), dtype=np.float32)
    out[:] = _PALETTE[COLOR_NAMES.index(objects[0]["background"])][:, None, None]
    for a in reversed(objects):  # out = cover * fg + (1 - cover) * out: exactly fg where covered
        cover = _coverage(a, image_size)
        out *= np.float32(1.0) - cover
        out += cover * _PALETTE[COLOR_NAMES.index(a["color"])][:, None, None]
    return out


def _coverage(attrs: dict, image_size: int) -> np.ndarray:
    """Anti-aliased pixel coverage ``(S, S)`` in [0, 1] of one shape."""
    centres = _pixel_centres(image_size)
    dx = (centres - np.float32(attrs["cx"]))[None, :]
    dy = (centres - np.float32(attrs["cy"]))[:, None]
    cover = shape_distance(attrs["kind"], dx, dy, np.float32(attrs["r"]))  # (S, S) distance ...
    cover *= np.float32(-image_size)
    cover += np.float32(0.5)
    np.clip(cover, 0.0, 1.0, out=cover)  # ... -> pixel coverage (in place: large images stay fast)
    return cover


def _mirror(caption: str) -> str:
    return caption.replace("left", "\0").replace("right", "left").replace("\0", "right")


class ShapesDataset(EpochDataset):
    """Map-style view of the infinite shapes stream: ``len`` is 2**31, item ``i`` is generated on demand.

    Items: ``{"x": (3, S, S) float32 in [-1, 1], "y": int64 label[, "caption": str]}``. Iterate
    indices sequentially (they are i.i.d. already); do not build a permutation of 2**31 indices.
    ``infinite`` is True: the trainer reads that, not the length.
    """

    infinite = True

    def __init__(self, cfg: DataConfig, split: str = "train"):
        check_split(split)
        self.split, self.seed, self.image_size = split, cfg.seed, cfg.image_size
        self.captions = cfg.captions
        self.random_flip = bool(cfg.random_flip)  # default off
        self.kind_color = cfg.shapes_label == "kind_color"
        self.max_objects = cfg.shapes_objects

    @property
    def num_classes(self) -> int:
        return shapes_num_classes("kind_color" if self.kind_color else "kind")

    def __len__(self) -> int:
        return LENGTH

    def attributes(self, index: int) -> dict:
        """The top object's attributes (the only object's, with one object per image)."""
        return self.scene(index)[0]

    def scene(self, index: int) -> list[dict]:
        """Every object of item ``index``, top one first (:func:`sample_scene`)."""
        return sample_scene(self.seed, index, self.split, self.max_objects)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < LENGTH:
            raise IndexError(index)
        objects = self.scene(index)
        x = render_scene(objects, self.image_size)
        a = objects[0]  # the label describes the top object, which nothing hides
        label = KINDS.index(a["kind"])
        if self.kind_color:
            label = label * len(COLORS) + COLOR_NAMES.index(a["color"])
        flip = self.flip_for(index)
        if flip:
            x = x[:, :, ::-1]
        item = {"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.tensor(label, dtype=torch.int64)}
        if self.captions:
            caption = caption_of_scene(objects)
            item["caption"] = _mirror(caption) if flip else caption
        return item
