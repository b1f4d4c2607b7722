"""The architecture as a test: docs/design.md §1's straight stack and §3's anyio-only rule."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "storage", "hub", "mcp_tools", "bridges")
# Which of our packages each package may import (the stack: protocol <- storage <- hub <- mcp_tools <- bridges).
ALLOWED = {
    "protocol": set(),
    "storage": {"protocol"},
    "hub": {"protocol", "storage"},
    "mcp_tools": {"protocol", "hub"},
    "bridges": {"protocol", "storage", "hub", "mcp_tools"},
}
# bridges reaches storage only to open and migrate it at start-up (the composition root).
STORAGE_FROM_BRIDGES = {"bridges/app.py"}
EVENT_LOOP_MODULES = {"bridges/runner.py"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def sources() -> list[tuple[str, Path]]:
    return [(package, path) for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


@pytest.mark.parametrize("package,path", sources(), ids=lambda v: str(v).replace(str(ROOT) + "/", ""))
def test_module_imports_only_layers_below_it(package: str, path: Path) -> None:
    relative = str(path.relative_to(ROOT))
    ours = imported_roots(path) & set(PACKAGES)
    allowed = ALLOWED[package] | {package}
    if package == "bridges" and relative not in STORAGE_FROM_BRIDGES:
        allowed = allowed - {"storage"}
    assert ours <= allowed, f"{relative} imports {sorted(ours - allowed)}"


@pytest.mark.parametrize("package,path", sources(), ids=lambda v: str(v).replace(str(ROOT) + "/", ""))
def test_module_uses_anyio_not_an_event_loop_directly(package: str, path: Path) -> None:
    relative = str(path.relative_to(ROOT))
    if relative in EVENT_LOOP_MODULES:
        return
    assert not imported_roots(path) & {"asyncio", "trio"}, f"{relative} imports an event loop; use anyio"


def test_every_layer_of_the_design_exists() -> None:
    for name in (*PACKAGES, "tests", "bench", "pyproject.toml", "README.md"):
        assert (ROOT / name).exists(), name
