"""Tests of ditscale.diffusion: schedules, losses, samplers, respacing, rectified flow, guidance.

Golden values in tests/data/diffusion/golden.npz come from the reference DiT diffusion code
(see tests/data/diffusion/README.md); everything else is checked against closed forms.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ditscale.diffusion import (
    Diffusion,
    DiffusionConfig,
    GaussianDiffusion,
    RectifiedFlow,
    cfg_model_fn,
    create_diffusion,
    space_timesteps,
    time_grid,
)
from ditscale.errors import ConfigError

DATA = Path(__file__).parent / "data" / "diffusion"
sys.path.insert(0, str(DATA))
from make_golden import LOSS_CASES, SEED, SPACINGS, tiny_model  # noqa: E402

GOLDEN = np.load(DATA / "golden.npz")
LN2 = math.log(2.0)


def linear_beta(i: int, steps: int = 1000) -> float:
    """Ho et al.'s linear beta at index i, written out by hand."""
    scale = 1000 / steps
    return scale * 1e-4 + i * (scale * 0.02 - scale * 1e-4) / (steps - 1)


def alpha_bar_by_hand(t: int) -> float:
    return math.prod(1 - linear_beta(i) for i in range(t + 1))


# Config -------------------------------------------------------------------------------------------
def test_defaults_mirror_dit_create_diffusion():
    d = create_diffusion()
    assert isinstance(d, GaussianDiffusion)
    assert (d.num_timesteps, d.original_num_steps, d.predict, d.learn_sigma, d.loss_type) == (
        1000,
        1000,
        "epsilon",
        True,
        "mse",
    )
    assert d.model_out_channels(4) == 8
    assert create_diffusion(use_kl=True).loss_type == "rescaled_kl"
    assert create_diffusion({"rescale_learned_sigmas": True}).loss_type == "rescaled_mse"
    assert create_diffusion(timestep_respacing=250).num_timesteps == 250
    assert DiffusionConfig.from_dict({"timestep_respacing": 250}).timestep_respacing == "250"


def test_both_processes_keep_the_diffusion_protocol():
    gaussian, fixed, flow = create_diffusion(), create_diffusion(learn_sigma=False), create_diffusion(kind="flow")
    assert all(isinstance(d, Diffusion) for d in (gaussian, fixed, flow, gaussian.respaced(10)))
    assert not isinstance(object(), Diffusion)
    assert (gaussian.kind, flow.kind) == (gaussian.config.kind, flow.config.kind) == ("gaussian", "flow")
    assert [d.model_out_channels(c) for d in (gaussian, fixed, flow) for c in (3, 4)] == [6, 8, 3, 4, 3, 4]
    # what ditscale.generate samples with when not told: DiT's 250 DDPM steps, 50 Euler steps for a flow
    assert (gaussian.default_sampler, gaussian.default_steps) == ("ddpm", 250)
    assert (flow.default_sampler, flow.default_steps) == ("euler", 50)
    gaussian.check_sampling(gaussian.default_sampler, gaussian.default_steps)
    flow.check_sampling(flow.default_sampler, flow.default_steps)
    with pytest.raises(ConfigError, match="unknown sampler 'euler' for a gaussian process"):
        gaussian.check_sampling("euler", 10)
    with pytest.raises(ConfigError, match="flow samplers take an integer number of steps >= 1, got '10'"):
        flow.check_sampling("euler", "10")


def test_config_is_strict():
    with pytest.raises(ConfigError, match="unknown key 'noise_shedule'.*did you mean 'noise_schedule'"):
        DiffusionConfig.from_dict({"noise_shedule": "cosine"})
    with pytest.raises(ConfigError, match="predict must be one of epsilon, x0, v"):
        create_diffusion(predict="eps")
    with pytest.raises(ConfigError, match="kind must be one of gaussian, flow"):
        create_diffusion({"kind": "edm"})
    with pytest.raises(ConfigError, match="logit_std must be positive"):
        DiffusionConfig(kind="flow", logit_std=0.0)


