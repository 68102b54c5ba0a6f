"""The layout is the architecture (ARCHITECTURE.md): each folder of daemon/ imports only from
folders below it, no module imports itself back through others, and only the store talks to
Postgres."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent.parent / "daemon"

# Lowest first. A folder may import from the layers below its own, never from its own layer's
# other folders or from above.
LAYERS: list[set[str]] = [
    {"core"},
    {"engine", "domain"},
    {"passkit", "store"},
    {"passes", "campaigns", "birthday", "members", "wallet", "history", "testing"},
    {"ops", "console"},
    {"app"},
    {"cli"},
    {"__main__"},
]
# Postgres drivers are imported by the store alone, and by the demo, which plays the admin
# writing rows in Softr (as the tests do).
DRIVER_USERS = {"store", "cli.demo_data"}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("daemon", *parts)).removesuffix(".__init__")
        yield name, path


MODULES = dict(_modules())


def _imports(path: Path) -> set[str]:
    """The daemon modules `path` imports (a `from X import y` counts X, and X.y if a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n in MODULES)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer(folder: str) -> int:
    for rank, folders in enumerate(LAYERS):
        if folder in folders:
            return rank
    raise AssertionError(f"daemon/{folder} is in no layer of ARCHITECTURE.md")


def test_every_folder_has_a_layer() -> None:
    folders = {_folder(m) for m in MODULES if m != "daemon"}
    assert folders == set().union(*LAYERS)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != "daemon"))
def test_imports_point_only_down(module: str) -> None:
    mine = _folder(module)
    upward = sorted(
        target
        for target in GRAPH[module]
        if _folder(target) != mine and _layer(_folder(target)) >= _layer(mine)
    )
    assert upward == [], f"{module} imports from its own layer or above: {upward}"


def test_no_module_imports_itself_back() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_the_store_imports_the_database_driver() -> None:
    users = sorted(
        name
        for name, path in MODULES.items()
        if {"asyncpg"} & _top_level_imports(path)
        and _folder(name) not in DRIVER_USERS
        and name.removeprefix("daemon.") not in DRIVER_USERS
    )
    assert users == []


def _top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_fake_passkit_is_not_on_the_daemons_path() -> None:
    """Only the demo command (and tests) reach daemon.testing; `loyaltyd run` never does."""
    reached: set[str] = set()

    def walk(module: str) -> None:
        for target in GRAPH[module]:
            if target not in reached:
                reached.add(target)
                walk(target)

    walk("daemon.cli.commands.run")
    assert not any(m.startswith("daemon.testing") for m in reached)
