"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(README.parent)  # examples read configs/...; what they write goes to tmp_path
    code = python_blocks()[index].replace("/tmp/checkpoint.pt", str(tmp_path / "checkpoint.pt"))
    code = code.replace('"runs/', f'"{tmp_path}/runs/')
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme_example"})
