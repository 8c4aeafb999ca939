"""Packaging: everything draftsync imports at run time is a declared dependency, so the README's
one-command install runs on a fresh machine (test extras must not hide a missing runtime one)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_runtime_imports_are_declared_dependencies() -> None:
    declared = {
        re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower().replace("_", "-")
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    dists = packages_distributions()
    missing = {}
    for py in (ROOT / "draftsync").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "draftsync" or top == "__future__":
                    continue
                owners = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
                if not owners & declared:
                    missing[top] = str(py.relative_to(ROOT))
    assert missing == {}, f"imported but not in [project] dependencies: {missing}"
