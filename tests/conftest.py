"""Suite-wide test settings.

Tiny models run fastest on one thread, and on a shared 2-core machine OpenMP oversubscription can
make them ~100x slower; tests that need more threads set them explicitly. Bootstrap refits run
serially for the same reason.
"""

import os
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
    """A committed study folder ``data`` (no run folders) copied and analysed again as `study report`
    does, reusing its stored bootstrap draws (their keys hash the runs and options: none is redrawn);
    ``runs``: how many runs.csv rows are kept as recorded. Returns ``(laws, the committed laws.json)``."""
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
