"""DiT backbone: reference keys/shapes/counts, functional equivalence with the reference forward, CFG, designs."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ditscale.errors import ConfigError, DataError
from ditscale.models import MODEL_NAMES, MODEL_SIZES, DiTConfig, create_model
from ditscale.models import dit as dit_module
from ditscale.models import kernels
from ditscale.models.dit import LabelEmbedder, sincos_pos_embed_2d, timestep_embedding

DATA = Path(__file__).parent / "data" / "models"
TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)
TEXT = dict(conditioning="text", context_dim=12, context_len=5)


def tiny(**overrides) -> DiTConfig:
    return DiTConfig(**{**TINY, **overrides})


def randomized(config: DiTConfig, seed: int = 0):
    """A model whose every trainable weight (incl. the zero-initialised ones) is random and non-zero."""
    torch.manual_seed(seed)
    model = create_model(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


# ------------------------------------------------------------------------------------------------
# Reference layout and sizes
# ------------------------------------------------------------------------------------------------


def test_xl2_state_dict_equals_reference_keys_and_shapes():
    reference = json.loads((DATA / "dit_xl2_256_keys.json").read_text())["keys"]
    with torch.device("meta"):
        model = create_model("DiT-XL/2", input_size=32, num_classes=1000)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == reference  # same keys, same order, same shapes -> official checkpoint loads strictly
    assert model.num_params() == 675_129_632 == sum(math.prod(s) for _, s in reference)
    assert not model.pos_embed.requires_grad


def reference_param_count(name: str, input_size: int = 32, in_channels: int = 4, num_classes: int = 1000) -> int:
    """Closed-form parameter count of the reference class-conditional adaLN-Zero DiT (learn_sigma)."""
    size, patch = name[len("DiT-") :].split("/")
    depth, d, _ = MODEL_SIZES[size]
    p, out = int(patch), 2 * in_channels
    block = (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d) + (6 * d * d + 6 * d)
    embed = (p * p * in_channels * d + d) + (256 * d + d + d * d + d) + (num_classes + 1) * d
    pos = (input_size // p) ** 2 * d
    final = (d * p * p * out + p * p * out) + (2 * d * d + 2 * d)
    return depth * block + embed + pos + final


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_named_config_param_counts(name):
    with torch.device("meta"):
        model = create_model(name)
    n = model.num_params()
    assert n == reference_param_count(name)
    table4_millions = {"S": 33, "B": 130, "L": 458, "XL": 675}[name[4:].split("/")[0]]  # DiT paper Table 4
    assert abs(n / 1e6 - table4_millions) / table4_millions < 0.01


def test_non_embedding_param_count():
    model = create_model(tiny())
    d, depth, p, out = 32, 2, 2, 8
    blocks = depth * (18 * d * d + 15 * d)
    final_modulation = 2 * d * d + 2 * d
    assert model.num_params(non_embedding=True) == blocks + final_modulation == 39_936
    embed = (p * p * 4 * d + d) + (256 * d + d + d * d + d) + 11 * d + 16 * d + (d * p * p * out + p * p * out)
    assert model.num_params() == 39_936 + embed


@pytest.mark.parametrize("block", ["adaln_zero", "adaln", "cross_attn", "in_context"])
def test_param_counts_agree_with_flops_module(block):
    flops = pytest.importorskip("ditscale.flops")
    for extra in ({}, TEXT, {"conditioning": "none"}):
        config = DiTConfig(**{**TINY, "block": block, **extra})
        with torch.device("meta"):
            model = create_model(config)
        counts = flops.param_counts(config)
        assert (model.num_params(), model.num_params(non_embedding=True)) == (counts.total, counts.non_embedding)


# ------------------------------------------------------------------------------------------------
# Embeddings and init
# ------------------------------------------------------------------------------------------------


def test_timestep_embedding_hand_values():
    # dim 4: frequencies exp(-ln(1e4) * [0, 1] / 2) = [1, 0.01]; cosines first.
    emb = timestep_embedding(torch.tensor([2.0]), 4)
    expected = torch.tensor([[math.cos(2), math.cos(0.02), math.sin(2), math.sin(0.02)]])
    torch.testing.assert_close(emb, expected, rtol=0, atol=1e-6)
    odd = timestep_embedding(torch.tensor([2.0]), 5)
    assert odd.shape == (1, 5) and odd[0, 4] == 0


def test_sincos_pos_embed_hand_values():
    # dim 8 on a 2x2 grid: w = [1, 0.01]; first half encodes the column, second half the row.
    pe = sincos_pos_embed_2d(8, 2)
    s1, s2, c1, c2 = math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)
    torch.testing.assert_close(pe[0], torch.tensor([0, 0, 1, 1, 0, 0, 1, 1.0]))
    torch.testing.assert_close(pe[1], torch.tensor([s1, s2, c1, c2, 0, 0, 1, 1]))  # row 0, col 1
    torch.testing.assert_close(pe[2], torch.tensor([0, 0, 1, 1, s1, s2, c1, c2]))  # row 1, col 0
    model = create_model(tiny())
    assert torch.equal(model.pos_embed[0], sincos_pos_embed_2d(32, 4))


def test_adaln_zero_init_outputs_exactly_zero_and_blocks_are_identity():
    torch.manual_seed(0)
    model = create_model(tiny()).eval()
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([0.0, 10.5, 999.0]), torch.tensor([0, 3, 10])
    out = model(x, t, y)
    assert out.shape == (3, 8, 8, 8) and torch.count_nonzero(out) == 0
    tokens, c = torch.randn(3, 16, 32), torch.randn(3, 32)
    assert torch.equal(model.blocks[0](tokens, c), tokens)
    assert model.t_embedder.mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.y_embedder.embedding_table.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(model.blocks[1].attn.qkv.bias) == 0
    # xavier-uniform bound sqrt(6 / (fan_in + fan_out)) on the flattened patch-embed weight (32, 16)
    assert model.x_embedder.proj.weight.abs().max() <= math.sqrt(6 / (32 + 16))
    assert model.x_embedder.proj.weight.abs().max() > 0.8 * math.sqrt(6 / (32 + 16))


def test_adaln_modulation_is_not_zero_initialised():
    model = create_model(tiny(block="adaln"))
    mod = model.blocks[0].adaLN_modulation[1]
    assert mod.weight.shape == (4 * 32, 32) and mod.weight.std() > 0.05  # xavier: std 0.112
    assert torch.count_nonzero(model.final_layer.linear.weight) == 0


# ------------------------------------------------------------------------------------------------
# Functional equivalence with an independent statement of the reference forward pass
# ------------------------------------------------------------------------------------------------


def _linear(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _layer_norm(x):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6)


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def reference_forward(sd, x, t, y, *, patch, heads, depth, out_channels):
    """facebookresearch/DiT DiT.forward (eval mode) restated with plain tensor ops on a state dict."""
    n = x.shape[0]
    h = F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=patch)
    h = h.flatten(2).transpose(1, 2) + sd["pos_embed"]
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    args = t[:, None].float() * freqs[None]
    t_freq = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    t_emb = _linear(F.silu(_linear(t_freq, sd, "t_embedder.mlp.0")), sd, "t_embedder.mlp.2")
    c = t_emb + sd["y_embedder.embedding_table.weight"][y]
    tokens, dim = h.shape[1], h.shape[2]
    dh = dim // heads
    for i in range(depth):
        b = f"blocks.{i}"
        mod = _linear(F.silu(c), sd, f"{b}.adaLN_modulation.1")
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            mod[:, k * dim : (k + 1) * dim, None].transpose(1, 2) for k in range(6)
        )
        a = _layer_norm(h) * (1 + scale_msa) + shift_msa
        qkv = _linear(a, sd, f"{b}.attn.qkv").reshape(n, tokens, 3, heads, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1)
        a = (weights @ v).transpose(1, 2).reshape(n, tokens, dim)
        h = h + gate_msa * _linear(a, sd, f"{b}.attn.proj")
        m = _layer_norm(h) * (1 + scale_mlp) + shift_mlp
        m = _linear(_gelu_tanh(_linear(m, sd, f"{b}.mlp.fc1")), sd, f"{b}.mlp.fc2")
        h = h + gate_mlp * m
    mod = _linear(F.silu(c), sd, "final_layer.adaLN_modulation.1")
    shift, scale = mod[:, None, :dim], mod[:, None, dim:]
    h = _linear(_layer_norm(h) * (1 + scale) + shift, sd, "final_layer.linear")  # (N, T, p*p*C)
    g = int(tokens**0.5)
    img = torch.zeros(n, out_channels, g * patch, g * patch)
    for row in range(g):
        for col in range(g):
            for pr in range(patch):
                for pc in range(patch):
                    for ch in range(out_channels):
                        img[:, ch, row * patch + pr, col * patch + pc] = h[
                            :, row * g + col, (pr * patch + pc) * out_channels + ch
                        ]
    return img


def test_forward_matches_reference_restatement():
    config = tiny(depth=3)
    model = randomized(config, seed=1)
    torch.manual_seed(2)
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([1.0, 250.5, 999.0]), torch.tensor([0, 7, 10])
    with torch.no_grad():
        ours = model(x, t, y)
        ref = reference_forward(model.state_dict(), x, t, y, patch=2, heads=4, depth=3, out_channels=8)
    assert ours.abs().max() > 0.1  # a non-trivial output, not zeros
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_output_conv_head_starts_as_dit_and_reaches_across_patch_borders():
    """``out_conv``: the other weights draw what they draw without the head, the model still starts
    at output 0, and once trained a pixel's output depends on its neighbouring patch's token."""
    torch.manual_seed(0)
    plain = create_model(tiny(**TEXT, block="in_context"))
    torch.manual_seed(0)
    head = create_model(tiny(**TEXT, block="in_context", out_conv=5))
    plain_sd, head_sd = plain.state_dict(), head.state_dict()
    assert sorted(set(head_sd) - set(plain_sd)) == [f"out_conv.conv{i}.{k}" for i in (1, 2) for k in ("bias", "weight")]
    assert all(torch.equal(plain_sd[k], head_sd[k]) for k in plain_sd)
    assert (
        head_sd["out_conv.conv1.weight"].shape == (5, 8, 3, 3)
        and torch.count_nonzero(head_sd["out_conv.conv2.weight"]) == 0
    )
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 700.0]), torch.randn(2, 5, 12)
    assert torch.count_nonzero(head.eval()(x, t, context=ctx)) == 0

    model = randomized(tiny(**TEXT, block="in_context", out_conv=5), seed=3)
    no_head = randomized(tiny(**TEXT, block="in_context"), seed=3)
    no_head.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("out_conv.")})
    with torch.no_grad():
        linear = no_head(x, t, context=ctx)
        ours = model(x, t, context=ctx)
        want = linear + model.out_conv.conv2(F.gelu(model.out_conv.conv1(linear)))
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-6)
    # patch 2: pixel (0, 1) is drawn by token (row 0, column 0); its 3x3 neighbourhood reaches pixel
    # column 2, drawn by token (row 0, column 1): with the head that token moves the pixel, without it not
    tokens = torch.randn(1, 16, 32, requires_grad=True)
    for net, reaches in ((model, True), (no_head, False)):
        img = net.unpatchify(net.final_layer(tokens, None))
        img = net.out_conv(img) if net.out_conv is not None else img
        (grad,) = torch.autograd.grad(img[0, :, 0, 1].sum(), tokens)
        assert bool(grad[0, 1].abs().sum() > 0) is reaches and grad[0, 0].abs().sum() > 0
    with pytest.raises(ConfigError, match="out_conv must be >= 0"):
        tiny(out_conv=-1)


# ------------------------------------------------------------------------------------------------
# Classifier-free guidance
# ------------------------------------------------------------------------------------------------


def test_forward_with_cfg_combines_halves_like_reference():
    model = create_model(tiny())
    seen = {}

    def fake_forward(x, t, y, context=None, context_mask=None, force_drop_ids=None):
        seen["x"] = x
        # conditional rows output ch + 1, null-class rows 101 + ch, on every pixel
        ch = torch.arange(8, dtype=torch.float32)[None, :, None, None]
        null = (y == 10).float()[:, None, None, None]
        return (ch + 1 + 100 * null).expand(len(x), 8, 8, 8).clone()

    model.forward = fake_forward
    x = torch.randn(4, 4, 8, 8)
    out = model.forward_with_cfg(x, torch.zeros(4), torch.tensor([1, 2, 10, 10]), cfg_scale=4.0)
    assert torch.equal(seen["x"], torch.cat([x[:2], x[:2]]))
    # guided: uncond + 4 * (cond - uncond) = (101 + ch) - 400 = ch - 299, in both halves
    for ch in range(3):
        assert torch.all(out[:, ch] == ch - 299)
    for ch in range(3, 8):  # unguided rest: conditional half ch + 1, unconditional half 101 + ch
        assert torch.all(out[:2, ch] == ch + 1) and torch.all(out[2:, ch] == 101 + ch)
    out4 = model.forward_with_cfg(x, torch.zeros(4), torch.tensor([1, 2, 10, 10]), cfg_scale=4.0, guided_channels=4)
    assert torch.all(out4[:, 3] == 3 - 299) and torch.all(out4[:2, 4] == 5)


def test_forward_with_cfg_scale_one_is_conditional_output():
    model = randomized(tiny(), seed=3)
    torch.manual_seed(4)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0, 500.0, 500.0])
    y = torch.tensor([3, 5, 10, 10])
    with torch.no_grad():
        out = model.forward_with_cfg(torch.cat([x, torch.randn_like(x)]), t, y, cfg_scale=1.0)
        cond = model(x, t[:2], y[:2])
        uncond = model(x, t[:2], y[2:])
    torch.testing.assert_close(out[:2, :3], cond[:, :3], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[2:, :3], cond[:, :3], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[:2, 3:], cond[:, 3:], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[2:, 3:], uncond[:, 3:], rtol=0, atol=1e-5)
    assert (cond - uncond).abs().max() > 1e-2  # the label matters, so the checks above can fail


# ------------------------------------------------------------------------------------------------
# Block designs, conditioning, checkpointing, label dropout
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", ["adaln_zero", "adaln", "cross_attn", "in_context"])
@pytest.mark.parametrize("conditioning", ["class", "text"])
def test_designs_forward_backward_and_condition_use(block, conditioning):
    config = tiny(block=block, **(TEXT if conditioning == "text" else {}))
    torch.manual_seed(0)
    model = create_model(config).train()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 700.0])
    kwargs = {"y": torch.tensor([1, 2])} if conditioning == "class" else {"context": torch.randn(2, 5, 12)}
    out = model(x, t, **kwargs)
    assert out.shape == (2, 8, 8, 8)
    (out - torch.randn_like(out)).square().mean().backward()  # a target, so the zero output has a gradient
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trainable)
    assert model.final_layer.linear.weight.grad.abs().sum() > 0

    model = randomized(config, seed=5)
    with torch.no_grad():
        base = model(x, t, **kwargs)
        if conditioning == "class":
            other = model(x, t, y=torch.tensor([4, 2]))
        else:
            other = model(x, t, context=kwargs["context"] + torch.randn(2, 5, 12))
    assert (base[0] - other[0]).abs().max() > 1e-3  # the condition reaches the output


@pytest.mark.parametrize("block", ["adaln_zero", "adaln", "cross_attn", "in_context"])
def test_text_mask_equals_dropping_the_tokens(block):
    model = randomized(tiny(block=block, **TEXT), seed=6)
    torch.manual_seed(7)
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 20.0]), torch.randn(2, 5, 12)
    mask = torch.tensor([[True, True, False, False, False], [True, True, False, False, False]])
    with torch.no_grad():
        masked = model(x, t, context=ctx, context_mask=mask)
        short = model(x, t, context=ctx[:, :2])
        null = model(x, t, context=ctx, force_drop_ids=torch.tensor([1, 1]))
        all_masked = model(x, t, context=torch.randn(2, 5, 12), context_mask=torch.zeros(2, 5, dtype=torch.bool))
    torch.testing.assert_close(masked, short, rtol=0, atol=1e-5)
    torch.testing.assert_close(null, all_masked, rtol=0, atol=1e-6)  # null text condition = no text tokens
    assert (null - short).abs().max() > 1e-3


def test_text_cfg_drops_second_half():
    model = randomized(tiny(**TEXT), seed=8)
    torch.manual_seed(9)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 12)
    t = torch.full((2,), 100.0)
    with torch.no_grad():
        out = model.forward_with_cfg(x, t, None, cfg_scale=2.5, context=ctx)
        cond = model(x[:1], t[:1], context=ctx[:1])
        uncond = model(x[:1], t[:1], context=ctx[:1], force_drop_ids=torch.tensor([1]))
    torch.testing.assert_close(out[:1, :3], uncond[:, :3] + 2.5 * (cond[:, :3] - uncond[:, :3]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", ["adaln_zero", "cross_attn"])
def test_gradient_checkpointing_same_gradients(block, monkeypatch):
    config = tiny(block=block, class_dropout_prob=0.0)
    plain = randomized(config, seed=10).train()
    ckpt = create_model(config.replace(gradient_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    real_checkpoint = dit_module.checkpoint
    monkeypatch.setattr(dit_module, "checkpoint", lambda *a, **k: calls.append(k) or real_checkpoint(*a, **k))
    torch.manual_seed(11)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([5.0, 50.0]), torch.tensor([1, 9])
    for model in (plain, ckpt):
        model(x, t, y).square().mean().backward()
    assert calls == [{"use_reentrant": False}] * 2  # one call per block, only in the checkpointed model
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-7, msg=name)
    with torch.no_grad():  # no checkpointing without grad (sampling)
        ckpt(x, t, y)
    assert len(calls) == 2


def test_label_dropout_and_force_drop():
    emb = LabelEmbedder(10, 4, dropout_prob=0.5)
    assert emb.embedding_table.weight.shape == (11, 4)
    assert LabelEmbedder(10, 4, dropout_prob=0.0).embedding_table.weight.shape == (10, 4)
    labels = torch.arange(64) % 10
    torch.manual_seed(0)
    dropped = emb.token_drop(labels)
    torch.manual_seed(0)
    expected_drop = torch.rand(64) < 0.5
    assert torch.equal(dropped, torch.where(expected_drop, 10, labels))
    assert 10 < int((dropped == 10).sum()) < 54
    forced = emb.token_drop(torch.tensor([1, 2, 3, 4]), force_drop_ids=torch.tensor([1, 0, 1, 0]))
    assert forced.tolist() == [10, 2, 10, 4]
    table = emb.embedding_table.weight
    assert torch.equal(emb(torch.tensor([1, 2]), train=False), table[[1, 2]])  # no dropout in eval
    assert torch.equal(emb(torch.tensor([1, 2]), train=False, force_drop_ids=torch.tensor([0, 1])), table[[1, 10]])

    model = randomized(tiny(class_dropout_prob=0.5), seed=12)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([1.0, 2.0])
    with torch.no_grad():
        forced_out = model(x, t, torch.tensor([3, 4]), force_drop_ids=torch.tensor([1, 0]))
        null_out = model(x, t, torch.tensor([10, 4]))
        both_null = model(x, t, torch.tensor([10, 10]))
        model.train()
        torch.manual_seed(3)  # rand(2) < 0.5 with seed 3 -> [True, True]: both labels dropped
        assert (torch.rand(2) < 0.5).tolist() == [True, True]
        torch.manual_seed(3)
        train_out = model(x, t, torch.tensor([3, 4]))
    torch.testing.assert_close(forced_out, null_out, rtol=0, atol=0)
    torch.testing.assert_close(train_out, both_null, rtol=0, atol=0)


def test_input_errors_are_one_line():
    model = create_model(tiny())
    with pytest.raises(DataError, match=r"shape \(1, 4, 16, 16\) but this model takes \(N, 4, 8, 8\)"):
        model(torch.randn(1, 4, 16, 16), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    with pytest.raises(DataError, match="class-conditional: pass class labels y"):
        model(torch.randn(1, 4, 8, 8), torch.zeros(1))
    text = create_model(tiny(**TEXT))
    with pytest.raises(DataError, match=r"context has shape \(1, 6, 12\) but this model takes \(N, L<=5, 12\)"):
        text(torch.randn(1, 4, 8, 8), torch.zeros(1), context=torch.randn(1, 6, 12))
    uncond = create_model(tiny(conditioning="none"))
    assert uncond.y_embedder is None and uncond(torch.randn(1, 4, 8, 8), torch.zeros(1)).shape == (1, 8, 8, 8)
    with pytest.raises(ConfigError, match="conditioning='none'"):
        uncond.forward_with_cfg(torch.randn(2, 4, 8, 8), torch.zeros(2), None, cfg_scale=4.0)
    # A width the 2-D sin-cos position embedding cannot split in four fails when configured (a
    # study's plan), not when its model is first built.
    with pytest.raises(ConfigError, match="hidden_size 42 is not divisible by 4"):
        tiny(hidden_size=42, num_heads=3)


# ------------------------------------------------------------------------------------------------
# CPU attention paths (ditscale.models.kernels): same function as SDPA, picked by a fixed rule
# ------------------------------------------------------------------------------------------------


def _sdpa(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("shape", [(2, 4, 18, 8), (3, 2, 66, 32), (1, 1, 130, 64), (2, 8, 66, 4)])
@pytest.mark.parametrize("masked", [False, True])
def test_explicit_attention_equals_sdpa_forward_and_gradients(shape, masked):
    n, h, t, d = shape
    torch.manual_seed(0)
    q, k, v = (torch.randn(n, h, t, d, requires_grad=True) for _ in range(3))
    mask = None
    if masked:  # (N, 1, 1, T) key mask as the model builds it; the first key is always kept
        mask = torch.rand(n, 1, 1, t) > 0.4
        mask[..., 0] = True
    grad_out = torch.randn(n, h, t, d)
    results = []
    for fn in (kernels.explicit_attention, _sdpa):
        out = fn(q, k, v, mask)
        results.append((out, *torch.autograd.grad(out, (q, k, v), grad_out)))
    for ours, ref, what in zip(results[0], results[1], ("out", "dq", "dk", "dv")):
        assert ref.abs().max() > 0.05, what  # non-trivial values, so the comparison can fail
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5, msg=what)
    if masked:  # a masked key's value cannot reach the output
        v2 = v.detach().clone()
        v2[~mask.expand(n, h, 1, t).squeeze(2)] += 100.0
        torch.testing.assert_close(kernels.explicit_attention(q, k, v2, mask), results[0][0], rtol=0, atol=1e-5)


def test_attention_path_rule():
    cpu, f32 = "cpu", torch.float32
    assert kernels.EXPLICIT_MAX_SCORES == 2**20
    # training calls: explicit while batch * heads * q_len * k_len <= 2^20, SDPA beyond
    assert kernels.attention_path(16, 4, 66, 66, cpu, f32) == "explicit"  # 278,784 scores
    assert kernels.attention_path(64, 2, 66, 66, cpu, f32) == "explicit"  # 557,568
    assert kernels.attention_path(8, 1, 258, 258, cpu, f32) == "explicit"
    assert kernels.attention_path(256, 1, 64, 64, cpu, f32) == "explicit"  # exactly 2^20
    assert kernels.attention_path(256, 1, 64, 65, cpu, f32) == "sdpa"
    assert kernels.attention_path(64, 4, 66, 66, cpu, f32) == "sdpa"  # 1,115,136
    assert kernels.attention_path(16, 4, 258, 258, cpu, f32) == "sdpa"
    # forward-only calls, GPUs and other dtypes: SDPA
    assert kernels.attention_path(16, 4, 66, 66, cpu, f32, backward=False) == "sdpa"
    assert kernels.attention_path(16, 4, 66, 66, torch.device("cuda", 0), f32) == "sdpa"
    assert kernels.attention_path(16, 4, 66, 66, cpu, torch.bfloat16) == "sdpa"
    assert kernels.attention_path(16, 4, 66, 66, cpu, torch.float64) == "sdpa"


def _count_explicit_calls(monkeypatch):
    calls = []
    real = kernels.explicit_attention
    monkeypatch.setattr(kernels, "explicit_attention", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    return calls


def test_model_takes_the_explicit_path_only_where_the_rule_says(monkeypatch):
    calls = _count_explicit_calls(monkeypatch)
    model = randomized(tiny(block="in_context", depth=3), seed=13)  # 16 + 2 tokens, 4 heads
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([1.0, 500.0]), torch.tensor([1, 2])
    model(x, t, y).square().mean().backward()
    assert calls == [(2, 4, 18, 8)] * 3  # one per block, training (grad) call of 2*4*18*18 scores
    with torch.no_grad():
        model(x, t, y)
    with kernels.reference_kernels():
        model(x, t, y).square().mean().backward()
    assert len(calls) == 3  # no explicit path without grad, nor inside reference_kernels
    big = torch.randn(900, 4, 8, 8)  # 900 * 4 * 18 * 18 scores > 2^20
    model(big, torch.zeros(900), torch.zeros(900, dtype=torch.long)).sum().backward()
    assert len(calls) == 3


@pytest.mark.parametrize(
    "config",
    [
        dict(block="in_context"),
        dict(block="in_context", **TEXT),
        dict(block="cross_attn", **TEXT),
        dict(block="adaln_zero"),
    ],
)
def test_fast_attention_model_equals_reference_kernels_forward_and_gradients(config):
    model = randomized(tiny(class_dropout_prob=0.0, **config), seed=14).train()
    torch.manual_seed(15)
    x, t = torch.randn(3, 4, 8, 8), torch.tensor([2.0, 300.0, 990.0])
    if "context_dim" in config:
        kwargs = {
            "context": torch.randn(3, 5, 12),
            "context_mask": torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 0, 1]]).bool(),
        }
    else:
        kwargs = {"y": torch.tensor([0, 4, 9])}
    target = torch.randn(3, 8, 8, 8)
    results = []
    for reference in (False, True):
        model.zero_grad(set_to_none=True)
        with kernels.reference_kernels(reference):
            out = model(x, t, **kwargs)
            (out - target).square().mean().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (fast, fast_grads), (ref, ref_grads) = results
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)
    for name, g in ref_grads.items():  # float rounding: within 1e-5 of the gradient's scale
        assert g.abs().max() > 0, name
        assert (fast_grads[name] - g).abs().max() <= 1e-5 * g.abs().max(), name


def test_training_forward_matches_reference_restatement_on_the_explicit_path(monkeypatch):
    calls = _count_explicit_calls(monkeypatch)
    config = tiny(depth=3)
    model = randomized(config, seed=1)  # eval mode: no label dropout; grad on: the training path
    torch.manual_seed(2)
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([1.0, 250.5, 999.0]), torch.tensor([0, 7, 10])
    ours = model(x, t, y)
    assert len(calls) == 3
    with torch.no_grad():
        ref = reference_forward(model.state_dict(), x, t, y, patch=2, heads=4, depth=3, out_channels=8)
    torch.testing.assert_close(ours.detach(), ref, rtol=0, atol=1e-5)


def test_training_step_is_bit_identical_when_repeated():
    """The path is a function of the call, not of a timing: the same step twice gives the same bits."""
    config = tiny(block="in_context", class_dropout_prob=0.0)
    x, t, y = torch.randn(4, 4, 8, 8), torch.tensor([3.0, 30.0, 300.0, 900.0]), torch.tensor([1, 2, 3, 4])
    runs = []
    for _ in range(2):
        model = randomized(config, seed=16).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(3):
            model(x, t, y).square().mean().backward()
            opt.step()
            opt.zero_grad()
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_retain_freed_memory_applies_on_glibc():
    import platform

    applied = kernels.retain_freed_memory()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied is True
    else:
        assert applied is False


@pytest.mark.parametrize("shape,patch", [((2, 3, 16, 16), 2), ((3, 4, 32, 32), 4), ((1, 4, 8, 8), 8)])
def test_patch_embed_matmul_equals_convolution(shape, patch):
    torch.manual_seed(17)
    x = torch.randn(*shape)
    weight = torch.randn(24, shape[1], patch, patch, requires_grad=True)
    bias = torch.randn(24, requires_grad=True)
    grad_out = torch.randn(shape[0], (shape[2] // patch) ** 2, 24)
    results = []
    for reference in (False, True):
        with kernels.reference_kernels(reference):
            out = kernels.patch_embed(x, weight, bias, patch)
        results.append((out, *torch.autograd.grad(out, (weight, bias), grad_out)))
    conv = F.conv2d(x, weight, bias, stride=patch).flatten(2).transpose(1, 2)
    torch.testing.assert_close(results[1][0], conv, rtol=0, atol=0)  # the reference is the convolution
    for ours, ref, what in zip(results[0], results[1], ("tokens", "d weight", "d bias")):
        assert ref.abs().max() > 0.1, what
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5, msg=what)


def test_allocator_set_for_cpu_devices_only(monkeypatch):
    from ditscale.metrics.shapes_evaluator import load_shapes_evaluator

    calls = []
    monkeypatch.setattr(kernels, "retain_freed_memory", lambda: calls.append(1) or True)
    assert kernels.retain_freed_memory_on("cpu") is True
    assert kernels.retain_freed_memory_on(torch.device("cuda", 0)) is False
    assert kernels.retain_freed_memory_on("meta") is False
    assert calls == [1]
    load_shapes_evaluator()  # the evaluators' loaders set it for their batches
    assert calls == [1, 1]


def test_first_explicit_attention_call_sets_the_allocator_once(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "retain_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(kernels, "_allocator_set", False)
    q = torch.randn(1, 2, 5, 4)
    for _ in range(3):
        kernels.explicit_attention(q, q, q)
    assert calls == [1]
