"""The shape of ditscale.generate: one job per module, the public names in one place, grids without torch.

Sampling, grids and .npz batches themselves are tested in tests/test_sample.py; reference batches in
tests/test_cli_data.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import ditscale.generate as generate
from ditscale.diffusion import create_diffusion
from ditscale.generate import grid, npz, reference, sample
from ditscale.generate.sample import sampler_and_steps

# every name callers import from ditscale.generate today -> the module that owns it
PUBLIC = {
    "CAPTION_PX": grid,
    "MAX_GRID_PIXELS": grid,
    "grid_shape": grid,
    "make_grid": grid,
    "save_grid": grid,
    "check_request": sample,
    "draw_labels": sample,
    "sample_images": sample,
    "sample_latents": sample,
    "to_uint8": sample,
    "SAMPLES_FORMAT": npz,
    "derived_seed": npz,
    "parts_dir": npz,
    "sample_npz": npz,
    "save_npz": npz,
    "dataset_captions": reference,
    "save_dataset_npz": reference,
}


def test_the_package_reexports_each_public_name_from_its_module():
    assert sorted(generate.__all__) == sorted(PUBLIC)
    for name, module in PUBLIC.items():
        assert getattr(generate, name) is getattr(module, name), name
    with pytest.raises(AttributeError, match="has no attribute 'sample_grid'"):
        generate.sample_grid  # noqa: B018


def test_grids_and_the_diffusion_protocol_need_no_torch():
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class RefuseTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError(f"torch is blocked in this test ({name})")

        sys.meta_path.insert(0, RefuseTorch())
        import numpy as np
        from ditscale.diffusion import Diffusion
        from ditscale.generate import grid_shape, make_grid

        assert make_grid(np.zeros((2, 4, 4, 3), np.uint8)).shape == grid_shape(2, 4, 4) + (3,)
        assert "torch" not in sys.modules
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_sampling_defaults_come_from_the_process():
    gaussian, flow = create_diffusion(), create_diffusion(kind="flow")
    assert sampler_and_steps(gaussian, None, None) == ("ddpm", 250)  # DiT's sample.py
    assert sampler_and_steps(flow, None, None) == ("euler", 50)
    assert sampler_and_steps(gaussian, "ddim", "ddim25") == ("ddim", "ddim25")
    assert sampler_and_steps(flow, "heun", 0) == ("heun", 0)  # given steps are kept, checked by the process
