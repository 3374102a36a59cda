"""The layering, as a test: the core (every module directly in `rl_plasticity/`) imports only torch, numpy,
the standard library and itself; `envs` imports no other package of ours; `agents` imports only the core;
only the experiment layer (`rl_plasticity.experiment`) composes `agents` and `envs`. Imports inside
functions count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("rl_plasticity", "envs", "agents")
CORE_THIRD_PARTY = ("torch", "numpy")
# The one exception: `python -m rl_plasticity` must start the CLI, which lives in the experiment layer.
ENTRY_POINTS = {"rl_plasticity/__main__.py"}


def layer(module: str) -> str:
    """``core``, ``experiment``, ``envs``, ``agents``, or ``outside`` for anything not ours."""
    top = module.split(".")[0]
    if top == "rl_plasticity":
        return "experiment" if module.startswith("rl_plasticity.experiment") else "core"
    return top if top in OURS else "outside"


def imported_modules(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` for every absolute import in ``source``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def violation(importer: str, module: str) -> str | None:
    """Why ``importer`` (a layer) may not import ``module``, or None if it may."""
    target, top = layer(module), module.split(".")[0]
    if importer == "core":
        if target == "outside" and top not in CORE_THIRD_PARTY and top not in sys.stdlib_module_names:
            return "the core imports only torch, numpy and the standard library"
        if target not in ("core", "outside"):
            return "the core imports nothing of ours"
    if importer == "envs" and target not in ("envs", "outside"):
        return "envs imports no other package of ours"
    if importer == "agents" and target not in ("agents", "core", "outside"):
        return "agents imports only the core"
    return None


def layer_of_file(path: Path) -> str:
    relative = path.relative_to(ROOT)
    if relative.parts[0] == "rl_plasticity":
        return "experiment" if len(relative.parts) > 2 and relative.parts[1] == "experiment" else "core"
    return relative.parts[0]


def violations() -> list[str]:
    found = []
    for package in OURS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if str(path.relative_to(ROOT)) in ENTRY_POINTS:
                continue
            importer = layer_of_file(path)
            for line, module in imported_modules(path.read_text()):
                reason = violation(importer, module)
                if reason:
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {module}: {reason}")
    return found


def test_no_module_imports_against_the_layering() -> None:
    assert violations() == []


def test_the_core_is_the_top_level_of_rl_plasticity() -> None:
    core = sorted(p.name for p in (ROOT / "rl_plasticity").glob("*.py"))
    assert "cli.py" not in core and {"cbp.py", "metrics.py"} <= set(core)


@pytest.mark.parametrize(("importer", "source", "expected"), [
    ("core", "from rl_plasticity.experiment.config import Config", "the core imports nothing of ours"),
    ("core", "def f():\n    import agents", "the core imports nothing of ours"),
    ("core", "import gymnasium", "the core imports only torch, numpy and the standard library"),
    ("envs", "from agents import PPO", "envs imports no other package of ours"),
    ("envs", "import rl_plasticity", "envs imports no other package of ours"),
    ("agents", "from envs import make_vector_env", "agents imports only the core"),
    ("agents", "from rl_plasticity.experiment import runs", "agents imports only the core"),
])
def test_an_upward_import_is_caught(importer: str, source: str, expected: str) -> None:
    reasons = [violation(importer, module) for _, module in imported_modules(source)]
    assert reasons == [expected]


@pytest.mark.parametrize(("importer", "source"), [
    ("core", "import torch\nfrom collections.abc import Iterable\nfrom rl_plasticity.metrics import x"),
    ("agents", "import gymnasium\nfrom rl_plasticity import ContinualBackprop"),
    ("experiment", "from agents import PPO\nfrom envs import make_vector_env"),
])
def test_imports_the_layering_allows(importer: str, source: str) -> None:
    assert [violation(importer, module) for _, module in imported_modules(source)] == [None] * \
        len(imported_modules(source))
