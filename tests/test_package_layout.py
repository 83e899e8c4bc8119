"""The package's shape: every module imports, no import circle (module- or function-level), modules stay small."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "benchmark"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The suite module an imported name lives in (``a.b.c`` -> ``a.b`` when ``c`` is a name in it)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> suite modules it imports anywhere in its body (function-level imports count too).

    A package's ``__init__`` importing its own children is not an edge back from the children.
    """
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                dep = _resolve(t, mods)
                if dep and dep != mod and not mod.startswith(dep + "."):
                    graph[mod].add(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if not state.get(v) and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for m in sorted(graph):
        if not state.get(m) and (found := visit(m)):
            return found
    return None


def test_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_package():
    cycle = find_cycle(import_graph(_modules()))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_contract_imports_nothing_of_the_suite():
    graph = import_graph(_modules())
    assert graph["benchmark.engine.contract"] == set()
    # the engine, its backends and checkpoints know the contract, never the generators
    for mod in ("benchmark.engine.loop", "benchmark.engine.backends", "benchmark.engine.checkpoint"):
        assert not any(d.startswith("benchmark.generators") for d in graph[mod]), mod
    assert not any(d.startswith("benchmark.generators") for d in graph["benchmark.segmentation.model"])


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(_modules())
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\nprint('ok')"
    out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def _suite_imports(paths: list[Path]) -> list[tuple[str, str, str]]:
    """(file:line, module, name) of every ``from benchmark... import name`` and ``import benchmark...`` (name ""),
    function-level ones included."""
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("benchmark"):
                out += [(where, node.module, a.name) for a in node.names if a.name != "*"]
            elif isinstance(node, ast.Import):
                out += [(where, a.name, "") for a in node.names if a.name.split(".")[0] == "benchmark"]
    return out


def test_every_suite_import_resolves():
    """Imports inside functions only fail when the function runs: check each one names a real module or attribute."""
    files = [p for d in ("benchmark", "launchers", "analysis", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    code = (
        "import importlib, json, sys\n"
        "bad = []\n"
        "for where, mod, name in json.load(sys.stdin):\n"
        "    m = importlib.import_module(mod)\n"
        "    if name and not hasattr(m, name):\n"
        "        try:\n"
        "            importlib.import_module(mod + '.' + name)\n"
        "        except ImportError:\n"
        "            bad.append(f'{where}: from {mod} import {name}')\n"
        "print('\\n'.join(bad))"
    )
    items = json.dumps(_suite_imports(files))
    out = subprocess.run(
        [sys.executable, "-c", code], input=items, capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", out.stdout


def test_modules_stay_under_400_lines():
    big = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not big, big
