"""The package's shape: no import cycles, torch-free planning, short functions in train/ and study/,
imports inside functions only where they say why (``# lazy:``).

The import graph counts every ``import`` / ``from ... import`` of the package's own modules,
inside functions too (a lazy import that dodges a cycle is still a cycle). A package's
``__init__`` is a module of its own: ``from ditscale.laws import X`` is an edge to ``ditscale.laws``.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import ditscale

PACKAGE_DIR = Path(ditscale.__file__).resolve().parent
SRC = PACKAGE_DIR.parent

# Functions of train/ and study/ allowed over MAX_FUNCTION_LINES, with the reason they read better whole.
MAX_FUNCTION_LINES = 60
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {}


# The import graph -------------------------------------------------------------------------------
def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` -> the package)."""
    out = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported_names(module: str, path: Path, node: ast.AST) -> list[str]:
    """Fully qualified names an import statement refers to (``from a import b`` -> ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolve against this module's package
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (the nearest module for ``from module import name``)."""
    files = module_files()
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in imported_names(module, path, node):
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    graph[module].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_sees_cycles_through_lazy_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("def f():\n    from ditscale.laws import predict\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert imported_names("ditscale.laws.compare", Path("compare.py"), node) == ["ditscale.laws.predict"]


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and "ditscale.train.loop" in graph["ditscale.train"] | {
        m for deps in graph.values() for m in deps
    }
    assert cycles(graph) == []


# Areas import "downwards" only: a module may import its own area and the areas listed before it.
# (The data flows data -> model -> diffusion -> run -> study -> fit -> quality -> report; the study, which
# orchestrates, imports metrics, laws and report.)
AREA_ORDER = [
    "errors",
    "io",
    "config",
    "ditscale",
    "models",
    "flops",
    "data",
    "diffusion",
    "generate",
    "train",
    "metrics",
    "laws",
    "report",
    "study",
    "cli",
    "__main__",
]


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_areas_import_downwards_only():
    graph = import_graph()
    assert {area(m) for m in graph} == set(AREA_ORDER)
    rank = {name: i for i, name in enumerate(AREA_ORDER)}
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if rank[area(d)] > rank[area(m)])
    assert upward == []
    assert {area(d) for d in graph["ditscale.laws.isoflop"]} <= {"laws", "errors", "config"}  # numpy/scipy only


# Thin commands ----------------------------------------------------------------------------------
# cli/ parses arguments and calls the library: what a command knows about files, folders and formats
# lives in the library, where the other commands and the tests reach it. Rules (a) to (d) below.
CLI_DISPATCHER = ("ditscale.cli", "ditscale.cli.__main__")
CLI_SHARED = ("ditscale.cli.args",)  # what every command may import from cli/
FORMAT_MODULES = ("zipfile", "yaml", "numpy", "pickle", "csv", "tomllib", "safetensors")
READING_METHODS = ("read_text", "read_bytes")
READING_CALLS = ("json.load", "json.loads", "np.load", "numpy.load", "torch.load")
CLI_DECLARATIONS = ("add_parser",)


def cli_sources() -> dict[str, str]:
    """Dotted module name -> source, for every module of ``ditscale.cli``."""
    return {m: p.read_text() for m, p in module_files().items() if area(m) == "cli"}


def cli_cross_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b"`` for each cli/ command module importing a cli/ module other than the shared ones."""
    return sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if area(m) == "cli" and m not in CLI_DISPATCHER
        for d in deps
        if area(d) == "cli" and d not in CLI_SHARED
    )


def _dotted(node: ast.AST) -> str:
    """``np.load`` for the expression ``np.load`` ("" for anything but names and attributes)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def mutable_state(source: str) -> list[str]:
    """What rule (b) refuses in ``source``: global/nonlocal statements, module-level lists, dicts, sets."""
    tree = ast.parse(source)
    found = [
        f"line {n.lineno}: {type(n).__name__.lower()} {', '.join(n.names)}"
        for n in ast.walk(tree)
        if isinstance(n, (ast.Global, ast.Nonlocal))
    ]
    containers = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
    for stmt in tree.body:
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)) else None
        called = _dotted(value.func) if isinstance(value, ast.Call) else ""
        if isinstance(value, containers) or called.rpartition(".")[2] in ("list", "dict", "set", "defaultdict"):
            found.append(f"line {stmt.lineno}: a module-level {type(value).__name__} {called}".rstrip())
    return found


def file_reading(source: str) -> list[str]:
    """What rule (c) refuses in ``source``: calls that read or parse files, and imports of format modules."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"line {node.lineno}: import {n}" for n in names if n.split(".")[0] in FORMAT_MODULES]
            if isinstance(node, ast.ImportFrom) and node.module == "json":
                found += [f"line {node.lineno}: from json import {a.name}" for a in node.names if "load" in a.name]
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            attr = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            if name == "open" or name in READING_CALLS or attr in READING_METHODS:
                found.append(f"line {node.lineno}: {name or attr}()")
    return found