def test_flow_config_builds_rectified_flow():
    f = create_diffusion(DiffusionConfig(kind="flow", time_sampling="logit_normal", logit_mean=0.5, logit_std=2.0))
    assert isinstance(f, RectifiedFlow)
    assert (f.time_sampling, f.logit_mean, f.logit_std, f.model_out_channels(4)) == ("logit_normal", 0.5, 2.0, 4)
    assert f.config.to_dict()["kind"] == "flow"


# Schedules ----------------------------------------------------------------------------------------
def test_linear_schedule_hand_values():
    d = create_diffusion()
    assert d.betas[0] == pytest.approx(1e-4, rel=1e-10)
    assert d.betas[1] == pytest.approx(1e-4 + 0.0199 / 999, rel=1e-10)
    assert d.betas[-1] == pytest.approx(0.02, rel=1e-10)
    for t in (0, 1, 2, 499, 999):
        assert d.alphas_cumprod[t] == pytest.approx(alpha_bar_by_hand(t), rel=1e-12)
    assert d.alphas_cumprod[999] == pytest.approx(4.035829e-05, rel=1e-6)  # abar_T of DiT's process
    short = create_diffusion(diffusion_steps=500)  # betas scaled by 1000 / 500
    assert (short.betas[0], short.betas[-1]) == (pytest.approx(2e-4, rel=1e-10), pytest.approx(0.04, rel=1e-10))


def test_cosine_schedule_hand_values():
    d = create_diffusion(noise_schedule="cosine")
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 1, 499, 990):  # the product of ratios telescopes to f((t+1)/T) / f(0)
        assert d.alphas_cumprod[t] == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-9)
    assert d.betas[0] == pytest.approx(1 - f(0.001) / f(0), rel=1e-9)
    assert d.betas[-1] == pytest.approx(0.999, rel=1e-9)  # f(1) = 0: beta capped at 0.999


def test_q_sample_and_posterior_closed_forms():
    d = create_diffusion()
    x0 = torch.tensor([[0.5, -0.25]])
    eps = torch.tensor([[1.0, 2.0]])
    t = torch.tensor([1])
    a1, a0, b1 = alpha_bar_by_hand(1), alpha_bar_by_hand(0), linear_beta(1)
    x_t = d.q_sample(x0, t, noise=eps)
    expected = math.sqrt(a1) * np.array([0.5, -0.25]) + math.sqrt(1 - a1) * np.array([1.0, 2.0])
    np.testing.assert_allclose(x_t.numpy()[0], expected, rtol=1e-6)

    mean, var, log_var = d.q_posterior_mean_variance(x0, x_t, t)
    c1 = b1 * math.sqrt(a0) / (1 - a1)
    c2 = (1 - a0) * math.sqrt(1 - b1) / (1 - a1)
    np.testing.assert_allclose(
        mean.numpy()[0], c1 * np.array([0.5, -0.25]) + c2 * x_t.numpy()[0].astype(np.float64), rtol=1e-6
    )
    post_var = b1 * (1 - a0) / (1 - a1)
    np.testing.assert_allclose(var.numpy(), post_var, rtol=1e-6)
    np.testing.assert_allclose(log_var.numpy(), math.log(post_var), rtol=1e-6)
    # at t = 0 the posterior variance is 0; its log is clipped to the t = 1 value
    assert d.posterior_variance[0] == 0.0
    assert d.posterior_log_variance_clipped[0] == d.posterior_log_variance_clipped[1]


# Hybrid loss by hand --------------------------------------------------------------------------------
def const_model(eps_value: float, var_value: float):
    def model(x, t):
        return torch.cat([torch.full_like(x, eps_value), torch.full_like(x, var_value)], dim=1)

    return model


