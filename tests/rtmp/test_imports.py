"""The protocol core's modules import one another without cycles (and without trio/socket)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rtmp_ingest"
LAYERS = ["rtmp", "flv"]


def imports_of(path: Path, package: str) -> set[str]:
    """Modules of `package` that `path` imports anywhere (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module
                if base is None:
                    found.update(alias.name for alias in node.names)
                else:
                    found.add(base.split(".")[0])
            elif node.module and node.module.startswith(f"rtmp_ingest.{package}"):
                rest = node.module.removeprefix(f"rtmp_ingest.{package}").lstrip(".")
                found.update([rest.split(".")[0]] if rest else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(f"rtmp_ingest.{package}."):
                    found.add(alias.name.split(".")[2])
    return found


def graph(package: str) -> dict[str, set[str]]:
    folder = PACKAGE / package
    modules = {p.stem: p for p in folder.glob("*.py") if p.stem != "__init__"}
    return {name: imports_of(path, package) & set(modules) for name, path in modules.items()}


@pytest.mark.parametrize("package", LAYERS)
def test_module_imports_have_no_cycles(package):
    edges = graph(package)
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(edges[name]):
            assert state.get(other) != "open", f"import cycle: {' -> '.join([*trail, other])}"
            if other not in state:
                visit(other, [*trail, other])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])


def test_amf0_and_amf3_do_not_import_each_other_both_ways():
    edges = graph("rtmp")
    assert not ("amf3" in edges["amf0"] and "amf0" in edges["amf3"])


@pytest.mark.parametrize("package", LAYERS)
def test_the_core_imports_no_io(package):
    for path in (PACKAGE / package).glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 0
        }
        assert not names & {"trio", "socket", "av", "asyncio"}, path.name