def long_cli_functions(sources: dict[str, str]) -> dict[str, int]:
    """``"module:function"`` -> lines, for cli/ functions over MAX_FUNCTION_LINES (``add_parser`` excepted)."""
    return {
        f"{module}:{node.name}": node.end_lineno - node.lineno + 1
        for module, source in sources.items()
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name not in CLI_DECLARATIONS
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    }


def test_thin_command_checkers_see_violations():
    """Each rule can fail: a synthetic command breaking it is caught, a clean one passes."""
    graph = {"ditscale.cli.export": {"ditscale.cli.sample", "ditscale.cli.args", "ditscale.models.io"}}
    assert cli_cross_imports(graph) == ["ditscale.cli.export -> ditscale.cli.sample"]
    assert cli_cross_imports({"ditscale.cli": {"ditscale.cli.sample"}}) == []  # the dispatcher
    bad_state = "_PENDING: list[str] = []\nSEEN = set()\nCACHE = {k: 1 for k in 'ab'}\ndef f():\n    global X\n"
    assert len(mutable_state(bad_state)) == 4
    assert mutable_state("TABLE = MappingProxyType({'a': 1})\nNAMES = ('a', 'b')\ndef f():\n    x = []\n") == []
    bad_reads = (
        "import zipfile\nimport numpy as np\nfrom json import loads\n"
        "def f(p):\n    open(p)\n    p.read_text()\n    json.load(p)\n    np.load(p)\n"
    )
    assert len(file_reading(bad_reads)) == 7
    assert file_reading("import json\ndef f(x):\n    print(json.dumps(x))\n    return load_batch(x)\n") == []
    long = "def run(args):\n" + "    x = 1\n" * MAX_FUNCTION_LINES + "def add_parser(s):\n" + "    s = 1\n" * 99
    assert long_cli_functions({"ditscale.cli.fake": long}) == {"ditscale.cli.fake:run": MAX_FUNCTION_LINES + 1}


def test_commands_import_no_other_command():
    """(a) A cli/ module imports no other command's module, only ``ditscale.cli.args``; the dispatcher
    (``cli/__init__``, ``cli/__main__``) is exempt. What two commands share is library code."""
    graph = import_graph()
    assert "ditscale.cli.args" in graph["ditscale.cli.sample"]  # the graph sees cli/
    assert cli_cross_imports(graph) == []


def test_commands_keep_no_module_state():
    """(b) No mutable module state in cli/: no ``global``/``nonlocal`` and no module-level list, dict or
    set (tables are tuples or read-only ``MappingProxyType``s); what a command collects, such as its
    notes to the user, is returned or passed, so a second ``main()`` in one process starts clean."""
    found = {m: bad for m, source in cli_sources().items() if (bad := mutable_state(source))}
    assert found == {}


def test_commands_read_files_through_the_library():
    """(c) cli/ reads and parses no file itself: no ``open()``, ``.read_text()``, ``.read_bytes()``,
    ``json.load(s)``, ``np.load``, ``torch.load``, nor an import of a format module (zipfile, yaml,
    numpy, pickle, csv, tomllib, safetensors). Printing with ``json.dumps`` is fine; files are read by
    library functions (``load_yaml``, ``metrics.batch.npz_keys``, ``ditscale.io.read_text`` ...)."""
    found = {m: bad for m, source in cli_sources().items() if (bad := file_reading(source))}
    assert found == {}


def test_command_functions_are_short():
    """(d) cli/ functions are at most MAX_FUNCTION_LINES lines, ``add_parser`` excepted: it is a flat
    list of ``add_argument`` declarations without logic, which reads best whole."""
    sources = cli_sources()
    assert len(sources) > 10
    assert long_cli_functions(sources) == {}


