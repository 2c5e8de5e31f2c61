"""Text encoders: word tokenizer, trainable WordTextEncoder, frozen cached HFTextEncoder (tiny offline models)."""

from __future__ import annotations

import pytest
import torch

from ditscale.data import DataConfig, build_dataset
from ditscale.data.text import HFTextEncoder, WordTextEncoder, WordTokenizer, split_words
from ditscale.errors import CheckpointError, ConfigError


def test_word_tokenizer(tmp_path):
    assert split_words("A red, BIG square!") == ["a", "red", ",", "big", "square", "!"]
    tok = WordTokenizer.from_captions(["a red square", "a blue circle", "a red circle"], min_count=2)
    assert tok.vocab == ["<pad>", "<unk>", "a", "circle", "red"]
    ids, mask = tok.encode(["a red square", "", "a red circle a red circle"], max_length=4)
    assert ids.tolist() == [[2, 4, 1, 0], [1, 0, 0, 0], [2, 4, 3, 2]]  # unk = 1, pad = 0, truncated to 4
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False], [True] * 4]
    tok.save(tmp_path / "vocab.json")
    assert WordTokenizer.load(tmp_path / "vocab.json").vocab == tok.vocab


def test_shapes_vocabulary_is_closed():
    tok = WordTokenizer.for_shapes()
    ds = build_dataset(DataConfig(captions=True))
    captions = [ds[i]["caption"] for i in range(300)]
    ids, mask = tok.encode(captions, max_length=16)
    assert (ids != 1).all()  # no <unk>
    lengths = mask.sum(1)
    assert lengths.min() >= 10 and lengths.max() <= 12  # "a small red circle at the top left on a blue background"
    assert len(tok) == 2 + 6 + 6 + 8 + 3 + 5  # specials, grammar words, kinds, colours, sizes, position words


def test_tokenizer_for_dataset(tmp_path):
    assert WordTokenizer.for_dataset(DataConfig()).vocab == WordTokenizer.for_shapes().vocab
    digits = WordTokenizer.for_dataset(DataConfig(name="digits"))
    assert len(digits) == 2 + 12 and (digits.encode(["the digit seven"], 3)[0] != 1).all()
    (tmp_path / "i.csv").write_text("image,caption\na.png,Big dog\nb.png,big cat!\n")
    caps = WordTokenizer.for_dataset(DataConfig(name="captions", path=str(tmp_path / "i.csv")))
    assert caps.vocab == ["<pad>", "<unk>", "!", "big", "cat", "dog"]


def test_word_text_encoder_shapes_mask_and_gradients():
    torch.manual_seed(0)
    tok = WordTokenizer.for_shapes()
    enc = WordTextEncoder(tok, context_dim=32, max_length=12, num_layers=2, num_heads=4)
    captions = ["a small red circle at the top left on a blue background", "a large green ring"]
    emb, mask = enc.encode(captions)
    assert emb.shape == (2, 12, 32) and enc.context_dim == 32 and enc.max_length == 12
    assert mask.sum(1).tolist() == [12, 4]
    assert (emb[1, 4:] == 0).all() and (emb[1, :4].abs().sum(-1) > 0).all()
    # Padding does not leak into real tokens: the same caption alone gives the same embedding.
    alone, _ = enc.encode(["a large green ring"])
    torch.testing.assert_close(alone[0], emb[1], atol=1e-5, rtol=1e-5)
    emb.square().mean().backward()
    assert enc.tok_emb.weight.grad[tok.ids["green"]].abs().sum() > 0
    assert enc.tok_emb.weight.grad[tok.ids["purple"]].abs().sum() == 0  # unused word, no gradient


def test_default_word_encoder_passes_every_word_to_the_dit():
    """The default encoder (no layers) hands the DiT each word's own embedding at its position, so no
    word can be drowned: a one-layer encoder whose residual stream has grown (as it does in training,
    docs/training.md) scales one word's share of its output down by the growth."""
    torch.manual_seed(0)
    tok = WordTokenizer.for_shapes()
    enc = WordTextEncoder(tok)
    assert enc.layers is None and enc.norm is None and sorted(enc.state_dict()) == ["pos_emb", "tok_emb.weight"]
    circle, square = (
        "a large red circle at the center on a white background",
        "a large red square at the center on a white background",
    )
    emb, _ = enc.encode([circle, square])
    ids = tok.encode([circle], 16)[0][0]
    torch.testing.assert_close(emb[0, :11], enc.tok_emb.weight[ids[:11]] + enc.pos_emb[0, :11])
    diff = (emb[0] - emb[1]).norm(dim=-1)
    assert diff[3] > 0 and (diff[torch.arange(16) != 3] == 0).all()  # only the shape word's row moves
    torch.testing.assert_close(
        diff[3], (enc.tok_emb.weight[tok.ids["circle"]] - enc.tok_emb.weight[tok.ids["square"]]).norm()
    )

    layered = WordTextEncoder(tok, num_layers=1)
    with torch.no_grad():
        layered.tok_emb.weight.mul_(200)  # trained embeddings have norm ~5 (init std 0.02 x sqrt(64) = 0.16)
        before = (layered.encode([circle])[0] - layered.encode([square])[0]).norm()
        layered.layers.layers[0].linear2.bias.add_(torch.randn(64) * 125)  # a residual stream of norm ~1000
        after = (layered.encode([circle])[0] - layered.encode([square])[0]).norm()
    assert after < before / 10