def test_hybrid_loss_hand_computed_kl_term():
    d = create_diffusion()
    x0, eps, t = 0.5, -1.0, 10
    out = d.training_losses(const_model(0.2, 0.0), torch.tensor([[x0]]), torch.tensor([t]), noise=torch.tensor([[eps]]))
    a, a_prev, beta = alpha_bar_by_hand(t), alpha_bar_by_hand(t - 1), linear_beta(t)
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    c1, c2 = beta * math.sqrt(a_prev) / (1 - a), (1 - a_prev) * math.sqrt(1 - beta) / (1 - a)
    post_var = beta * (1 - a_prev) / (1 - a)
    pred_x0 = (x_t - math.sqrt(1 - a) * 0.2) / math.sqrt(a)
    true_mean, model_mean = c1 * x0 + c2 * x_t, c1 * pred_x0 + c2 * x_t
    model_log_var = 0.5 * math.log(beta) + 0.5 * math.log(post_var)  # v = 0 is halfway in log space
    kl = 0.5 * (
        -1
        + model_log_var
        - math.log(post_var)
        + math.exp(math.log(post_var) - model_log_var)
        + (true_mean - model_mean) ** 2 * math.exp(-model_log_var)
    )
    assert out["mse"].item() == pytest.approx((eps - 0.2) ** 2, rel=1e-6)
    assert out["vb"].item() == pytest.approx(kl / LN2, rel=1e-4)
    assert out["loss"].item() == pytest.approx(1.44 + kl / LN2, rel=1e-6)


def test_hybrid_loss_decoder_nll_at_t0():
    d = create_diffusion()
    x0, eps = 0.5, 0.3
    out = d.training_losses(const_model(eps, 1.0), torch.tensor([[x0]]), torch.tensor([0]), noise=torch.tensor([[eps]]))
    # eps predicted exactly -> the model mean is the true posterior mean, which at t = 0 is x0 itself
    sigma = math.sqrt(linear_beta(0))  # v = 1: the variance is beta_0
    cdf = lambda z: 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))  # noqa: E731
    nll = -math.log(cdf((1 / 255) / sigma) - cdf((-1 / 255) / sigma))
    assert out["mse"].item() == pytest.approx(0.0, abs=1e-12)
    assert out["vb"].item() == pytest.approx(nll / LN2, rel=1e-5)


def test_vb_term_trains_only_the_variance():
    d = create_diffusion()
    mean_head = torch.tensor(0.3, requires_grad=True)
    var_head = torch.tensor(-0.5, requires_grad=True)
    head = (mean_head, var_head)

    def model(x, t):
        return torch.cat([mean_head.expand_as(x), var_head.expand_as(x)], dim=1)

    x0 = torch.tensor([[0.2], [-0.4]])
    out = d.training_losses(model, x0, torch.tensor([5, 400]), noise=torch.tensor([[0.7], [1.1]]))
    (grad_mean, grad_var) = torch.autograd.grad(out["vb"].sum(), head)
    assert grad_mean.item() == 0.0 and grad_var.item() != 0.0
    (grad_mean_mse, grad_var_mse) = torch.autograd.grad(
        out["mse"].sum(), head, allow_unused=True, materialize_grads=True
    )
    assert grad_var_mse.item() == 0.0 and grad_mean_mse.item() != 0.0


def test_v_prediction_roundtrip():
    d = create_diffusion(predict="v", learn_sigma=False)
    x0 = torch.tensor([[0.5, -0.3, 0.9]])
    eps = torch.tensor([[-1.2, 0.4, 0.1]])
    for t in (0, 250, 999):
        a = alpha_bar_by_hand(t)
        v = math.sqrt(a) * eps.double() - math.sqrt(1 - a) * x0.double()
        oracle = lambda x, tm, v=v.float(): v  # noqa: E731
        tt = torch.tensor([t])
        out = d.training_losses(oracle, x0, tt, noise=eps)
        assert out["mse"].item() == pytest.approx(0.0, abs=1e-12)
        pred = d.p_mean_variance(oracle, d.q_sample(x0, tt, eps), tt, clip_denoised=False)["pred_xstart"]
        np.testing.assert_allclose(pred.numpy(), x0.numpy(), atol=2e-6)


