"""Strict dataclass configs: build from dicts/YAML, reject unknown keys, apply dotted overrides.

Example::

    @dataclass
    class OptimConfig:
        lr: float = 1e-4
        weight_decay: float = 0.0

    cfg = from_dict(OptimConfig, {"lr": 3e-4})          # OptimConfig(lr=0.0003, weight_decay=0.0)
    from_dict(OptimConfig, {"lr": 1, "wd": 0})           # ConfigError: unknown key 'wd' in OptimConfig ...
    apply_overrides({"optim": {"lr": 1e-4}}, ["optim.lr=3e-4"])  # {"optim": {"lr": 0.0003}}
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ditscale.errors import ConfigError
from ditscale.io import decode_utf8, read_bytes

T = TypeVar("T")

INT_LIMIT = 2**63 - 1  # what torch and numpy can hold: seeds, steps and counts beyond it overflow deep inside them
# The most nodes a YAML document may expand to through its aliases (``*name``): an alias bomb of a
# few hundred bytes expands to billions. A document without aliases is never refused.
MAX_YAML_NODES = 100_000
_SHOWN = reprlib.Repr()  # values in error messages: at most a few items per level and 60 characters per string
_SHOWN.maxstring = _SHOWN.maxother = 60


def shown(value: Any) -> str:
    """``repr(value)``, bounded: what an error message shows of a value from a file or the command line
    (a huge or deeply shared value is cut, never expanded)."""
    return _SHOWN.repr(value)


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/JSON value to the annotated type ``tp`` (dataclasses, Optional, lists, tuples, scalars)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {shown(value)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, allowed))}, got {shown(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} keys, got {shown(value)}")
        return from_dict(tp, value, where=where)
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"{where} must be a list, got {shown(value)}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {shown(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {shown(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {shown(value)}")
        number = _as_integer(value)
        if number is None:
            raise ConfigError(f"{where} must be an integer, got {shown(value)}")
        if abs(number) > INT_LIMIT:
            raise ConfigError(f"{where} = {shown(value)} is out of range; use an integer of magnitude below 2**63")
        return number
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {shown(value)}")
        try:
            number = float(value) if isinstance(value, (int, float, str)) else None
        except (ValueError, OverflowError):
            number = None
        if number is None:
            raise ConfigError(f"{where} must be a number, got {shown(value)}")
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {shown(value)}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {shown(value)}")
    return value


def _as_integer(value: Any) -> int | None:
    """``value`` as an int when it is one (``3``, ``3.0``, ``"3"``, ``"1e3"``), else None."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and coercing types.

    Raises :class:`ConfigError` naming every unknown key and the valid ones.
    """
    where = where or cls.__name__
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        valid = sorted(fields)
        hint = _suggest(unknown[0], valid)
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)} in {where}{hint}; "
            f"valid keys: {', '.join(valid)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints.get(k, Any), f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def to_dict(obj: Any) -> Any:
    """Plain-data (JSON/YAML-ready) copy of a dataclass config, recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten_dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: a nested mapping keyed by dotted paths (the override
    syntax). Empty mappings stay as values, so ``{"model": {}}`` and ``{}`` differ."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``"a.b.c=value"`` into (["a", "b", "c"], value), the value read as YAML (``1e-4`` is a float)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value (e.g. optim.lr=3e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key; write key.path=value")
    try:
        value = _load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads "1e-4" as a string (no dot before the exponent); numbers are what users mean.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of nested dict ``data`` with dotted ``key.path=value`` overrides applied.

    Intermediate mappings are created as needed; key validity is checked later by :func:`from_dict`.
    """
    out = copy.deepcopy(data)
    for text in overrides or ():
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: '{part}' is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the last silently)
    and a document whose aliases expand it beyond :data:`MAX_YAML_NODES` nodes (checked on the composed
    node graph, before any value is built)."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            distinct, expanded = _node_counts(node)
            if expanded > max(MAX_YAML_NODES, distinct):
                why = (
                    "an alias refers to a node that contains it"
                    if math.isinf(expanded)
                    else f"its aliases (*name) expand {distinct:,} nodes to {expanded:,}, over {MAX_YAML_NODES:,}"
                )
                raise yaml.composer.ComposerError(None, None, f"{why}; write the values out", node.start_mark)
        return node

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _node_counts(root: yaml.Node) -> tuple[int, float]:
    """(distinct nodes, nodes once every alias is expanded) of a composed YAML graph; the expanded
    count is summed over the graph (each distinct node once), so a bomb is measured, never built.
    A document that contains itself (``&a [*a]``) expands without end: infinity."""
    size: dict[int, float] = {}
    entered: set[int] = set()  # on the current path: met again, a node contains itself
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if isinstance(node, yaml.MappingNode):
            children = [c for pair in node.value for c in pair]
        else:
            children = node.value if isinstance(node, yaml.CollectionNode) else []
        if done:
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            entered.discard(id(node))
        elif id(node) in entered:
            return len(size), math.inf
        elif id(node) not in size:
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children)
    return len(size), size[id(root)]


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def parse_yaml(text: str | bytes, where: str) -> dict[str, Any]:
    """The YAML mapping in ``text`` (``where`` names its file in errors); one-line :class:`ConfigError`
    for bytes that are not UTF-8, bad syntax, a duplicate key, a tag such as ``!!python/object``
    (only plain data is read: nothing in the file is executed) or a top level that is not a mapping."""
    if isinstance(text, bytes):
        text = decode_utf8(text, where, ConfigError)
    try:
        data = _load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid syntax"
        if "constructor for the tag" in problem:
            problem = f"the tag {err.problem.rsplit(' ', 1)[-1]} is not allowed (plain data only)"
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}; fix it and retry") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must contain a YAML mapping at the top level, got {type(data).__name__}")
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with a one-line error if it is missing or malformed (see :func:`parse_yaml`)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} does not exist; give a YAML file or a preset name")
    return parse_yaml(read_bytes(p, ConfigError), str(p))  # a folder or a FIFO: refused, one line


def load_preset_or_yaml(name_or_path: str | Path, preset_dir: str | Path, what: str) -> dict[str, Any]:
    """The YAML mapping at ``name_or_path``, or of the built-in preset ``preset_dir/NAME.yaml``.

    ``what`` names the kind of config in the one-line error for an unknown name ("study", ...).
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return load_yaml(path)
    preset = Path(preset_dir) / f"{name_or_path}.yaml"
    if not preset.is_file():
        names = sorted(p.stem for p in Path(preset_dir).glob("*.yaml"))
        raise ConfigError(
            f"unknown {what} {str(name_or_path)!r}: not a YAML file nor a preset; presets: {', '.join(names)}"
        )
    return load_yaml(preset)
