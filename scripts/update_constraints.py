"""Rewrite constraints.txt from the packages installed now: rl-plasticity's full dependency tree (with the
``dev`` and ``all`` extras), each at its installed version.

To upgrade: install without the constraints, run the tests, then record what passed::

    python3 -m pip install --upgrade -e ".[dev,all]"
    python3 -m ruff check . && python3 -m pytest
    python3 scripts/update_constraints.py
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = """\
# The versions rl-plasticity's tests passed with, for reproducible installs: scripts/quickstart.sh and
# scripts/test.sh install with `-c constraints.txt`. Regenerate with scripts/update_constraints.py.
# torch is the CPU build (2.13.0+cpu); `torch==2.13.0` matches it.
"""


def dependency_tree(name: str, extras: set[str]) -> dict[str, str]:
    """``{canonical name: installed version}`` of everything ``name[extras]`` needs, ``name`` excluded."""
    found: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    pending = [(name, frozenset(extras))]
    while pending:
        current, wanted = pending.pop()
        if (canonicalize_name(current), wanted) in visited:
            continue
        visited.add((canonicalize_name(current), wanted))
        try:
            distribution = metadata.distribution(current)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency of a dependency, not installed here
        found[canonicalize_name(current)] = distribution.version.split("+")[0]
        for line in distribution.requires or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in ("", *wanted)):
                pending.append((requirement.name, frozenset(requirement.extras)))
    found.pop(canonicalize_name(name), None)
    return found


def main() -> None:
    pins = dependency_tree("rl-plasticity", {"dev", "all"})
    path = Path(__file__).resolve().parent.parent / "constraints.txt"
    path.write_text(HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    print(f"{path}: {len(pins)} packages")


if __name__ == "__main__":
    main()
