"""The one-way house: imports between transferlab's packages form no circle, and the bottom floors import nothing
from above (utils/ nothing of transferlab, config/ only utils/), read from the code's own import statements."""

from __future__ import annotations

import ast
import collections
from graphlib import CycleError, TopologicalSorter

from tests.helpers import ROOT

SRC = ROOT / "src" / "transferlab"


def _package_imports() -> dict[str, set[str]]:
    """For each package or top-level module of transferlab, the others it imports (anywhere in its files)."""
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts == ("__init__",):
            continue  # the package face only hands names on
        here = parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                names = target.split(".")
                if names[0] == "transferlab" and len(names) > 1 and names[1] != here:
                    edges[here].add(names[1])
        edges.setdefault(here, set())
    return edges


def test_packages_import_one_way():
    edges = _package_imports()
    try:
        order = list(TopologicalSorter(edges).static_order())
    except CycleError as e:
        raise AssertionError(f"import circle between packages: {' -> '.join(e.args[1])}") from None
    assert {"utils", "config", "data", "strategies", "reporting", "sweeps", "train"} <= set(order)
    assert edges["utils"] == set(), edges["utils"]
    assert edges["config"] <= {"utils"}, edges["config"]
    assert "strategies" not in edges["reporting"] and "strategies" not in edges["data"]
