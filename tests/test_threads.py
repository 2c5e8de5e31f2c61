"""Threads on a shared CPU and what Ctrl-C keeps (issue 23, item 6).

A model under 10M parameters runs on 1 torch thread on CPU unless ``--threads`` says otherwise; every
compute command takes ``--threads``; an interrupted ``train`` names its newest checkpoint, or says that
nothing was saved yet."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import MICRO_MODEL

import ditscale.train.checkpoint as ckpt
from ditscale.cli import _one_line_warning, build_parser, main
from ditscale.study.launchers import make_launcher, threads_per_worker

MICRO = [
    *MICRO_MODEL,
    "val.every=0",
    "log_every=1",
]


def test_small_models_default_to_one_thread_on_cpu():
    from ditscale.train.threads import SMALL_MODEL_PARAMS, default_threads  # here: the other tests run on main's code

    assert default_threads(1_868_036, "cpu", cores=16, torch_default=8) == 1  # the tiny preset
    assert default_threads(SMALL_MODEL_PARAMS, "cpu", cores=16, torch_default=8) == 8  # torch's, within the cores
    assert default_threads(675_000_000, "cpu", cores=4, torch_default=8) == 4  # never more than the cores allowed
    assert default_threads(1_868_036, "cuda:0", cores=16, torch_default=8) == 8  # a GPU run keeps torch's


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "tiny", "--out", "r"],
        ["sample", "runs/r"],
        ["eval", "s.npz", "--ref", "r.npz"],
        ["study", "run", "--preset", "quickstart", "--out", "s"],
        ["study", "verify", "s", "--flops", "1e13"],
    ],
)
def test_every_compute_command_takes_threads(argv):
    args = build_parser(argv[0]).parse_args([*argv, "--threads", "3"])
    assert args.threads == 3


def test_study_threads_override_the_workers_share(tmp_path):
    assert make_launcher("local", 2, None, tmp_path).threads == threads_per_worker(2)
    assert make_launcher("local", 2, None, tmp_path, threads=1).threads == 1
    assert make_launcher("local", 0, None, tmp_path, threads=3).threads == 3  # in this process too


def test_a_study_worker_warns_in_the_commands_one_line_format(tmp_path, monkeypatch, capfd):
    """A spawned worker's warning (e.g. a resume on another thread count) reads as the parent's: the
    CLI sets its one-line format in the parent, and the workers take it from there."""
    monkeypatch.setattr(warnings, "formatwarning", _one_line_warning)
    launcher = make_launcher("local", 1, None, tmp_path, threads=1)
    try:
        launcher._ensure_pool().submit(warnings.warn, "an example from a worker").result()
    finally:
        launcher.close()
    err = capfd.readouterr().err
    assert "ditscale: warning: an example from a worker\n" in err
    assert "UserWarning" not in err  # not Python's two-line default


def test_a_format_a_worker_cannot_import_leaves_the_default(tmp_path, monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", lambda message, *rest: f"{message}\n")
    from ditscale.study.launchers import _parent_formatwarning

    assert _parent_formatwarning() is None
    monkeypatch.setattr(warnings, "formatwarning", _one_line_warning)
    assert _parent_formatwarning() is _one_line_warning


def _train_interrupted(tmp_path, monkeypatch, capsys, after_save: bool) -> str:
    """``ditscale train`` interrupted (as by Ctrl-C) at its first checkpoint, after or before it is written."""
    real = ckpt.save_training

    def interrupt(*args, **kwargs):
        if after_save:
            real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_training", interrupt)
    out = tmp_path / "run"
    argv = ["train", "tiny", "--out", str(out), "--max-steps", "4", "--ckpt-every", "2", "--no-progress", *MICRO]
    assert main(argv) == 130
    return capsys.readouterr().err


def test_ctrl_c_names_the_newest_checkpoint(tmp_path, monkeypatch, capsys):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        err = _train_interrupted(tmp_path, monkeypatch, capsys, after_save=True)
        assert torch.get_num_threads() == 1  # the tiny model's default, not torch's 2
    finally:
        torch.set_num_threads(before)
    assert "ditscale: interrupted; the newest checkpoint is step 2 (" in err
    assert "completed work is saved" not in err


def test_ctrl_c_before_any_checkpoint_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    err = _train_interrupted(tmp_path, monkeypatch, capsys, after_save=False)
    assert "ditscale: interrupted; nothing was saved: no checkpoint in" in err
    assert "the first comes at step 2" in err and "starts from step 0" in err


def test_a_word_encoder_run_is_sized_before_it_is_built(tmp_path, capsys):
    """`ditscale train tiny-text` (README) picks its threads and plans from the word encoder's sizes,
    known before the encoder is built; only a frozen encoder's width must be declared to plan."""
    assert main(["train", "tiny-text", "--plan"]) == 0
    assert "block cross_attn, conditioning text" in capsys.readouterr().out
    out = tmp_path / "tt"
    assert main(["train", "tiny-text", "--out", str(out), "--max-steps", "2", *MICRO, "model.block=cross_attn"]) == 0
    assert torch.get_num_threads() == 1  # a small model on CPU
    assert main(["train", "tiny-text", "text_encoder=some/encoder", "--plan"]) == 2
    assert "conditions on a frozen text encoder; give its width and tokens" in capsys.readouterr().err