def test_model_output_channels_are_checked():
    d = create_diffusion()
    with pytest.raises(ConfigError, match="expects 2 channels.*learn_sigma=True"):
        d.training_losses(lambda x, t: x, torch.zeros(1, 1), torch.tensor([3]))


# Golden values from the reference ---------------------------------------------------------------
GOLDEN_INPUTS = {k: GOLDEN[k] for k in ("W", "b", "emb")}
X0, NOISE, Y, X_T = (torch.from_numpy(GOLDEN[k]) for k in ("x_start", "noise", "y", "x_T"))
REF_TO_OURS = {
    "predict_xstart": ("predict", lambda v: "x0" if v else "epsilon"),
    "noise_schedule": ("noise_schedule", lambda v: "cosine" if v == "squaredcos_cap_v2" else v),
}


def ours(ref_kwargs: dict) -> GaussianDiffusion:
    kwargs = {}
    for key, value in ref_kwargs.items():
        name, convert = REF_TO_OURS.get(key, (key, lambda v: v))
        kwargs[name] = convert(value)
    return create_diffusion(**kwargs)


def assert_golden(actual: torch.Tensor, key: str) -> None:
    np.testing.assert_allclose(actual.detach().numpy(), GOLDEN[key], rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("name", list(LOSS_CASES))
def test_matches_reference_losses_and_p_mean_variance(name):
    ref_kwargs, ts = LOSS_CASES[name]
    d = ours(ref_kwargs)
    model = tiny_model(GOLDEN_INPUTS, None if d.learn_sigma else 4)
    t = torch.tensor(ts)
    terms = d.training_losses(model, X0, t, model_kwargs=dict(y=Y), noise=NOISE)
    for key in ("loss", "mse", "vb"):
        if f"{name}/{key}" in GOLDEN:
            assert_golden(terms[key], f"{name}/{key}")
    if f"{name}/betas" in GOLDEN:
        np.testing.assert_array_equal(d.betas, GOLDEN[f"{name}/betas"])
        np.testing.assert_array_equal(
            d.posterior_log_variance_clipped, GOLDEN[f"{name}/posterior_log_variance_clipped"]
        )
    x_t = d.q_sample(X0, t, noise=NOISE)
    assert_golden(x_t, f"{name}/x_t")
    for clip in (True, False):
        out = d.p_mean_variance(model, x_t, t, clip_denoised=clip, model_kwargs=dict(y=Y))
        for key in ("mean", "variance", "log_variance", "pred_xstart"):
            assert_golden(out[key], f"{name}/pmv_clip{int(clip)}/{key}")


def test_matches_reference_trajectories():
    model = tiny_model(GOLDEN_INPUTS)
    d = create_diffusion()
    kw = dict(noise=X_T, model_kwargs=dict(y=Y))
    torch.manual_seed(SEED)  # the reference draws per-step noise from the global RNG
    assert_golden(d.sample(model, X_T.shape, sampler="ddpm", steps=250, **kw), "ddpm250")
    assert_golden(d.sample(model, X_T.shape, sampler="ddim", steps="ddim50", **kw), "ddim50")
    assert_golden(
        d.sample(
            model, X_T.shape, sampler="ddim", steps=25, eta=1.0, generator=torch.Generator().manual_seed(SEED), **kw
        ),
        "ddim25_eta1",
    )
    x0_model = tiny_model(GOLDEN_INPUTS, 4)
    d_x0 = create_diffusion(predict="x0", learn_sigma=False)
    torch.manual_seed(SEED)
    assert_golden(
        d_x0.sample(x0_model, X_T.shape, sampler="ddpm", steps=20, clip_denoised=True, **kw), "ddpm20_x0_fixed_clip"
    )


@pytest.mark.parametrize("key", list(SPACINGS))
def test_matches_reference_spacing(key):
    steps, spacing = SPACINGS[key]
    assert space_timesteps(steps, spacing) == GOLDEN[f"spacing/{key}"].tolist()


# Respacing ------------------------------------------------------------------------------------------
def test_space_timesteps_hand_values():
    kept = space_timesteps(1000, "250")  # fractional stride 999/249 = 4.012..., rounded
    assert len(kept) == 250 and kept[:3] == [0, 4, 8] and kept[-1] == 999
    assert kept[40:43] == [160, 164, 169]  # 41 * 4.012 = 164.5 -> 164 (accumulated), 42 * 4.012 = 168.5 -> 169
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(300, "10,15,20")[:10] == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    assert space_timesteps(1000, "") == list(range(1000))
    with pytest.raises(ConfigError, match="cannot take exactly 999 DDIM steps"):
        space_timesteps(1000, "ddim999")
    with pytest.raises(ConfigError, match="cannot take 200 steps from a section of 150"):
        space_timesteps(300, "200,1")


def test_respaced_process_feeds_original_timesteps():
    base = create_diffusion()
    d = base.respaced(250)
    assert d is base.respaced("250")  # cached
    assert d.model_time(torch.tensor([0, 1, 249])).tolist() == [0, 4, 999]
    # never rescaled to [0, 1000) (DiT's respace keeps that line commented out): 500 steps -> index 499
    assert create_diffusion(diffusion_steps=500).respaced(10).model_time(torch.tensor([9])).tolist() == [499]
    # beta'_k = 1 - abar(kept_k) / abar(kept_{k-1}): the respaced abar are the kept original ones
    np.testing.assert_allclose(d.alphas_cumprod, base.alphas_cumprod[d.timestep_map], rtol=1e-12)
    seen = []

    def model(x, t):
        seen.append(t.tolist())
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    base.sample(model, (2, 1), sampler="ddim", steps=5, noise=torch.ones(2, 1))
    assert seen == [[t, t] for t in reversed(space_timesteps(1000, "5"))]
    assert space_timesteps(1000, "5") == [0, 250, 500, 749, 999]


# Sampler behaviour ---------------------------------------------------------------------------------
def gaussian_data_model(base: GaussianDiffusion, s: float):
    """The exact eps-predictor for data ~ N(0, s^2 I): eps = sqrt(1 - abar) x_t / (abar s^2 + 1 - abar)."""
    abar = torch.from_numpy(base.alphas_cumprod)

    def model(x, t):
        a = abar[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        eps = (1 - a).sqrt() * x / (a * s * s + 1 - a)
        return torch.cat([eps, torch.zeros_like(x)], dim=1)

    return model


def test_ddim_eta0_is_deterministic_and_invertible():
    base = create_diffusion()
    model = gaussian_data_model(base, 0.5)
    x0 = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    rng_before = torch.get_rng_state()
    errors = []
    for steps in (50, 100):
        d = base.respaced(steps)
        z = d.ddim_reverse_sample_loop(model, x0)
        first = d.ddim_sample_loop(model, x0.shape, z, clip_denoised=False)
        assert torch.equal(first, d.ddim_sample_loop(model, x0.shape, z, clip_denoised=False))
        errors.append((first - x0).abs().max().item())
    assert torch.equal(rng_before, torch.get_rng_state())  # eta = 0 draws no noise at all
    assert errors[1] < 0.07
    assert 1.8 < errors[0] / errors[1] < 2.2  # the inversion error is first order in the step size


def test_stochastic_samplers_are_reproducible_from_a_generator():
    d = create_diffusion()
    model = tiny_model(GOLDEN_INPUTS)
    kw = dict(model_kwargs=dict(y=Y), steps=10)
    for sampler, eta in (("ddpm", 0.0), ("ddim", 1.0)):
        a = d.sample(model, X_T.shape, sampler=sampler, eta=eta, generator=torch.Generator().manual_seed(3), **kw)
        b = d.sample(model, X_T.shape, sampler=sampler, eta=eta, generator=torch.Generator().manual_seed(3), **kw)
        c = d.sample(model, X_T.shape, sampler=sampler, eta=eta, generator=torch.Generator().manual_seed(4), **kw)
        assert torch.equal(a, b) and not torch.allclose(a, c)


def test_training_losses_deterministic_given_t_and_noise():
    model = tiny_model(GOLDEN_INPUTS)
    d = create_diffusion()
    t = torch.tensor([0, 10, 100, 999])
    first = d.training_losses(model, X0, t, dict(y=Y), noise=NOISE)["loss"]
    torch.manual_seed(99)
    assert torch.equal(first, d.training_losses(model, X0, t, dict(y=Y), noise=NOISE)["loss"])
    assert first.shape == (4,)


def test_unknown_sampler_names_valid_ones():
    with pytest.raises(ConfigError, match="unknown sampler 'euler' for a gaussian process; choose one of ddpm, ddim"):
        create_diffusion().sample(lambda x, t: x, (1, 1), sampler="euler", steps=10)
    with pytest.raises(ConfigError, match="choose one of euler, heun"):
        create_diffusion(kind="flow").sample(lambda x, t: x, (1, 1), sampler="ddim", steps=10)
    with pytest.raises(ConfigError, match="eta applies only to the ddim sampler"):
        create_diffusion().sample(lambda x, t: x, (1, 1), sampler="ddpm", steps=10, eta=0.5)


def test_sample_t_ranges():
    g = torch.Generator().manual_seed(0)
    t = create_diffusion().respaced(250).sample_t(1000, generator=g)
    assert t.dtype == torch.long and t.min() >= 0 and t.max() == 249
    flow = create_diffusion(kind="flow", time_sampling="logit_normal", logit_mean=0.5, logit_std=2.0)
    t = flow.sample_t(5, generator=torch.Generator().manual_seed(1))
    expected = torch.sigmoid(0.5 + 2.0 * torch.randn(5, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(t, expected)
    u = create_diffusion(kind="flow").sample_t(1000, generator=g)
    assert u.dtype == torch.float32 and 0 <= u.min() and u.max() < 1


# Rectified flow ----------------------------------------------------------------------------------
def test_flow_loss_hand_computed():
    flow = create_diffusion(kind="flow")
    x0 = torch.tensor([[1.0, 2.0]])
    noise = torch.tensor([[3.0, -1.0]])
    seen = {}

    def model(x, t):
        seen["x"], seen["t"] = x.clone(), t.clone()
        return torch.tensor([[1.0, 0.0]])

    out = flow.training_losses(model, x0, torch.tensor([0.25]), noise=noise)
    assert seen["t"].tolist() == [250.0]  # the model sees 1000 * t
    assert seen["x"].tolist() == [[1.5, 1.25]]  # 0.75 * x0 + 0.25 * noise
    # v = noise - x0 = [2, -3]; ((1 - 2)^2 + (0 + 3)^2) / 2 = 5
    assert out["loss"].tolist() == [5.0]


def test_flow_x0_prediction_loss_is_the_velocity_mse():
    flow = create_diffusion(kind="flow", flow_predict="x0")
    assert flow.predict == "x0" and "predict='x0'" in repr(flow)
    x0 = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    noise = torch.tensor([[3.0, -1.0], [3.0, -1.0]])
    t = torch.tensor([0.25, 0.02])
    pred = torch.tensor([[0.5, 2.5]])  # the model's x0
    out = flow.training_losses(lambda x, tm: pred.expand_as(x), x0, t, noise=noise)["loss"]
    # t = 0.25: ((0.5 - 1)^2 + (2.5 - 2)^2) / 2 / 0.25^2 = 0.25 / 0.0625 = 4; t = 0.02: weight capped at 1 / 0.05^2
    assert out.tolist() == pytest.approx([4.0, 0.25 / 0.05**2], rel=1e-6)
    # ... which is the velocity MSE of the derived velocity (x_t - x0_pred) / t
    x_t = flow.q_sample(x0[:1], t[:1], noise[:1])
    v = flow.velocity(lambda x, tm: pred.expand_as(x), x_t, t[:1])
    assert ((v - (noise[:1] - x0[:1])) ** 2).mean().item() == pytest.approx(out[0].item(), rel=1e-6)
    with pytest.raises(ConfigError, match="undefined at t = 0"):
        flow.velocity(lambda x, tm: x, x_t, torch.zeros(1))
    with pytest.raises(ConfigError, match="flow_predict must be one of v, x0"):
        DiffusionConfig(kind="flow", flow_predict="eps")


def test_flow_x0_model_samples_its_target_and_v_model_agrees():
    """An oracle x0 model (always the same image) lands exactly on it with Euler or Heun, and an
    oracle velocity model of the same straight path gives the same samples."""
    target = torch.tensor([[[[0.5, -0.25], [1.0, 0.0]]]], dtype=torch.float64)
    x1 = torch.randn(1, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x0_flow, v_flow = create_diffusion(kind="flow", flow_predict="x0"), create_diffusion(kind="flow")
    for sampler in ("euler", "heun"):
        got = x0_flow.sample(lambda x, tm: target.expand_as(x), x1.shape, sampler=sampler, steps=5, noise=x1)
        torch.testing.assert_close(got, target, rtol=0, atol=1e-14)
        v_oracle = lambda x, tm: (x - target) / (tm / 1000).view(-1, 1, 1, 1)  # noqa: E731
        torch.testing.assert_close(
            v_flow.sample(v_oracle, x1.shape, sampler="euler", steps=5, noise=x1), target, rtol=0, atol=1e-14
        )
    x_t = x0_flow.q_sample(target, torch.tensor([0.4]), x1)
    torch.testing.assert_close(x0_flow.predict_x0(lambda x, tm: target.expand_as(x), x_t, torch.tensor([0.4])), target)
    torch.testing.assert_close(v_flow.predict_x0(v_oracle, x_t, torch.tensor([0.4], dtype=torch.float64)), target)


def test_time_grid():
    assert time_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = time_grid(2, shift=3.0).tolist()  # 3 * 0.5 / (1 + 2 * 0.5) = 0.75
    assert shifted == [1.0, 0.75, 0.0]


def test_euler_exact_for_constant_velocity_and_closed_form_for_linear():
    flow = create_diffusion(kind="flow")
    x1 = torch.tensor([[0.3, -2.0]], dtype=torch.float64)
    x0 = flow.sample(lambda x, t: torch.full_like(x, 1.5), x1.shape, sampler="euler", steps=7, noise=x1)
    torch.testing.assert_close(x0, x1 - 1.5, rtol=0, atol=1e-15)
    # v = a + b t: Euler (left points t_i = 1 - i/N) integrates to a + b (N + 1) / (2N) instead of a + b / 2
    a, b, n = 0.5, 2.0, 4
    lin = lambda x, tm: torch.full_like(x, a) + b * (tm / 1000).view(-1, 1)  # noqa: E731
    euler = flow.sample(lin, x1.shape, sampler="euler", steps=n, noise=x1)
    torch.testing.assert_close(euler, x1 - (a + b * (n + 1) / (2 * n)), rtol=0, atol=1e-14)
    heun = flow.sample(lin, x1.shape, sampler="heun", steps=n, noise=x1)  # trapezoid: exact for linear v
    torch.testing.assert_close(heun, x1 - (a + b / 2), rtol=0, atol=1e-14)


def test_heun_is_second_order_and_euler_first_order():
    flow = create_diffusion(kind="flow")
    model = lambda x, tm: x * torch.cos(tm / 1000).view(-1, 1, 1, 1)  # noqa: E731  dx/dt = x cos t
    x1 = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    exact = math.exp(-math.sin(1.0))  # x(0) = x(1) exp(sin 0 - sin 1)
    err = {
        s: [abs(flow.sample(model, x1.shape, sampler=s, steps=n, noise=x1).item() - exact) for n in (8, 16)]
        for s in ("euler", "heun")
    }
    assert 3.6 < err["heun"][0] / err["heun"][1] < 4.4
    assert 1.8 < err["euler"][0] / err["euler"][1] < 2.2


def test_flow_samplers_deterministic_given_noise():
    flow = create_diffusion(kind="flow")
    model = tiny_model(GOLDEN_INPUTS, 4)
    for sampler in ("euler", "heun"):
        a = flow.sample(
            model,
            X_T.shape,
            sampler=sampler,
            steps=5,
            model_kwargs=dict(y=Y),
            generator=torch.Generator().manual_seed(0),
        )
        b = flow.sample(
            model,
            X_T.shape,
            sampler=sampler,
            steps=5,
            model_kwargs=dict(y=Y),
            noise=torch.randn(X_T.shape, generator=torch.Generator().manual_seed(0)),
        )
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="build it with learn_sigma=False"):
        flow.sample(tiny_model(GOLDEN_INPUTS), X_T.shape, sampler="euler", steps=2, model_kwargs=dict(y=Y))


# Classifier-free guidance -------------------------------------------------------------------------
def label_model(x, t, y):
    """Output channel c of sample n: x * (y_n + 1) * (c + 1) on 2C channels (a learned-sigma-shaped output)."""
    scale = (y.float() + 1).view(-1, 1, 1, 1)
    out = torch.cat([x, x], dim=1) * scale
    return out * torch.arange(1, out.shape[1] + 1, dtype=x.dtype).view(1, -1, 1, 1)


def test_cfg_scale_one_equals_conditional():
    x = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    both = torch.cat([x, x])
    y = torch.tensor([3, 5, 9, 9])  # conditional labels, then the null class
    guided = cfg_model_fn(label_model, 1.0)(both, torch.tensor([7, 7, 7, 7]), y=y)
    cond = label_model(x, None, y[:2])
    torch.testing.assert_close(guided[:2, :3], cond[:, :3], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(guided[2:, :3], cond[:, :3], rtol=1e-6, atol=1e-6)  # both halves carry the guided output


def test_cfg_matches_dit_forward_with_cfg():
    x = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    both = torch.cat([x, torch.zeros_like(x)])  # the second half of x is ignored, as in DiT
    y = torch.tensor([3, 5, 9, 9])
    guided = cfg_model_fn(label_model, 4.0)(both, torch.zeros(4), y=y)
    full = label_model(torch.cat([x, x]), None, y)
    cond, uncond = full[:2], full[2:]
    guided_part = uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3])
    torch.testing.assert_close(guided[:, :3], torch.cat([guided_part, guided_part]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(guided[:, 3:], full[:, 3:], rtol=0, atol=0)  # the rest passes through per half
    # guided_channels=None guides every channel, e.g. a velocity model
    all_ch = cfg_model_fn(label_model, 4.0, guided_channels=None)(both, torch.zeros(4), y=y)
    guided_all = uncond + 4.0 * (cond - uncond)
    torch.testing.assert_close(all_ch, torch.cat([guided_all, guided_all]), rtol=1e-6, atol=1e-6)
    # concretely, channel 0 of sample 0: cond = 4 x (label 3), uncond = 10 x (label 9): 10 x + 4 (4 x - 10 x) = -14 x
    torch.testing.assert_close(guided[0, 0], -14.0 * x[0, 0], rtol=1e-6, atol=1e-6)