def test_word_encoder_sizes_are_checked():
    with pytest.raises(ConfigError, match="num_layers must be >= 0"):
        WordTextEncoder(WordTokenizer.for_shapes(), num_layers=-1)
    with pytest.raises(ConfigError, match="context_dim divisible by num_heads"):
        WordTextEncoder(WordTokenizer.for_shapes(), context_dim=30, num_heads=4)


def test_hf_encoder_cache_hit_skips_the_model(tiny_clip, tmp_path):
    enc = HFTextEncoder(tiny_clip, max_length=8, cache_dir=tmp_path / "cache")
    assert (enc.context_dim, enc.max_length) == (32, 8)
    captions = ["a small red circle", "a large blue square at the top left", "a small red circle"]
    emb, mask = enc.encode(captions)
    assert emb.shape == (3, 8, 32) and emb.dtype == torch.float32
    assert mask.sum(1).tolist() == [4, 8, 4]
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2  # one file per distinct caption
    torch.testing.assert_close(emb[0], emb[2])
    uncached = HFTextEncoder(tiny_clip, max_length=8)
    torch.testing.assert_close(uncached.encode(captions[:1])[0][0], emb[0], atol=1e-5, rtol=1e-5)

    calls = []
    forward = enc.model.forward
    enc.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    emb2, mask2 = enc.encode(captions[::-1])
    assert calls == [] and torch.equal(emb2, emb.flip(0)) and torch.equal(mask2, mask.flip(0))
    enc.encode(["a large red square", "a small red circle"])
    assert calls == [1]  # only the new caption went through the model, in one batch


def test_hf_encoder_t5_uses_encoder_only(tmp_path, tiny_clip):
    from transformers import AutoTokenizer, T5Config, T5Model

    torch.manual_seed(0)
    T5Model(T5Config(vocab_size=18, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_clip).save_pretrained(tmp_path)
    enc = HFTextEncoder(tmp_path, max_length=6)
    emb, mask = enc.encode(["a red circle"])
    assert type(enc.model).__name__ == "T5EncoderModel" and emb.shape == (1, 6, 16) and mask.sum() == 3


def test_hf_encoder_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="text encoder '.*nothing' could not be loaded"):
        HFTextEncoder(tmp_path / "nothing")


def test_word_encoder_probe_reads_a_trained_text_run(tmp_path, monkeypatch, capsys):
    """scripts/word_encoder_probe.py (docs/training.md's table) on a text run trained 3 steps: each
    attribute's words move the encoder's output and the DiT's; the default encoder has no residual
    stream to report, a one-layer one does."""
    import importlib.util
    from pathlib import Path

    from ditscale.train import load_train_config, train
    from ditscale.train.config import WORD_ENCODER

    path = Path(__file__).resolve().parents[1] / "scripts" / "word_encoder_probe.py"
    spec = importlib.util.spec_from_file_location("word_encoder_probe", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    micro = ["model.hidden_size=32", "model.depth=1", "model.num_heads=2", "batch_size=4", "max_steps=3"]
    micro += ["val.every=0", "ckpt_every=0", "optim.warmup_steps=1"]
    for layers in (0, 1):
        monkeypatch.setitem(WORD_ENCODER, "num_layers", layers)
        train(load_train_config("tiny-text", micro), tmp_path / f"run{layers}", progress=False)
        got = probe.probe(probe.ema_weights(tmp_path / f"run{layers}"))
        for attribute in ("shape", "colour", "size", "position"):
            assert got[f"{attribute}_enc"] > 0 and got[f"{attribute}_dit"] > 0, (layers, attribute)
        assert (got["stream"] != got["stream"]) == (layers == 0)  # NaN without layers
        assert got["stream"] != got["stream"] or got["stream"] > 0
    monkeypatch.setattr("sys.argv", ["word_encoder_probe.py", str(tmp_path / "run0")])
    probe.main()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run | shape_enc | colour_enc") and out[2].startswith("| run0 | ")
    with pytest.raises(SystemExit, match="pass a weights file, a checkpoint folder or a run folder"):
        probe.ema_weights(tmp_path)
