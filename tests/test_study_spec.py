"""Study spec: strict loading, one-line errors naming the key, presets."""

from __future__ import annotations

import copy

import pytest

from ditscale.errors import ConfigError
from ditscale.study import load_spec, preset_names, spec_from_dict

BASE = {
    "name": "t",
    "data": {"name": "shapes", "image_size": 8},
    "diffusion": {"kind": "flow"},
    "family": {
        "widths": [8, 16, 24, 32],
        "depth": 1,
        "head_dim": 8,
        "model": {"patch_size": 2, "block": "in_context", "learn_sigma": False},
    },
    "budgets": [1e9, 2e9, 4e9],
    "models_per_budget": 3,
}


def spec_with(**changes):
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        node = data
        *path, last = key.split("__")
        for part in path:
            node = node[part]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return spec_from_dict(data)


def test_valid_spec_sorts_budgets_and_builds_the_ladder():
    spec = spec_with(budgets=[4e9, 1e9, 2e9])
    assert spec.budgets == [1e9, 2e9, 4e9]
    assert spec.family.ladder() == [(1, 8, 1), (1, 16, 2), (1, 24, 3), (1, 32, 4)]
    assert spec.holdout == 1 and spec.models_per_budget == 3


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"budgets": None}, "no 'budgets'"),
        ({"budgets": []}, "no 'budgets'"),
        ({"budgets": [1e9, 0.0, 2e9]}, "budgets[1] is 0.0"),
        ({"budgets": [1e9, -2e9, 3e9]}, "budgets[1] is -2000000000.0"),
        ({"budgets": [1e9, 1e9, 2e9]}, "budgets has duplicates"),
        ({"models_per_budget": 2}, "models_per_budget is 2; need at least 3"),
        ({"models_per_budget": 5}, "family has only 4 models"),
        ({"bogus": 1}, "unknown key 'bogus' in study spec"),
        ({"hparams": {"lrr": 1e-3}}, "unknown key 'lrr' in study spec.hparams (did you mean 'lr'?)"),
        ({"val": {"num_image": 8}}, "unknown key 'num_image' in study spec.val"),
        ({"family__depths": [1, 2, 3]}, "exactly one of 'rungs'"),
        ({"family__widths": [8, 12, 16]}, "width 12 is not a positive multiple of head_dim 8"),
        ({"family__model": {"depth": 3}}, "family.model sets depth"),
        ({"family__model": {"blok": "adaln"}}, "unknown key 'blok' in family.model"),
        ({"holdout": 2}, "holdout=2 leaves 1 budgets to fit"),
        ({"span": 1.0}, "span must be > 1"),
        ({"name": None}, "no 'name'"),
        ({"train": {"batch_size": 4}}, "study-owned key 'batch_size' in train"),
        ({"repeat": {"budgets": 1, "seeds": [0]}}, "repeat.seeds contains the study seed 0"),
        ({"hparams": {"warmup_fraction": 1.5}}, "hparams.warmup_fraction must be in [0, 1)"),
        ({"hparams": {"ema_fraction": 0.1}, "train": {"ema_decay": 0.99}}, "'ema_decay (set by hparams.ema_fraction)'"),
        ({"laws": {"method": "parametric"}}, "studies fit isoFLOP profiles"),
        ({"laws": {"bootstrapp": 10}}, "unknown key 'bootstrapp' in study spec.laws"),
    ],
)
def test_malformed_spec_is_a_one_line_config_error_naming_the_problem(changes, message):
    with pytest.raises(ConfigError) as err:
        spec_with(**changes)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_presets_load_by_name_and_unknown_names_list_them(tmp_path):
    assert "quickstart" in preset_names()
    spec = load_spec("quickstart")
    assert spec.name == "quickstart" and len(spec.budgets) >= 3 and spec.holdout == 1
    over = load_spec("quickstart", ["hparams.lr=1e-3", "workers=1"])
    assert over.hparams.lr == 1e-3 and over.workers == 1
    with pytest.raises(ConfigError, match="unknown study 'nope'.*presets: .*quickstart"):
        load_spec("nope")
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nbudgets: [1e9]\n")
    with pytest.raises(ConfigError, match="no 'family'"):
        load_spec(path)
