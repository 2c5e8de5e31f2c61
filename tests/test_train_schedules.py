"""Learning-rate schedules, width rules and the EMA, checked against hand-computed values."""

import math

import pytest
import torch

from ditscale.config import from_dict
from ditscale.errors import ConfigError
from ditscale.train.config import OptimConfig, TrainConfig
from ditscale.train.ema import EMA
from ditscale.train.schedules import lr_at, lr_factor, width_scaled_lr


def optim(**kw):
    return from_dict(OptimConfig, kw)


def test_constant_with_linear_warmup():
    o = optim(lr=1e-3, warmup_steps=4)
    assert [lr_at(s, 100, o) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3], rel=1e-12)
    assert lr_at(99, 100, o) == 1e-3
    assert lr_at(0, 10, optim()) == 1e-4  # DiT default: constant 1e-4, no warmup


def test_cosine_reaches_min_at_last_step():
    o = optim(schedule="cosine")
    assert lr_factor(0, 11, o) == 1.0
    assert lr_factor(5, 11, o) == pytest.approx(0.5, abs=1e-12)  # p = 5 / 10
    assert lr_factor(10, 11, o) == pytest.approx(0.0, abs=1e-12)
    o = optim(schedule="cosine", min_lr_ratio=0.1, warmup_steps=2)
    assert lr_factor(0, 12, o) == 0.5 and lr_factor(1, 12, o) == 1.0  # warmup
    assert lr_factor(2, 12, o) == 1.0  # first step after warmup: the peak
    # span = 12 - 1 - 2 = 9; step 5 is p = 1/3: 0.1 + 0.9 * (1 + cos(pi/3)) / 2 = 0.775
    assert lr_factor(5, 12, o) == pytest.approx(0.775, abs=1e-12)
    assert lr_factor(11, 12, o) == pytest.approx(0.1, abs=1e-12)


def test_wsd_linear_cooldown_over_last_fraction():
    o = optim(schedule="wsd", cooldown_frac=0.2)  # 10 steps: cooldown = steps 8, 9
    assert [lr_factor(s, 10, o) for s in range(10)] == pytest.approx([1] * 8 + [0.5, 0.0], abs=1e-12)
    o = optim(schedule="wsd", cooldown_frac=0.2, min_lr_ratio=0.1)
    assert [lr_factor(s, 10, o) for s in (7, 8, 9)] == pytest.approx([1.0, 0.55, 0.1], abs=1e-12)
    o = optim(schedule="wsd", cooldown_frac=0.5)  # 8 steps: 4 stable, then 0.75, 0.5, 0.25, 0
    assert [lr_factor(s, 8, o) for s in range(8)] == pytest.approx([1, 1, 1, 1, 0.75, 0.5, 0.25, 0.0], abs=1e-12)


def test_width_rules():
    assert width_scaled_lr(1e-3, 128, "inverse", 64) == pytest.approx(5e-4, rel=1e-12)
    assert width_scaled_lr(1e-3, 128, "inverse_sqrt", 64) == pytest.approx(1e-3 / math.sqrt(2), rel=1e-12)
    assert width_scaled_lr(1e-3, 128, "none") == 1e-3
    o = optim(lr=2e-3, width_rule="inverse", base_width=64, warmup_steps=2)
    assert lr_at(0, 10, o, hidden_size=256) == pytest.approx(2e-3 * 64 / 256 / 2, rel=1e-12)
    with pytest.raises(ConfigError, match="base_width"):
        optim(width_rule="inverse")


def test_train_config_defaults_are_the_dit_recipe_and_strict():
    cfg = from_dict(TrainConfig, {"max_steps": 10})
    o = cfg.optim
    assert (o.lr, o.betas, o.eps, o.weight_decay, o.schedule, cfg.ema_decay, cfg.batch_size) == (
        1e-4,
        (0.9, 0.999),
        1e-8,
        0.0,
        "constant",
        0.9999,
        256,
    )
    with pytest.raises(ConfigError, match="exactly one of max_steps and flops"):
        from_dict(TrainConfig, {"max_steps": 10, "flops": 1e12})
    with pytest.raises(ConfigError, match="'lrr'.*did you mean 'lr'"):
        from_dict(TrainConfig, {"max_steps": 10, "optim": {"lrr": 1}})


def test_ema_update_by_hand():
    lin = torch.nn.Linear(2, 1, bias=False)
    bn = torch.nn.BatchNorm1d(1)
    model = torch.nn.Sequential(lin, bn)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = EMA(model, decay=0.9)
    assert torch.equal(ema.params["0.weight"], torch.tensor([[1.0, 2.0]]))  # starts as a copy
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
        bn.running_mean.fill_(5.0)
    ema.update(model)  # 0.9 * [1, 2] + 0.1 * [3, 4]
    assert torch.allclose(ema.params["0.weight"], torch.tensor([[1.2, 2.2]]), atol=1e-6, rtol=0)
    assert ema.buffers["1.running_mean"].item() == 5.0  # buffers are copied
    with torch.no_grad():
        lin.weight.zero_()
    ema.update(model)  # 0.9 * [1.2, 2.2]
    assert torch.allclose(ema.params["0.weight"], torch.tensor([[1.08, 1.98]]), atol=1e-6, rtol=0)
    # copy_to / state_dict round trip
    target = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False), torch.nn.BatchNorm1d(1))
    ema.copy_to(target)
    assert torch.equal(target[0].weight, ema.params["0.weight"])
    other = EMA(target, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.params["0.weight"], ema.params["0.weight"])
