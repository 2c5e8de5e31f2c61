"""Regenerate golden.npz from the reference DiT diffusion code (not part of ditscale; run by hand).

    python tests/data/diffusion/make_golden.py /path/to/DiT   # a folder holding the reference `diffusion/` package

The reference package (facebookresearch/DiT ``diffusion/``: gaussian_diffusion.py, respace.py,
diffusion_utils.py, __init__.py) is imported from that folder; nothing of it is stored here.
All inputs (data, noise, tiny-model parameters) are stored in the .npz too, so the test does not
depend on NumPy's RNG; only the per-step DDPM/DDIM noise comes from ``torch.manual_seed``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

SEED = 1234  # torch seed set right before each stochastic sampling loop


def tiny_model(params: dict[str, np.ndarray], out_channels: int | None = None):
    """A deterministic stand-in for a DiT: per-pixel channel mixing, a timestep term and a class embedding."""
    w = torch.from_numpy(params["W"])  # (2C, C)
    b = torch.from_numpy(params["b"])  # (2C,)
    emb = torch.from_numpy(params["emb"])  # (classes, 2C)

    def model(x, t, y):
        h = (w[None, :, :, None, None] * x[:, None]).sum(2)
        h = h + b[None, :, None, None] * torch.sin(t.float() / 100.0)[:, None, None, None] + emb[y][:, :, None, None]
        out = torch.tanh(h)
        c = x.shape[1]  # the mean half stays close to x, like a denoiser of N(0, I) data
        out = torch.cat([0.9 * x + 0.1 * out[:, :c], out[:, c:]], dim=1)
        return out if out_channels is None else out[:, :out_channels]

    return model


def make_inputs() -> dict[str, np.ndarray]:
    rng = np.random.RandomState(0)
    x_start = rng.uniform(-1, 1, size=(4, 4, 4, 4)).astype(np.float32)
    x_start[0, 0, 0, :3] = [-1.0, 1.0, 0.0]  # exercise the edge bins of the decoder NLL
    return {
        "x_start": x_start,
        "noise": rng.standard_normal((4, 4, 4, 4)).astype(np.float32),
        "x_T": rng.standard_normal((4, 4, 4, 4)).astype(np.float32),
        "y": np.array([0, 1, 2, 3], dtype=np.int64),
        "W": (0.5 * rng.standard_normal((8, 4))).astype(np.float32),
        "b": (0.5 * rng.standard_normal(8)).astype(np.float32),
        "emb": (0.3 * rng.standard_normal((4, 8))).astype(np.float32),
    }


# name -> (reference create_diffusion kwargs, training timesteps)
LOSS_CASES = {
    "linear_hybrid": (dict(timestep_respacing=""), [0, 1, 500, 999]),
    "cosine_hybrid": (dict(timestep_respacing="", noise_schedule="squaredcos_cap_v2"), [0, 3, 600, 999]),
    "linear_x0_fixed": (dict(timestep_respacing="", predict_xstart=True, learn_sigma=False), [0, 2, 300, 999]),
    "rescaled_mse": (dict(timestep_respacing="", rescale_learned_sigmas=True), [0, 5, 700, 999]),
    "rescaled_kl": (dict(timestep_respacing="", use_kl=True), [0, 4, 100, 998]),
    "ddim50_hybrid": (dict(timestep_respacing="ddim50"), [0, 7, 25, 49]),
}
SCHEDULE_CASES = ("linear_hybrid", "cosine_hybrid", "ddim50_hybrid")
SPACINGS = {
    "1000:250": (1000, "250"),
    "1000:ddim50": (1000, "ddim50"),
    "1000:ddim25": (1000, "ddim25"),
    "300:10,15,20": (300, "10,15,20"),
    "1000:7": (1000, "7"),
}


def main(ref_root: str, out: Path) -> None:
    sys.path.insert(0, ref_root)
    from diffusion import create_diffusion  # the reference package
    from diffusion.respace import space_timesteps

    inp = make_inputs()
    res: dict[str, np.ndarray] = dict(inp)
    x0, noise, y = (torch.from_numpy(inp[k]) for k in ("x_start", "noise", "y"))
    model = tiny_model(inp)
    for name, (kwargs, ts) in LOSS_CASES.items():
        d = create_diffusion(**kwargs)
        fn = model if kwargs.get("learn_sigma", True) else tiny_model(inp, out_channels=4)
        t = torch.tensor(ts)
        terms = d.training_losses(fn, x0, t, model_kwargs=dict(y=y), noise=noise)
        for key, val in terms.items():
            res[f"{name}/t"] = t.numpy()
            res[f"{name}/{key}"] = val.detach().numpy()
        if name in SCHEDULE_CASES:
            res[f"{name}/betas"] = d.betas
            res[f"{name}/posterior_log_variance_clipped"] = d.posterior_log_variance_clipped
        x_t = d.q_sample(x0, t, noise=noise)
        res[f"{name}/x_t"] = x_t.numpy()
        for clip in (True, False):
            pmv = d.p_mean_variance(fn, x_t, t, clip_denoised=clip, model_kwargs=dict(y=y))
            for key in ("mean", "variance", "log_variance", "pred_xstart"):
                res[f"{name}/pmv_clip{int(clip)}/{key}"] = pmv[key].numpy()

    x_T = torch.from_numpy(inp["x_T"])
    kw = dict(noise=x_T, clip_denoised=False, model_kwargs=dict(y=y), device="cpu")
    torch.manual_seed(SEED)
    res["ddpm250"] = create_diffusion("250").p_sample_loop(model, x_T.shape, **kw).numpy()
    res["ddim50"] = create_diffusion("ddim50").ddim_sample_loop(model, x_T.shape, **kw).numpy()
    torch.manual_seed(SEED)
    res["ddim25_eta1"] = create_diffusion("25").ddim_sample_loop(model, x_T.shape, eta=1.0, **kw).numpy()
    torch.manual_seed(SEED)
    res["ddpm20_x0_fixed_clip"] = (
        create_diffusion("20", predict_xstart=True, learn_sigma=False)
        .p_sample_loop(
            tiny_model(inp, out_channels=4),
            x_T.shape,
            noise=x_T,
            clip_denoised=True,
            model_kwargs=dict(y=y),
            device="cpu",
        )
        .numpy()
    )

    for key, (steps, spacing) in SPACINGS.items():
        res[f"spacing/{key}"] = np.array(sorted(space_timesteps(steps, spacing)), dtype=np.int64)
    np.savez_compressed(out, **res)
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(res)} arrays)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/adm_ref", Path(__file__).with_name("golden.npz"))
