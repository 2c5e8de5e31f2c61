"""The VAE wrapper: latent scale, encode/decode shapes, posterior sampling, local loading, errors."""

import pytest
import torch

from ditscale.data.vae import (
    VAE_SCALE,
    decode,
    downsample_factor,
    encode,
    encode_moments,
    load_vae,
    make_tiny_vae,
    save_vae_folder,
)
from ditscale.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def vae():
    return make_tiny_vae()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 32, 32, generator=g) * 2 - 1


def test_scale_is_dit_value():
    assert VAE_SCALE == 0.18215


def test_tiny_vae_shapes_and_factor(vae, images):
    assert downsample_factor(vae) == 8
    assert vae.config.scaling_factor == VAE_SCALE
    mean, std = encode_moments(vae, images)
    assert mean.shape == std.shape == (2, 4, 4, 4)
    assert (std > 0).all()
    out = decode(vae, encode(vae, images, sample=False))
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0

    v4 = make_tiny_vae(latent_channels=3, downsample=4)
    assert downsample_factor(v4) == 4
    assert encode(v4, images).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError):
        make_tiny_vae(downsample=6)


def test_encode_scales_posterior(vae, images):
    mean, std = encode_moments(vae, images)
    assert torch.equal(encode(vae, images, sample=False), mean * 0.18215)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    z = encode(vae, images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(z, (mean + std * eps) * 0.18215)
    z_other = encode(vae, images, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(z, z_other)


def test_decode_divides_by_scale_and_clamps(vae):
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        raw = vae.decode(z / 0.18215).sample
    assert torch.equal(decode(vae, z), raw.clamp(-1, 1))
    assert torch.equal(decode(vae, z * 2, scale=2 * VAE_SCALE), raw.clamp(-1, 1))


def test_tiny_vae_is_seeded():
    a, b, c = make_tiny_vae(seed=0), make_tiny_vae(seed=0), make_tiny_vae(seed=1)
    w = "encoder.conv_in.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_save_pretrained_round_trip(vae, images, tmp_path):
    vae.save_pretrained(tmp_path / "vae")
    loaded = load_vae(tmp_path / "vae")
    assert not loaded.training
    ref, got = vae.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert torch.equal(encode(loaded, images, sample=False), encode(vae, images, sample=False))
    assert load_vae(str(tmp_path / "vae"), dtype=torch.float64).dtype == torch.float64


class _Hostile:
    def __reduce__(self):  # runs `true` if unpickled
        import os

        return (os.system, ("true",))


def test_a_hostile_pickled_vae_is_refused_in_one_line_naming_its_global(vae, tmp_path, capfd):
    """A VAE folder whose .bin weights pickle a callable: one error naming it, and none of diffusers' own
    log lines (its fallback notes) on stderr."""
    import pickle

    vae.save_pretrained(tmp_path / "vae", safe_serialization=False)
    (tmp_path / "vae" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"x": _Hostile()}))
    capfd.readouterr()
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model.bin pickles posix.system, not just tensors"):
        load_vae(tmp_path / "vae")
    assert capfd.readouterr().err == ""


def test_save_vae_folder_checks_channels_and_sets_the_latent_scale(tmp_path):
    source = make_tiny_vae(seed=2)
    source.register_to_config(scaling_factor=0.5)  # not ditscale's scale: the exported copy gets VAE_SCALE
    source.save_pretrained(tmp_path / "src")
    save_vae_folder(str(tmp_path / "src"), 4, tmp_path / "out")
    saved = load_vae(tmp_path / "out")
    assert saved.config.scaling_factor == VAE_SCALE
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in source.state_dict().items())
    with pytest.raises(ConfigError, match="has 4 latent channels but the model takes 3; pass the --vae"):
        save_vae_folder(str(tmp_path / "src"), 3, tmp_path / "other")


def _one_line(err):
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_vae_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("DITSCALE_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError) as err:
        load_vae(tmp_path / "nope")
    assert "does not exist" in _one_line(err) and "--vae PATH" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as err:
        load_vae(tmp_path / "empty")
    assert "no config.json" in _one_line(err)
    with pytest.raises(CheckpointError) as err:
        load_vae("nobody/no-such-vae")
    assert _one_line(err) == (
        "VAE 'nobody/no-such-vae' not found locally: pass --vae PATH to a diffusers AutoencoderKL folder, "
        "or set DITSCALE_ALLOW_DOWNLOAD=1"
    )


def test_download_only_when_allowed(monkeypatch):
    import ditscale.data.vae as vae_mod

    seen = []

    def fake_from_pretrained(name, **kwargs):
        seen.append(kwargs["local_files_only"])
        raise OSError("offline\nsecond line")

    monkeypatch.setattr(vae_mod.AutoencoderKL, "from_pretrained", fake_from_pretrained)
    monkeypatch.delenv("DITSCALE_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(CheckpointError):
        load_vae("org/vae")
    monkeypatch.setenv("DITSCALE_ALLOW_DOWNLOAD", "1")
    with pytest.raises(CheckpointError) as err:
        load_vae("org/vae")
    assert _one_line(err).startswith("VAE 'org/vae' could not be loaded (offline)")
    with pytest.raises(CheckpointError):
        load_vae("org/vae", local_files_only=True)
    assert seen == [True, False, True]
