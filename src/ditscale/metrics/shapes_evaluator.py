"""An embedded evaluator for the ``shapes`` dataset: features for FD and GenEval-style attribute accuracy.

Inception-v3 features and object detectors need downloads and know nothing of this procedural
data, so the project ships its own small CNN (``shapes_evaluator.safetensors``: 453k parameters, 0.9 MB)
trained on the procedural data itself (``scripts/train_shapes_evaluator.py``). It reads uint8
images of any size, resized to 32x32, and predicts the background colour and, for each of the
9 grid cells, whether it holds a shape and that shape's kind, colour and size (averaged over the
image and its left-right mirror, a symmetry of the data). Its penultimate
layer (``FEATURE_DIM`` wide) plays the role of Inception's pool3 for a Fréchet distance and
precision/recall; its predictions give

* class accuracy: the fraction of class-conditional samples showing their class (some shape of
  that kind, and colour for ``kind_color`` labels);
* caption accuracy: the fraction of captioned samples where every attribute is right: the
  background, the set of occupied cells (so the count and the positions) and each shape's kind,
  colour and size.

It is trained on a data seed (``TRAIN_DATA_SEED``) other than the default one, so it never saw the
reference images a study exports with seed 0.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from ditscale.data.shapes import caption_of_scene, render_scene, sample_scene
from ditscale.data.shapes_grammar import COLOR_NAMES, KINDS, POSITIONS, SIZE_NAMES, parse_caption
from ditscale.errors import CheckpointError, ConfigError
from ditscale.generate import to_uint8
from ditscale.io import atomic_path
from ditscale.models.kernels import retain_freed_memory_on

INPUT_SIZE = 32  # every image is resized to 32x32 before the network
FEATURE_DIM = 192  # width of features()
CELLS = len(POSITIONS)  # 9 grid cells, row-major from the top left
MIRRORED_CELLS = [3 * (c // 3) + 2 - c % 3 for c in range(CELLS)]  # cell c of a left-right mirrored image
# Logits per cell: occupied (2), kind (6), colour (8), size (3).
_CELL_HEADS = {"occupied": 2, "kind": len(KINDS), "color": len(COLOR_NAMES), "size": len(SIZE_NAMES)}
_CELL_WIDTH = sum(_CELL_HEADS.values())
DEFAULT_WEIGHTS = Path(__file__).with_name("shapes_evaluator.safetensors")
FORMAT = "ditscale-shapes-evaluator-v1"  # safetensors metadata "format"
TRAIN_DATA_SEED = 1_000_003  # the training images' data seed (+ the training seed); never the default 0
TRAIN_RENDER_SIZES = (16, 24, 32, 48, 64)  # training images are rendered at these sizes, then resized
# Probability of each object limit 1..4 in training: scenes of several shapes are the hard ones.
TRAIN_OBJECT_WEIGHTS = (0.2, 0.15, 0.15, 0.5)


# Result types -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectPrediction:
    """One predicted shape: names from the grammar (``KINDS``, ``COLOR_NAMES``, ``SIZE_NAMES``, ``POSITIONS``)."""

    kind: str
    color: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """A predicted image: its background colour and its shapes, in grid-cell order (top left first)."""

    background: str
    objects: tuple[ObjectPrediction, ...]

    def cells(self) -> dict[str, ObjectPrediction]:
        """Position name -> the shape predicted there."""
        return {o.position: o for o in self.objects}


# The network ------------------------------------------------------------------------------------
def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ShapesNet(nn.Module):
    """CNN on ``(N, 3, 32, 32)`` images in [-1, 1]: features ``(N, FEATURE_DIM)`` and attribute logits.

    Two pooled conv stages bring 32x32 to 8x8; a 4x4 convolution of stride 2 then gives a 3x3 map
    whose windows (centres at 8, 16, 24 px) sit exactly on the dataset's grid cells.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            _conv(3, 48),
            nn.MaxPool2d(2),  # 16x16
            _conv(48, 96),
            _conv(96, 96),
            nn.MaxPool2d(2),  # 8x8
            _conv(96, 96),
            _conv(96, 64, kernel=4, stride=2, padding=0),  # 3x3: one window per grid cell
        )
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(64 * CELLS, FEATURE_DIM), nn.ReLU())
        self.background = nn.Linear(FEATURE_DIM, len(COLOR_NAMES))
        self.cells = nn.Linear(FEATURE_DIM, CELLS * _CELL_WIDTH)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(N, FEATURE_DIM)`` (non-negative) of images ``(N, 3, 32, 32)``."""
        return self.embed(self.trunk(x))  # (N, 3, 32, 32) -> (N, 64, 3, 3) -> (N, FEATURE_DIM)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits: ``background`` (N, 8); per cell ``occupied`` (N, 9, 2), ``kind`` (N, 9, 6),
        ``color`` (N, 9, 8), ``size`` (N, 9, 3)."""
        h = self.features(x)  # (N, FEATURE_DIM)
        cells = self.cells(h).view(len(x), CELLS, _CELL_WIDTH)  # (N, 9, 19)
        out = {"background": self.background(h)}  # (N, 8)
        for name, logits in zip(_CELL_HEADS, cells.split(list(_CELL_HEADS.values()), dim=-1)):
            out[name] = logits  # (N, 9, classes)
        return out


