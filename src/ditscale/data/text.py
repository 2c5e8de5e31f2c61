"""Text encoders for caption-conditioned DiTs: a small trained word encoder, or a frozen HF encoder.

Both have the same interface::

    emb, mask = encoder.encode(["a small red circle at the top left on a blue background"])
    # emb (N, L, encoder.context_dim) float32, mask (N, L) bool (True = a real token), L = encoder.max_length

* :class:`WordTextEncoder` (``torch.nn.Module``, trained with the DiT): a :class:`WordTokenizer`
  (word-level, vocabulary built from the captions; the shapes captions have a closed vocabulary),
  token + learned position embeddings, and optionally small pre-norm transformer layers (none by
  default: the DiT's own blocks mix the words).
* :class:`HFTextEncoder` (frozen): a Hugging Face CLIP text model or T5 encoder from a local folder
  or hub id (``local_files_only`` unless ``DITSCALE_ALLOW_DOWNLOAD=1``), its outputs cached on
  disk, one ``.safetensors`` file per (model, max_length, caption).

:func:`text_encoder_for` picks a model's encoder: the one named, the trained word encoder saved
beside its weights, or its run's Hugging Face encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ditscale.data.info import DIGIT_NAMES
from ditscale.data.listing import list_caption_pairs
from ditscale.data.shapes_grammar import COLOR_NAMES, COUNT_WORDS, KINDS, POSITIONS, SIZE_NAMES
from ditscale.data.store import read_meta, read_shard_records
from ditscale.errors import CheckpointError, ConfigError
from ditscale.io import atomic_path, atomic_write_json
from ditscale.models.io import METADATA_KEY, text_encoder_beside

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: ``"A red, big" -> ["a", "red", ",", "big"]``."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Word-level tokenizer: id 0 is ``<pad>``, id 1 ``<unk>`` (any word not in the vocabulary)."""

    def __init__(self, words: Iterable[str]):
        self.vocab = [PAD, UNK] + sorted(set(words) - {PAD, UNK})
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def from_captions(cls, captions: Iterable[str], min_count: int = 1) -> "WordTokenizer":
        """Vocabulary of the words occurring at least ``min_count`` times in ``captions``."""
        counts = Counter(w for c in captions for w in split_words(c))
        return cls(w for w, n in counts.items() if n >= min_count)

    @classmethod
    def for_shapes(cls, objects: int = 1) -> "WordTokenizer":
        """The closed vocabulary of the ``shapes`` caption grammar (no caption maps to ``<unk>``);
        ``objects > 1`` adds the words of several-object captions (one object keeps the old ids)."""
        words = "a an at the on background".split() + list(KINDS + COLOR_NAMES + SIZE_NAMES)
        words += [w for p in POSITIONS for w in p.split()]
        return cls(words + (["and", "shapes", ":", *COUNT_WORDS] if objects > 1 else []))

    @classmethod
    def for_dataset(cls, cfg) -> "WordTokenizer":
        """The vocabulary of a captioned dataset ``cfg`` (a ``DataConfig``): the shapes grammar for
        shapes (and latent stores extracted from shapes), else the words of all its captions."""
        if cfg.name == "shapes":
            return cls.for_shapes(cfg.shapes_objects)
        if cfg.name == "digits":
            return cls(["the", "digit", *DIGIT_NAMES])
        if cfg.name == "captions":
            return cls.from_captions(list_caption_pairs(cfg.path)[2])
        if cfg.name == "latents":
            meta = read_meta(cfg.path)
            if meta["source"]["name"] == "shapes":
                return cls.for_shapes(meta["source"].get("shapes_objects", 1))
            return cls.from_captions(read_shard_records(Path(cfg.path).expanduser(), meta)[1])
        raise ConfigError(f"data.name={cfg.name!r} has no captions to build a vocabulary from")

    @classmethod
    def from_vocab(cls, vocab: list[str]) -> "WordTokenizer":
        """The tokenizer of a saved vocabulary, ids exactly as saved (position in ``vocab``)."""
        tokenizer = cls([])
        tokenizer.vocab, tokenizer.ids = list(vocab), {w: i for i, w in enumerate(vocab)}
        return tokenizer

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, captions: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``(N, max_length)`` int64, padded with 0 / truncated, and mask ``(N, max_length)`` bool.

        An empty caption is encoded as one ``<unk>`` token, so every row has a real token.
        """
        ids = torch.zeros(len(captions), max_length, dtype=torch.int64)
        for row, text in enumerate(captions):
            toks = [self.ids.get(w, 1) for w in split_words(text)][:max_length] or [1]
            ids[row, : len(toks)] = torch.tensor(toks)
        return ids, ids != 0

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON ``{"vocab": [...]}`` (atomically)."""
        atomic_write_json(path, {"vocab": self.vocab})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WordTokenizer":
        return cls(json.loads(Path(path).read_text())["vocab"])


