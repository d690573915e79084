"""The core is pure: it imports only the standard library, engine.model and engine.errors,
and nothing in `engine` imports `server` (DESIGN §1)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import engine
import engine.core

CORE = Path(engine.core.__file__).parent
ENGINE = Path(engine.__file__).parent
ALLOWED_ENGINE = {"engine.model", "engine.errors", "engine.core"}
# Standard-library modules that do I/O, read clocks or draw randomness.
FORBIDDEN_STDLIB = {
    "asyncio", "time", "datetime", "uuid", "random", "secrets", "os", "sys", "io",
    "subprocess", "socket", "sqlite3", "threading", "multiprocessing", "pathlib", "shutil",
    "tempfile", "logging", "signal", "select", "selectors", "urllib", "http",
}


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ENGINE.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            else:
                assert node.module is not None
                names.add(node.module)
    return names


def _allowed_in_core(name: str) -> bool:
    top = name.split(".")[0]
    if top == "engine":
        return any(name == a or name.startswith(a + ".") for a in ALLOWED_ENGINE)
    return top in sys.stdlib_module_names and top not in FORBIDDEN_STDLIB


def test_core_modules_exist() -> None:
    names = {p.name for p in CORE.glob("*.py")}
    assert {"decide.py", "commands.py", "state.py", "events.py", "projections.py"} <= names


def test_core_imports_only_stdlib_model_and_errors() -> None:
    bad = {
        f"{path.name}: {name}"
        for path in CORE.rglob("*.py")
        for name in _imports(path)
        if not _allowed_in_core(name)
    }
    assert not bad, f"engine/core imports what it must not: {sorted(bad)}"


def test_the_checker_would_catch_a_bad_import() -> None:
    for name in ("asyncio", "time", "uuid", "random", "engine.store.base", "pydantic",
                 "server.app"):
        assert not _allowed_in_core(name), name
    for name in ("dataclasses", "functools", "engine.errors", "engine.core.state",
                 "__future__"):
        assert _allowed_in_core(name), name


def test_engine_never_imports_server() -> None:
    bad = {
        f"{path.relative_to(ENGINE)}: {name}"
        for path in ENGINE.rglob("*.py")
        for name in _imports(path)
        if name == "server" or name.startswith("server.")
    }
    assert not bad, f"engine imports server: {sorted(bad)}"
