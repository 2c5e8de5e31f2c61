"""Low-noise validation: fixed grid, fixed noise, determinism and batch-size independence."""

import pytest
import torch

from ditscale.config import from_dict
from ditscale.data import DataConfig, build_dataset
from ditscale.diffusion import create_diffusion
from ditscale.models import create_model
from ditscale.train.config import ValConfig
from ditscale.train.validate import Validator, bucket_of, noise_for_image, timestep_grid

DATA = DataConfig(name="shapes", image_size=8)


def model(**kw):
    torch.manual_seed(0)
    m = create_model(
        dict(input_size=8, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2, num_classes=6, **kw)
    )
    with torch.no_grad():  # leave the zero init so the output depends on the input
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def validator(kind, **val):
    diffusion = create_diffusion(kind=kind, learn_sigma=False)
    cfg = from_dict(ValConfig, {"num_images": 5, "num_timesteps": 4, "buckets": 2, **val})
    return Validator(build_dataset(DATA, "val"), diffusion, cfg, device=torch.device("cpu"))


def test_grids_and_buckets():
    assert timestep_grid("gaussian", 8, 1000).tolist() == [62, 187, 312, 437, 562, 687, 812, 937]
    assert timestep_grid("gaussian", 4, 1000).tolist() == [125, 375, 625, 875]
    assert timestep_grid("flow", 4).tolist() == [0.125, 0.375, 0.625, 0.875]
    assert bucket_of(8, 4) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert bucket_of(6, 4) == [0, 0, 1, 2, 2, 3]
    a = noise_for_image(0, 3, 4, (3, 8, 8))
    assert torch.equal(a, noise_for_image(0, 3, 4, (3, 8, 8))) and not torch.equal(
        a, noise_for_image(0, 4, 4, (3, 8, 8))
    )


def test_flow_validation_of_a_zero_model_by_hand():
    """A zero-initialised DiT predicts v = 0, so each pair's loss is mean((noise - x0)^2)."""
    v = validator("flow")
    zero = create_model(
        dict(
            input_size=8,
            patch_size=4,
            in_channels=3,
            hidden_size=32,
            depth=2,
            num_heads=2,
            num_classes=6,
            learn_sigma=False,
        )
    )
    out = v.evaluate(zero)
    ds = build_dataset(DATA, "val")
    per_t = torch.zeros(4, dtype=torch.float64)
    for i in range(5):
        noise = noise_for_image(0, i, 4, (3, 8, 8))
        per_t += ((noise - ds[i]["x"]) ** 2).mean(dim=(1, 2, 3)).double() / 5
    assert out["val_loss_t"] == pytest.approx(per_t.tolist(), rel=1e-6)
    assert out["val_loss"] == pytest.approx(per_t.mean().item(), rel=1e-6)
    assert out["val_loss_buckets"] == pytest.approx([per_t[:2].mean().item(), per_t[2:].mean().item()], rel=1e-6)


@pytest.mark.parametrize("kind", ["gaussian", "flow"])
def test_deterministic_and_batch_size_independent(kind):
    m = model(learn_sigma=False)
    m.train()
    first = validator(kind, batch_size=3).evaluate(m)
    assert m.training  # mode restored
    again = validator(kind, batch_size=3).evaluate(m)
    assert first == again  # bit-identical
    big = validator(kind, batch_size=64).evaluate(m)
    assert big["val_loss"] == pytest.approx(first["val_loss"], rel=1e-6)
    assert big["val_loss_buckets"] == pytest.approx(first["val_loss_buckets"], rel=1e-6)
    other_seed = validator(kind, batch_size=3, seed=1).evaluate(m)
    assert other_seed["val_loss"] != first["val_loss"]
    assert first["val_loss"] == pytest.approx(sum(first["val_loss_buckets"]) / 2, rel=1e-12)