def prepare_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images ``(N, H, W, 3)`` of any size -> float32 ``(N, 3, 32, 32)`` in [-1, 1].

    Values map as ``u / 127.5 - 1``; other sizes are resized bilinearly (with antialiasing when
    shrinking), the same way for training and evaluation.
    """
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise ConfigError(
            f"images must be uint8 (N, H, W, 3), got {x.dtype} {tuple(x.shape)}; convert samples "
            f"with ditscale.generate.to_uint8"
        )
    x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # (N, 3, H, W)
    if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()


# Real images and their targets ------------------------------------------------------------------
def render_real_batch(
    n: int, *, image_size: int, max_objects: int, seed: int = 0, split: str = "val", start: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Items ``start .. start + n - 1`` of the shapes data as generated samples are stored.

    Returns uint8 images ``(n, S, S, 3)`` (via :func:`ditscale.generate.to_uint8`), int64 kind
    labels ``(n,)`` of the top shape, and the ``n`` captions.
    """
    scenes = [sample_scene(seed, i, split, max_objects) for i in range(start, start + n)]
    images = np.stack([render_scene(s, image_size) for s in scenes])  # (n, 3, S, S) in [-1, 1]
    labels = np.array([KINDS.index(s[0]["kind"]) for s in scenes], dtype=np.int64)
    return to_uint8(torch.from_numpy(images)), labels, [caption_of_scene(s) for s in scenes]


def scene_targets(scenes: Sequence[list[dict]]) -> dict[str, torch.Tensor]:
    """Training targets of scenes: ``background`` (N,), and ``occupied``/``kind``/``color``/``size`` (N, 9).

    Empty cells have kind/colour/size ``-100`` (ignored by ``cross_entropy``).
    """
    n = len(scenes)
    out = {"background": torch.zeros(n, dtype=torch.long), "occupied": torch.zeros(n, CELLS, dtype=torch.long)}
    for name in ("kind", "color", "size"):
        out[name] = torch.full((n, CELLS), -100, dtype=torch.long)
    vocab = {"kind": KINDS, "color": COLOR_NAMES, "size": SIZE_NAMES}
    for i, objects in enumerate(scenes):
        out["background"][i] = COLOR_NAMES.index(objects[0]["background"])
        for obj in objects:
            cell = POSITIONS.index(obj["position"])
            out["occupied"][i, cell] = 1
            for name, words in vocab.items():
                out[name][i, cell] = words.index(obj[name])
    return out


