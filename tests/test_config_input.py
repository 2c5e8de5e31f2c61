"""Bad numbers and bad YAML files are refused where they enter, in one line (issue 12)."""

from __future__ import annotations

import pytest

from ditscale.cli import main
from ditscale.config import load_yaml, parse_yaml
from ditscale.errors import ConfigError
from ditscale.train.config import load_train_config


@pytest.mark.parametrize(
    "override, words",
    [
        ("optim.lr=nan", "must be a finite number"),
        ("optim.lr=.inf", "must be a finite number"),
        ("optim.lr=-.inf", "must be a finite number"),
        ("optim.lr=1e400", "must be a finite number"),
        ("seed=999999999999999999999999", "out of range"),
        ("max_steps=1e30", "out of range"),
        ("max_steps=2.5", "must be an integer"),
        ("optim.lr=fast", "must be a number"),
    ],
)
def test_numbers_are_checked_where_they_enter(override, words):
    with pytest.raises(ConfigError, match=words) as err:
        load_train_config("tiny", [override])
    assert "\n" not in str(err.value)


def test_integers_written_as_floats_still_read():
    cfg = load_train_config("tiny", ["max_steps=1e3", "seed=7.0"])
    assert cfg.max_steps == 1000 and cfg.seed == 7


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"a: 1\nb: 2\na: 3\n", "line 3: duplicate key 'a'"),
        (b"a: !!python/object/apply:os.system ['true']\n", "python/object/apply:os.system' is not allowed"),
        (b"a: \xff\xfe\n", "is not UTF-8 text (byte 3)"),
        (b"a: [1, 2\n", "is not valid YAML at line 2"),
        (b"- 1\n- 2\n", "must contain a YAML mapping at the top level, got list"),
    ],
)
def test_bad_yaml_is_one_line(tmp_path, raw, words):
    path = tmp_path / "c.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert words in str(err.value)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_parse_yaml_reads_plain_data():
    assert parse_yaml("a: {b: [1, 2.5, x]}\n", "t") == {"a": {"b": [1, 2.5, "x"]}}
    assert parse_yaml(b"", "t") == {}


def test_train_cli_refuses_nan_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "tiny", "--out", str(out), "optim.lr=nan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ditscale: error: ") and err.count("\n") == 1 and "finite" in err
    assert not out.exists()
