"""Suite-wide test settings.

Tiny models run fastest on one thread, and on a shared 2-core machine OpenMP oversubscription can
make them ~100x slower; tests that need more threads set them explicitly. Bootstrap refits run
serially for the same reason.
"""

import os
import re
import tempfile

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download during tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# bootstrap refits stay in the test's process: the suite's own workers already fill the cores
# (tests/test_laws_parallel.py sets 2 where it checks the worker processes)
os.environ.setdefault("DITSCALE_FIT_WORKERS", "1")
# where diffusers copies an exported folder's pipeline file when loading it (trust_remote_code): not ~/.cache
os.environ.setdefault(
    "HF_MODULES_CACHE", os.path.join(tempfile.gettempdir(), f"ditscale-tests-hf-modules-{os.getuid()}")
)

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a core dependency
    pass


# The micro DiT the training tests train (test_train.py, test_threads.py, test_train_distributed.py,
# test_study_trunks.py; ``from conftest import MICRO_MODEL``): 8x8 images in 4x4 patches (4 tokens per
# image), 2 blocks 32 wide with 2 heads, batch 8. Each file adds its own validation, logging, schedule
# and length overrides after these.
MICRO_MODEL = (
    "model.hidden_size=32",
    "model.depth=2",
    "model.num_heads=2",
    "model.patch_size=4",
    "data.image_size=8",
    "batch_size=8",
)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIP text model + word-level tokenizer saved to a folder (built offline, 32-wide)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("clip")
    words = "[PAD] [UNK] [BOS] [EOS] a small large red blue circle square at the top left on background".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(path)
    config = CLIPTextConfig(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    torch.manual_seed(0)
    CLIPTextModel(config).save_pretrained(path)
    return path


@pytest.fixture
def own_images(tmp_path):
    """Six random 8x8 RGB PNGs in two class folders (a user's own image folder, ``root/<class>/<image>``)."""
    import numpy as np  # lazy: only the tests of own image folders
    from PIL import Image  # lazy: only the tests of own image folders

    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    return tmp_path / "imgs"


def refit_committed_study(data, tmp_path_factory, runs: int):
    """A committed study folder ``data`` (no run folders) copied and analysed again as `study report
    --reuse-draws` does, reusing its stored bootstrap draws (their keys hash the runs and options: none
    is redrawn); ``runs``: how many runs.csv rows are kept as recorded. Returns ``(laws, the committed laws.json)``."""
    import json  # lazy: conftest stays light for every test file
    import shutil  # lazy: as above

    from ditscale.study.analyze import analyze_study, load_draws  # lazy: torch-free, but only these tests

    out = tmp_path_factory.mktemp(data.name) / "study"
    shutil.copytree(data, out)
    draws = load_draws(out)
    with pytest.warns(UserWarning, match=f"{runs} run\\(s\\) have no folder .* kept as recorded"):
        laws = analyze_study(out, report=False, draws=draws)
    assert draws.loaded and draws.redrawn == []
    assert (out / "runs.csv").read_text() == (data / "runs.csv").read_text()  # nothing dropped
    return laws, json.loads((data / "laws.json").read_text())


# A refit of a committed study on another CPU: how close it must come to the laws.json written where the
# study ran. Measured on an AMD EPYC without AVX-512 against files written on the development machine
# (with it): point fits agree to 9e-7 relative, floors at their bound 0 come out as other tiny numbers
# (1e-20 for 1e-10), and the losing solver's objective of a parametric fit (its ``options.objectives``)
# by 1.5e-3; every interval comes from the folder's stored draws, so it repeats. Hence: numbers to 1e-5
# relative or 1e-8 absolute, numbers below 1e-6 in texts read as zero, the losing objective to 1%.
REFIT_REL, REFIT_ABS = 1e-5, 1e-8
_TINY_NUMBER = re.compile(r"\d(?:\.\d+)?e-(?:0?[7-9]|[1-9]\d)")  # |x| < 1e-6, as printed


def assert_refit_matches(mine, measured, where: str = "laws") -> None:
    """``mine`` (a refit) equals ``measured`` (the committed laws.json section) within the cross-CPU
    tolerances above; the first difference is named by its path."""
    if isinstance(measured, dict) and isinstance(mine, dict):
        assert mine.keys() == measured.keys(), f"{where}: keys {sorted(mine.keys() ^ measured.keys())} differ"
        for key, value in measured.items():
            if key == "objectives" and isinstance(value, dict):  # both solvers' objectives: the lower one kept
                assert min(mine[key].values()) == pytest.approx(min(value.values()), rel=REFIT_REL), f"{where}.{key}"
                assert mine[key] == pytest.approx(value, rel=0.01), f"{where}.{key}"
            else:
                assert_refit_matches(mine[key], value, f"{where}.{key}")
    elif isinstance(measured, list) and isinstance(mine, list):
        assert len(mine) == len(measured), f"{where}: {len(mine)} items, {len(measured)} committed"
        for i, (a, b) in enumerate(zip(mine, measured)):
            assert_refit_matches(a, b, f"{where}[{i}]")
    elif isinstance(measured, float) and isinstance(mine, (int, float)) and not isinstance(mine, bool):
        assert mine == pytest.approx(measured, rel=REFIT_REL, abs=REFIT_ABS), where
    elif isinstance(measured, str) and isinstance(mine, str):
        assert _TINY_NUMBER.sub("~0", mine) == _TINY_NUMBER.sub("~0", measured), where
    else:
        assert mine == measured and type(mine) is type(measured), where


# The longest files first: the suite runs as 2 workers taking whole files (--dist loadfile), and a long
# file taken last leaves one worker idle while the other finishes it (tens of seconds on 2 cores).
LONGEST_FIRST = (
    "test_quickstart_t2i.py",
    "test_faults.py",
    "test_study_integrity.py",
    "test_study_verify.py",
    "test_quickstart_laws.py",
    "test_benchmarks.py",
    "test_study_quality.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