# The evaluator ----------------------------------------------------------------------------------
class ShapesEvaluator:
    """A trained :class:`ShapesNet` (eval mode) with batched features, predictions and accuracies.

    Every method takes uint8 images ``(N, H, W, 3)`` of any size (``.npz`` ``arr_0`` as stored by
    ``ditscale sample``).
    """

    def __init__(self, model: ShapesNet, device: str | torch.device = "cpu", metadata: dict | None = None):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.metadata = dict(metadata or {})

    @torch.no_grad()
    def _batches(self, images: np.ndarray, batch_size: int, fn) -> list:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        starts = range(0, len(images), batch_size)
        return [fn(prepare_images(images[i : i + batch_size]).to(self.device)) for i in starts]

    def features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Penultimate features, float64 ``(N, FEATURE_DIM)``, for a Fréchet distance or precision/recall."""
        parts = self._batches(images, batch_size, lambda x: self.model.features(x).double().cpu())
        return torch.cat(parts).numpy() if parts else np.zeros((0, FEATURE_DIM))

    def log_probabilities(self, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Log-probabilities of every head (shapes of :meth:`ShapesNet.forward`), float32, averaged over
        each image and its left-right mirror.

        The data is mirror-symmetric (every kind is symmetric about its vertical axis; "left" and
        "right" cells swap), so the mirror is a second, equally valid view: averaging the two halves
        the errors on real 32 px scenes of 4 shapes.
        """
        parts = self._batches(images, batch_size, self._two_views)
        if not parts:
            return {
                k: np.zeros((0, CELLS, c) if k != "background" else (0, c), np.float32)
                for k, c in {"background": len(COLOR_NAMES), **_CELL_HEADS}.items()
            }
        return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}

    def _two_views(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean log-probabilities of images ``(N, 3, 32, 32)`` and their mirrors, on the CPU."""
        plain, mirrored = self.model(x), self.model(x.flip(-1))
        out = {}
        for name, logits in plain.items():
            other = mirrored[name] if name == "background" else mirrored[name][:, MIRRORED_CELLS]
            out[name] = (0.5 * (logits.log_softmax(-1) + other.log_softmax(-1))).float().cpu()
        return out

    def predict(self, images: np.ndarray, batch_size: int = 256) -> list[Scene]:
        """The scene each image shows: background and the shapes of the occupied cells."""
        log_probs = self.log_probabilities(images, batch_size)
        best = {k: v.argmax(-1) for k, v in log_probs.items()}  # (N,) or (N, 9) class indices
        scenes = []
        for i in range(len(best["background"])):
            objects = tuple(
                ObjectPrediction(
                    KINDS[best["kind"][i, c]],
                    COLOR_NAMES[best["color"][i, c]],
                    SIZE_NAMES[best["size"][i, c]],
                    POSITIONS[c],
                )
                for c in range(CELLS)
                if best["occupied"][i, c] == 1
            )
            scenes.append(Scene(COLOR_NAMES[best["background"][i]], objects))
        return scenes

    def accuracy(self, images: np.ndarray, *, labels=None, label_names=None, captions=None) -> float | None:
        """Fraction of images that show their condition: every attribute of their caption (when
        ``captions`` is given; it wins over labels), else their class; ``None`` with neither."""
        return self.accuracies(images, [{"labels": labels, "label_names": label_names, "captions": captions}])[0]

    def accuracies(self, images: np.ndarray, conditions: Sequence[dict]) -> list[float | None]:
        """:meth:`accuracy` of the same images under each of ``conditions`` (dicts of ``labels``,
        ``label_names``, ``captions``), the images' scenes predicted once (e.g. true and shuffled labels)."""
        if all(c.get("labels") is None and c.get("captions") is None for c in conditions):
            return [None] * len(conditions)
        scenes = self.predict(images)
        return [_fraction(scene_scores(scenes, **c)) for c in conditions]

    def attribute_accuracy(
        self, images: np.ndarray, *, labels=None, label_names=None, captions=None
    ) -> dict[str, float]:
        """Accuracy per attribute (diagnostics), plus ``"all"`` (= :meth:`accuracy`); ``{}`` with no conditions.

        With captions: ``background`` and ``count`` per image; ``position`` (the shape's cell is
        predicted occupied) and ``kind``/``color``/``size`` (... and holds that attribute) per shape
        of the captions. With labels: ``kind`` (and ``color`` for "red circle" names) per image.
        """
        return self.attribute_accuracies(
            images, [{"labels": labels, "label_names": label_names, "captions": captions}]
        )[0]

    def attribute_accuracies(self, images: np.ndarray, conditions: Sequence[dict]) -> list[dict[str, float]]:
        """:meth:`attribute_accuracy` of the same images under each of ``conditions`` (dicts of ``labels``,
        ``label_names``, ``captions``), the images' scenes predicted once (e.g. true and shuffled captions)."""
        if all(c.get("labels") is None and c.get("captions") is None for c in conditions):
            return [{} for _ in conditions]
        scenes = self.predict(images)
        return [_means(scene_scores(scenes, **c)) for c in conditions]


# Scoring predictions ----------------------------------------------------------------------------
def _means(scores: dict[str, list[bool]] | None) -> dict[str, float]:
    """The fraction right of each attribute (nan where nothing was scored); {} without scores."""
    return {} if scores is None else {k: float(np.mean(v)) if len(v) else float("nan") for k, v in scores.items()}


def _fraction(scores: dict[str, list[bool]] | None) -> float | None:
    """The fraction of images right on every attribute (``"all"``); nan with no images, None without scores."""
    return None if scores is None else float(np.mean(scores["all"])) if len(scores["all"]) else float("nan")


def scene_scores(
    scenes: Sequence[Scene], *, labels=None, label_names=None, captions=None
) -> dict[str, list[bool]] | None:
    """:func:`caption_scores` when ``captions`` is given (it wins over labels), else :func:`class_scores`;
    ``None`` with neither."""
    if captions is not None:
        return caption_scores(scenes, [str(c) for c in captions])
    if labels is not None:
        return class_scores(scenes, np.asarray(labels), label_names)
    return None


def class_names(labels: np.ndarray, label_names: Sequence[str] | None) -> list[str]:
    """The class name of each label: ``label_names[label]``, or ``KINDS[label]`` without names."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if label_names is None:
        if len(labels) and (labels.min() < 0 or labels.max() >= len(KINDS)):
            raise ConfigError(
                f"labels reach {int(labels.max())} but no label_names were given; pass the batch's "
                f"label_names (e.g. 'red circle') so classes can be checked"
            )
        label_names = KINDS
    names = [str(n) for n in label_names]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise ConfigError(f"labels must lie in 0..{len(names) - 1} (one per label name), got {int(labels.max())}")
    return [names[i] for i in labels]


def _parse_class(name: str) -> tuple[str | None, str]:
    """``"circle"`` -> (None, "circle"); ``"red circle"`` -> ("red", "circle")."""
    words = name.lower().split()
    color, kind = (None, words[0]) if len(words) == 1 else (words[0], words[-1]) if len(words) == 2 else (None, "")
    if kind not in KINDS or (color is not None and color not in COLOR_NAMES):
        raise ConfigError(f"class name {name!r} is not a shapes class; expected a kind ('circle') or 'colour kind'")
    return color, kind


def class_scores(scenes: Sequence[Scene], labels: np.ndarray, label_names=None) -> dict[str, list[bool]]:
    """Per image: ``kind`` (some predicted shape has the class's kind), ``color`` (colour classes
    only: ... has its colour) and ``all`` (one shape has both)."""
    if len(labels) != len(scenes):
        raise ConfigError(f"got {len(labels)} labels for {len(scenes)} images; pass one label per image")
    wanted = [_parse_class(n) for n in class_names(labels, label_names)]
    out: dict[str, list[bool]] = {"kind": [], "all": []}
    if any(color is not None for color, _ in wanted):
        out["color"] = []
    for scene, (color, kind) in zip(scenes, wanted):
        out["kind"].append(any(o.kind == kind for o in scene.objects))
        if "color" in out:
            out["color"].append(any(o.color == color for o in scene.objects))
        out["all"].append(any(o.kind == kind and color in (None, o.color) for o in scene.objects))
    return out


def caption_scores(scenes: Sequence[Scene], captions: Sequence[str]) -> dict[str, list[bool]]:
    """Per image (``background``, ``count``, ``all``) and per captioned shape (``position``,
    ``kind``, ``color``, ``size``) correctness of predicted scenes against their captions."""
    if len(captions) != len(scenes):
        raise ConfigError(f"got {len(captions)} captions for {len(scenes)} images; pass one caption per image")
    out: dict[str, list[bool]] = {k: [] for k in ("background", "count", "position", "kind", "color", "size", "all")}
    for scene, caption in zip(scenes, captions):
        try:
            want = parse_caption(caption)
        except ValueError as err:
            raise ConfigError(f"{err}; caption accuracy needs shapes captions") from None
        got = scene.cells()
        out["background"].append(scene.background == want["background"])
        out["count"].append(len(got) == len(want["objects"]))
        right = len(got) == len(want["objects"]) and scene.background == want["background"]
        for obj in want["objects"]:
            found = got.get(obj["position"])
            out["position"].append(found is not None)
            for name in ("kind", "color", "size"):
                out[name].append(found is not None and getattr(found, name) == obj[name])
            right = right and found is not None and all(getattr(found, k) == obj[k] for k in ("kind", "color", "size"))
        out["all"].append(right)
    return out


# Loading and saving -----------------------------------------------------------------------------
def load_shapes_evaluator(path: str | Path | None = None, device: str | torch.device = "cpu") -> ShapesEvaluator:
    """The evaluator from a weights file (default: the shipped one, cached), in eval mode.

    Raises :class:`CheckpointError` when the file is missing, corrupt or not a shapes evaluator.
    """
    retain_freed_memory_on(device)  # batches of 256 images: reuse freed memory instead of page-faulting it in
    if path is None:
        return _load_default(str(device))
    return _load(Path(path), device)


@functools.lru_cache(maxsize=4)
def _load_default(device: str) -> ShapesEvaluator:
    return _load(DEFAULT_WEIGHTS, device)


def _load(path: Path, device: str | torch.device) -> ShapesEvaluator:
    model = ShapesNet()
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}
            metadata = fh.metadata() or {}
        model.load_state_dict(state, strict=True)
    except Exception as err:  # safetensors raises several types for unreadable files; all mean "bad file"
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise CheckpointError(
            f"cannot load shapes evaluator weights {path}: {reason}; "
            f"re-run scripts/train_shapes_evaluator.py or reinstall ditscale"
        ) from None
    return ShapesEvaluator(model, device, metadata)


def save_shapes_evaluator(model: ShapesNet, path: str | Path, *, accuracy: dict | None = None) -> None:
    """Write ``model``'s weights as safetensors (atomically) with metadata: format, training seed
    and steps (``model.training_info``), torch version and the measured ``accuracy`` (JSON).

    Weight matrices are stored as float16 (half the size; loading converts them back), so measure
    accuracy on the model loaded from the file.
    """
    info = getattr(model, "training_info", {})
    metadata = {"format": FORMAT, "torch": torch.__version__, "accuracy": json.dumps(accuracy or {})}
    metadata.update({k: str(v) for k, v in info.items()})
    state = {k: _stored(v) for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    """A state-dict entry as saved: float16 for float32 matrices and kernels, unchanged otherwise."""
    tensor = tensor.detach().cpu().contiguous()
    return tensor.half() if tensor.dtype == torch.float32 and tensor.dim() > 1 else tensor


# Training ---------------------------------------------------------------------------------------
def training_batch(step: int, batch_size: int, data_seed: int = TRAIN_DATA_SEED) -> tuple[torch.Tensor, dict]:
    """Images ``(B, 3, 32, 32)`` and targets (:func:`scene_targets`) for one training step.

    Items ``step * B ..`` of the ``train`` split of ``data_seed``, each with an object limit (1..4,
    ``TRAIN_OBJECT_WEIGHTS``) and a render size (``TRAIN_RENDER_SIZES``) drawn from a generator
    seeded by (data_seed, step), rendered, passed through uint8 and resized exactly as at
    evaluation. A batch depends on its step alone, so batches can be made in any order or in parallel.
    """
    generator = torch.Generator().manual_seed((data_seed << 32) + step)
    weights = torch.tensor(TRAIN_OBJECT_WEIGHTS)
    limits = (torch.multinomial(weights, batch_size, replacement=True, generator=generator) + 1).tolist()
    sizes = torch.randint(0, len(TRAIN_RENDER_SIZES), (batch_size,), generator=generator).tolist()
    scenes = [sample_scene(data_seed, step * batch_size + i, "train", k) for i, k in enumerate(limits)]
    xs, order = [], []
    for s in sorted(set(sizes)):  # one uint8 conversion and resize per render size
        idx = [i for i, si in enumerate(sizes) if si == s]
        rendered = np.stack([render_scene(scenes[i], TRAIN_RENDER_SIZES[s]) for i in idx])  # (b, 3, S, S)
        xs.append(prepare_images(to_uint8(torch.from_numpy(rendered))))
        order += idx
    return torch.cat(xs), scene_targets([scenes[i] for i in order])


class _Batches(torch.utils.data.Dataset):
    """Step ``s`` -> :func:`training_batch` ``(s, ...)``, for a DataLoader with worker processes."""

    def __init__(self, steps: int, batch_size: int, data_seed: int):
        self.steps, self.batch_size, self.data_seed = steps, batch_size, data_seed

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        return training_batch(step, self.batch_size, self.data_seed)


def _loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the heads' cross-entropies (kind/colour/size on occupied cells only)."""
    total = F.cross_entropy(logits["background"], targets["background"])
    for name in _CELL_HEADS:
        total = total + F.cross_entropy(logits[name].flatten(0, 1), targets[name].flatten(), ignore_index=-100)
    return total


def train_shapes_evaluator(
    *,
    seed: int = 0,
    steps: int = 16000,
    batch_size: int = 128,
    lr: float = 2e-3,
    device: str = "cpu",
    workers: int = 0,
    progress: bool = True,
) -> ShapesNet:
    """Train a :class:`ShapesNet` on freshly rendered images (AdamW, warmup + cosine decay).

    Deterministic for a given ``seed``, device and thread count (``workers`` that render batches
    in parallel change nothing): the initial weights come from ``seed``, the images are the
    ``train`` split of data seed ``TRAIN_DATA_SEED + seed`` (:func:`training_batch`).
    """
    if seed < 0 or steps < 1 or batch_size < 1:
        raise ConfigError(f"need seed >= 0, steps >= 1, batch_size >= 1; got {seed}, {steps}, {batch_size}")
    with torch.random.fork_rng(devices=[]):  # seeded initial weights; the caller's RNG state is kept
        torch.manual_seed(seed)
        model = ShapesNet().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    batches = _Batches(steps, batch_size, TRAIN_DATA_SEED + seed)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None
    )
    bar = tqdm(enumerate(loader), total=steps, disable=not progress, desc="shapes evaluator")
    for step, (x, targets) in bar:
        loss = _loss(model(x.to(device)), {k: v.to(device) for k, v in targets.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    model.training_info = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr}
    return model.eval()