# Torch-free planning ----------------------------------------------------------------------------
NO_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class RefuseTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked in this test ({name})")
            return None

    sys.meta_path.insert(0, RefuseTorch())
    from ditscale.cli import main
    code = main(sys.argv[1:])
    assert "torch" not in sys.modules
    sys.exit(code)
    """
)


def run_without_torch(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *argv], capture_output=True, text=True, timeout=300)


def test_study_plan_runs_without_torch():
    proc = run_without_torch("study", "plan", "--preset", "quickstart", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = json.loads(proc.stdout)
    assert len(plan["runs"]) == 60  # 11 budgets x 5 models + 5 seed replicates (docs/studies.md)
    budgets = sorted({r["budget"] for r in plan["runs"]})
    assert len(budgets) == 11 and (budgets[0], budgets[-1]) == (1.6e11, 5.12e12)
    row = next(r for r in plan["runs"] if r["run_id"] == "c1.6e11-d2w64h2-s0")  # a row of the measured study's plan.csv
    assert (row["params_non_embedding"], row["images"], row["steps"]) == (100096, 3317, 415)  # batch 8


def test_flops_runs_without_torch():
    proc = run_without_torch("flops", "DiT-XL/2", "--input-size", "32")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "675,129,632 total" in proc.stdout and "118.6382" in proc.stdout  # DiT Table 4: 118.64 GFLOPs


# Function length --------------------------------------------------------------------------------
def long_functions(folder: str) -> dict[str, int]:
    """``"file.py:function"`` -> lines, for functions of ``folder`` longer than MAX_FUNCTION_LINES."""
    out = {}
    for path in sorted((PACKAGE_DIR / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    out[f"{folder}/{path.name}:{node.name}"] = lines
    return out


def test_train_and_study_functions_are_short():
    found = {**long_functions("train"), **long_functions("study")}
    assert {k: v for k, v in found.items() if k not in LONG_FUNCTIONS_ALLOWED} == {}


# Imports inside functions -----------------------------------------------------------------------
# An import inside a function is kept only where it protects something (torch-free planning, start-up
# time, an optional dependency) and says so in a comment on the statement: ``# lazy: <why>``. The rest
# live at the top.
LAZY_MARK = "# lazy:"


def unmarked_lazy_imports(source: str) -> list[int]:
    """Line numbers of the imports inside functions of ``source`` with no LAZY_MARK on any of their lines."""
    lines = source.splitlines()
    found = set()
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not any(
                    LAZY_MARK in line for line in lines[node.lineno - 1 : node.end_lineno]
                ):
                    found.add(node.lineno)
    return sorted(found)


def test_lazy_import_checker_sees_unmarked_imports():
    source = textwrap.dedent(
        """
        import json


        def f():
            import torch  # lazy: torch

            from ditscale.flops import fmt_flops
            from ditscale.models import (  # lazy: torch
                dit,
            )

            def inner():
                import numpy as np

            return fmt_flops
        """
    )
    assert unmarked_lazy_imports(source) == [8, 14]


def test_imports_inside_functions_say_why():
    paths = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(paths) > 40
    found = {}
    for path in paths:
        if lines := unmarked_lazy_imports(path.read_text()):
            found[path.relative_to(PACKAGE_DIR).as_posix()] = lines
    assert found == {}, f"lift these imports to module level, or say why they stay ({LAZY_MARK} ...)"


# One schema for laws.json ----------------------------------------------------------------------
QUICKSTART_LAWS = SRC.parent / "tests" / "data" / "studies" / "quickstart" / "laws.json"


def test_committed_laws_json_round_trips_through_the_schema():
    """The committed quickstart's laws.json reads into the typed records and writes back key by key,
    in order; so does the previous preset's (quickstart-p2, written before ``schema_version``:
    version 1), with the version added first."""
    from ditscale.laws.results import SCHEMA_VERSION, LawsSummary

    for path in (QUICKSTART_LAWS, QUICKSTART_LAWS.parents[1] / "quickstart-p2" / "laws.json"):
        data = json.loads(path.read_text())
        laws = LawsSummary.read(path)
        out = laws.to_dict()
        assert list(out)[0] == "schema_version" and out["schema_version"] == SCHEMA_VERSION == 1
        if "schema_version" not in data:
            out.pop("schema_version")
        assert out == data and json.dumps(out) == json.dumps(data), path
        assert LawsSummary.from_dict(laws.to_dict()) == laws and LawsSummary.from_dict(data) == laws


def test_a_fresh_analysis_round_trips_through_the_schema(tmp_path):
    """A study analysed now (the quickstart's runs, 20 resamples) writes the schema: its laws.json
    reads back into records equal to the analysis's, and writes back to the same dict."""
    import dataclasses
    import shutil

    from ditscale.laws.results import LawsSummary
    from ditscale.study import load_spec
    from ditscale.study.analyze import analyze_study
    from ditscale.study.folder import StudyFolder

    spec = load_spec("quickstart")
    folder = StudyFolder(tmp_path)
    folder.create()
    folder.write_spec(dataclasses.replace(spec, laws=dataclasses.replace(spec.laws, bootstrap=20)))
    shutil.copy(QUICKSTART_LAWS.with_name("runs.csv"), folder.runs_csv)
    data = analyze_study(tmp_path, report=False)
    laws = LawsSummary.read(folder.laws_json)
    assert laws.to_dict() == data == json.loads(folder.laws_json.read_text())
    assert LawsSummary.from_dict(laws.to_dict()) == laws and data["schema_version"] == 1


def test_laws_json_refuses_what_the_schema_does_not_know(tmp_path):
    """An unknown key (at any depth), a missing required key and an unknown schema_version are each
    refused with one line naming the file, the key and what to do."""
    import pytest

    from ditscale.errors import DitscaleError
    from ditscale.laws.results import LawsSummary

    data = json.loads(QUICKSTART_LAWS.read_text())
    nested = json.loads(QUICKSTART_LAWS.read_text())
    nested["prediction"]["nearest"]["colour"] = "red"
    missing = {k: v for k, v in data.items() if k != "noise"}
    cases = [
        ({**data, "n_opt_law": 1}, "unknown key 'n_opt_law'"),
        (nested, "unknown key 'prediction.nearest.colour'"),
        (missing, "missing key 'noise'"),
        ({**data, "schema_version": 2}, "schema_version 2 is not one this ditscale reads"),
    ]
    for i, (bad, words) in enumerate(cases):
        path = tmp_path / f"study{i}" / "laws.json"
        path.parent.mkdir()
        path.write_text(json.dumps(bad))
        with pytest.raises(DitscaleError) as err:
            LawsSummary.read(path)
        message = str(err.value)
        assert "\n" not in message and words in message and str(path) in message, message
        assert f"run `ditscale study report {path.parent}` to rewrite it" in message, message


# The layout of docs/design.md ---------------------------------------------------------------------
def layout_sections(text: str) -> dict[str, str]:
    """docs/design.md's Layout block as {area: its lines}: an area's line starts ``  area/`` and runs to
    the next one."""
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    parts = re.split(r"\n  ([a-z_]+)/ ", "\n" + block)
    return dict(zip(parts[1::2], parts[2::2]))


def test_design_layout_names_every_module():
    """Every module of every area (a package of src/ditscale) is named in its area's lines of the Layout
    block, so the contract page does not fall behind the code (a walk-through found 16 missing)."""
    sections = layout_sections((SRC.parent / "docs" / "design.md").read_text())
    areas = sorted(p.name for p in (SRC / "ditscale").iterdir() if (p / "__init__.py").is_file())
    assert sorted(sections) == areas
    missing = [
        f"{area}/{path.stem}"
        for area in sections
        for path in sorted((SRC / "ditscale" / area).glob("*.py"))
        if path.stem not in ("__init__", "__main__") and not re.search(rf"\b{path.stem}\b", sections[area])
    ]
    assert missing == [], f"docs/design.md's Layout does not name: {missing}"


# One formatter ----------------------------------------------------------------------------------
def test_tree_is_ruff_formatted():
    """ruff format (pinned in the dev extra, configured in pyproject.toml) leaves every tracked Python file as it is."""
    root = SRC.parent
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=root, capture_output=True, text=True).stdout.split()
    assert len(files) > 100, "run the suite from a git checkout of ditscale"
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *files], cwd=root, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_tree_passes_pyflakes():
    """ruff's pyflakes rules (F: unused imports and variables, undefined names, f-strings without a
    placeholder, redefinitions) find nothing in any tracked Python file; a package's re-exports are
    explicit (``from m import x as x``) because its ``__all__`` is computed."""
    root = SRC.parent
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=root, capture_output=True, text=True).stdout.split()
    assert len(files) > 100, "run the suite from a git checkout of ditscale"
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "F", "--output-format", "concise", *files],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