class WordTextEncoder(nn.Module):
    """Trainable caption encoder: token + learned position embeddings, then ``num_layers`` pre-norm
    transformer layers and a LayerNorm (none with ``num_layers=0``, the default).

    ``forward(ids, mask) -> (N, L, context_dim)``; outputs at padding positions are zero.
    Save ``encoder.tokenizer`` (``WordTokenizer.save``) next to the weights.

    Why no layers by default (docs/training.md, "The word encoder"): trained jointly with a DiT, the
    one-layer encoder dropped the word the DiT learns last. Its residual stream grew with training
    (mean norm 14 at 1.6e11 FLOPs, ~1000 at 5e13) while the shape word's embedding stayed ~5, and the
    final LayerNorm scaled that word's own share of its output down with the growth: circle and
    square differed by 0.03 where red and blue differed by 15, and the model drew one blob for every
    shape. With no layers each word's embedding reaches the DiT as it is, and the DiT's blocks (its
    text tokens share every block's sequence, or its cross-attention) do the mixing.
    """

    def __init__(
        self,
        tokenizer: WordTokenizer,
        context_dim: int = 64,
        max_length: int = 16,
        num_layers: int = 0,
        num_heads: int = 4,
    ):
        super().__init__()
        if num_layers < 0 or context_dim % num_heads:
            raise ConfigError(
                f"text encoder sizes num_layers={num_layers}, context_dim={context_dim}, num_heads={num_heads}: "
                "num_layers must be >= 0 and context_dim divisible by num_heads"
            )
        self.tokenizer, self.context_dim, self.max_length = tokenizer, context_dim, max_length
        self.num_layers, self.num_heads = num_layers, num_heads  # its sizes, as its file's metadata records them
        self.tok_emb = nn.Embedding(len(tokenizer), context_dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, max_length, context_dim))
        self.layers = self.norm = None
        if num_layers:
            layer = nn.TransformerEncoderLayer(
                context_dim,
                num_heads,
                4 * context_dim,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(context_dim)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.tok_emb(ids) + self.pos_emb[:, : ids.shape[1]]  # (N, L, context_dim)
        if self.layers is not None:
            h = self.norm(self.layers(h, src_key_padding_mask=~mask))
        return h * mask[..., None]

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(emb (N, max_length, context_dim), mask (N, max_length) bool)`` on the module's device."""
        ids, mask = self.tokenizer.encode(captions, self.max_length)
        device = self.tok_emb.weight.device
        return self(ids.to(device), mask.to(device)), mask.to(device)


WORD_SIZES = ("context_dim", "max_length", "num_layers", "num_heads")


def read_word_encoder_spec(path: Path) -> dict:
    """``{"vocab": [...], "context_dim", "max_length", "num_layers", "num_heads"}`` (ints) of a trained
    word encoder's ``text_encoder.safetensors`` (its "ditscale" metadata), checked."""
    if not path.is_file():
        raise CheckpointError(
            f"text encoder file '{path}' does not exist; pass the text_encoder.safetensors of a checkpoint"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception:  # safetensors raises its own SafetensorError for corrupt headers
        raise CheckpointError(
            f"'{path}' is not a readable safetensors file; pass a trained text_encoder.safetensors"
        ) from None
    try:
        spec = json.loads(raw) if raw else {}
        sizes = {k: int(spec[k]) for k in WORD_SIZES}
        vocab = list(spec["vocab"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(
            f"'{path}' has no word-encoder metadata (vocabulary and sizes); it was not written by `ditscale train`"
        ) from None
    if spec.get("text_encoder") != "word":
        raise CheckpointError(f"'{path}' holds a {spec.get('text_encoder')!r} text encoder, not a trained word encoder")
    return {"vocab": vocab, **sizes}


def load_word_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> WordTextEncoder:
    """The trained :class:`WordTextEncoder` of a checkpoint's ``text_encoder.safetensors``.

    The file's metadata (key ``"ditscale"``) holds the vocabulary and sizes the trainer wrote:
    ``{"text_encoder": "word", "context_dim", "max_length", "num_layers", "num_heads", "vocab"}``.
    """
    p = Path(path).expanduser()
    spec = read_word_encoder_spec(p)
    sizes = {k: spec[k] for k in WORD_SIZES}
    encoder = WordTextEncoder(WordTokenizer.from_vocab(spec["vocab"]), **sizes)  # exactly the saved ids
    try:
        encoder.load_state_dict(load_file(str(p)))
    except RuntimeError as err:
        raise CheckpointError(
            f"'{p}' does not match its own word-encoder sizes ({str(err).splitlines()[0][:160]})"
        ) from None
    return encoder.to(device).eval()


def _download_allowed() -> bool:
    return os.environ.get("DITSCALE_ALLOW_DOWNLOAD", "").strip().lower() in {"1", "true", "yes"}


class HFTextEncoder:
    """A frozen Hugging Face text encoder (CLIP text model, T5 encoder, or any ``AutoModel``), disk-cached.

    Args:
        name_or_path: a local folder (``save_pretrained`` of tokenizer + model) or a hub id, e.g.
            ``"openai/clip-vit-large-patch14"`` or ``"google/t5-v1_1-xxl"``.
        max_length: tokens per caption L (padded / truncated to exactly L); default 77 (CLIP).
        cache_dir: where embeddings are cached (None = no cache). Entries are keyed by the SHA-256 of
            (model id, max_length, caption); clear the folder if the weights at a path change.
        device, dtype: where the model runs; embeddings are returned as float32 on ``device``.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike,
        *,
        max_length: int = 77,
        cache_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        from transformers import (  # lazy: transformers (seconds to import; only Hugging Face encoders need it)
            AutoConfig,
            AutoModel,
            AutoTokenizer,
            CLIPTextModel,
            T5EncoderModel,
        )

        local = Path(name_or_path).expanduser()
        self.model_id = str(local.resolve()) if local.exists() else str(name_or_path)
        source = str(local) if local.exists() else str(name_or_path)
        only_local = not _download_allowed()
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=only_local)
            cls = {
                "t5": T5EncoderModel,
                "mt5": T5EncoderModel,
                "clip": CLIPTextModel,
                "clip_text_model": CLIPTextModel,
            }.get(config.model_type, AutoModel)
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=only_local)
            model = cls.from_pretrained(source, local_files_only=only_local)
        except (OSError, ValueError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise CheckpointError(
                f"text encoder '{name_or_path}' could not be loaded ({reason}); give a local folder with "
                "tokenizer + model files, or set DITSCALE_ALLOW_DOWNLOAD=1 to fetch a hub id"
            ) from None
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.device, self.max_length = torch.device(device), max_length
        self.context_dim = int(self.model.config.hidden_size)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    def _cache_file(self, caption: str) -> Path:
        key = hashlib.sha256(f"{self.model_id}\0{self.max_length}\0{caption}".encode("utf-8")).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.safetensors"

    @torch.no_grad()
    def _run(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(
            captions, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
        emb = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return emb.float(), mask.bool()

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(emb (N, max_length, context_dim) float32, mask (N, max_length) bool)``; cached captions skip the model."""
        if self.cache_dir is None:
            return self._run(list(captions))
        emb = torch.empty(len(captions), self.max_length, self.context_dim, device=self.device)
        mask = torch.empty(len(captions), self.max_length, dtype=torch.bool, device=self.device)
        missing = []
        for i, c in enumerate(captions):
            f = self._cache_file(c)
            if f.is_file():
                entry = load_file(f)
                emb[i], mask[i] = entry["emb"], entry["mask"]
            else:
                missing.append(i)
        if missing:
            new_emb, new_mask = self._run([captions[i] for i in missing])
            for j, i in enumerate(missing):
                emb[i], mask[i] = new_emb[j], new_mask[j]
                with atomic_path(self._cache_file(captions[i])) as tmp:
                    save_file({"emb": new_emb[j].cpu().contiguous(), "mask": new_mask[j].cpu().contiguous()}, str(tmp))
        return emb, mask


# -- the encoder of a text-conditional model --------------------------------------------------------
TextEncoder = WordTextEncoder | HFTextEncoder


def _encoder_name(weights: Path, run_encoder: str | None) -> str | None:
    """The trained word encoder saved beside ``weights``, else the run config's ``text_encoder``."""
    found = text_encoder_beside(weights)
    name = str(found) if found is not None else run_encoder
    if name == "word":
        raise ConfigError(
            f"the run trained a word encoder but {weights.parent / 'text_encoder.safetensors'} is missing; "
            "pass --text-encoder PATH/text_encoder.safetensors"
        )
    return name


def text_encoder_for(
    weights: Path,
    *,
    context_len: int,
    context_dim: int,
    name: str | None = None,
    run_encoder: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TextEncoder:
    """The text encoder of the text-conditional model in ``weights``, checked to give its embeddings.

    ``name`` (a ``text_encoder.safetensors``, or a Hugging Face folder / hub id) when given; else the
    checkpoint's trained word encoder beside ``weights`` (its EMA beside EMA weights); else
    ``run_encoder``, the run config's Hugging Face encoder (``RunDir.text_encoder()``). A Hugging Face
    encoder pads captions to ``context_len`` tokens; ``progress`` False silences its download bars.
    The encoder must give ``context_dim``-wide embeddings, as the model takes.
    """
    name = _encoder_name(weights, run_encoder) if name is None else name
    if not name:
        raise ConfigError(
            "this model is text-conditional and no text encoder was found next to its weights: pass --text-encoder "
            "(a text_encoder.safetensors, or a Hugging Face folder / hub id)"
        )
    if str(name).endswith(".safetensors"):
        encoder = load_word_encoder(name, device)
    else:
        if not progress:
            from transformers.utils import logging as hf_logging  # lazy: transformers, only for its encoders

            hf_logging.disable_progress_bar()
        encoder = HFTextEncoder(name, max_length=context_len, device=device)
    if encoder.context_dim != context_dim:
        raise ConfigError(
            f"text encoder '{name}' gives {encoder.context_dim}-wide embeddings but the model takes {context_dim}; "
            "pass the encoder the model was trained with"
        )
    return encoder
