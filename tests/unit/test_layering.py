"""Imports flow one way: api -> ledger -> domain, projections -> domain, api -> projections.

- ``domain`` imports nothing of ours but itself;
- ``ledger`` and ``projections`` may import only ``domain`` (and themselves);
- nothing imports ``api`` except ``api``.
Relative imports and ``importlib.import_module("...")``/``__import__("...")`` with a
literal name count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = frozenset({"domain", "ledger", "projections", "api"})
ALLOWED = {
    "domain": frozenset({"domain"}),
    "ledger": frozenset({"ledger", "domain"}),
    "projections": frozenset({"projections", "domain"}),
    "api": OURS,
}


def imported_modules(source: str, path: str) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of each import in ``source``, a file at ``path``
    (relative to the repository root, e.g. ``ledger/app.py``)."""
    package = Path(path).parent.parts  # ledger/sub/m.py -> ("ledger", "sub")
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.lineno, node.module or ""
                continue
            if node.level > len(package):
                yield node.lineno, "<relative import beyond the top-level package>"
                continue
            base = ".".join(package[: len(package) - node.level + 1])
            if node.module:
                yield node.lineno, f"{base}.{node.module}"
            else:  # from . import a, b: each name may be a module
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            yield node.lineno, node.args[0].value


def violations(source: str, path: str) -> list[str]:
    """Layering violations in one file, as ``path:line: message`` strings."""
    layer = Path(path).parts[0]
    found = []
    for line, module in imported_modules(source, path):
        top = module.split(".")[0]
        if module.startswith("<"):
            found.append(f"{path}:{line}: {module.strip('<>')}")
        elif top in OURS and top not in ALLOWED[layer]:
            found.append(f"{path}:{line}: {layer} must not import {module}")
    return found


def project_files() -> list[Path]:
    return sorted(p for layer in sorted(OURS) for p in (ROOT / layer).rglob("*.py"))


def test_packages_exist() -> None:
    for layer in OURS:
        assert (ROOT / layer / "__init__.py").is_file(), f"{layer}/__init__.py is missing"


def test_imports_respect_the_layers() -> None:
    files = project_files()
    assert files, "no .py files found under domain/, ledger/, projections/, api/"
    found = []
    for file in files:
        path = file.relative_to(ROOT).as_posix()
        found += violations(file.read_text(encoding="utf-8"), path)
    assert not found, "layering violations:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("domain/money.py", "from ledger.app import LedgerApp"),
        ("domain/money.py", "import projections"),
        ("domain/sub/rules.py", "import api.app as app"),
        ("ledger/app.py", "from projections import balances"),
        ("ledger/app.py", "import api"),
        ("projections/balances.py", "from ledger import app"),
        ("projections/balances.py", "from api.schemas import Reply"),
        ("domain/money.py", "from ..ledger import app"),
        ("ledger/sub/app.py", "from ... import api"),
        ("ledger/app.py", "import importlib\nimportlib.import_module('api.cli')"),
        ("domain/money.py", "def f():\n    if True:\n        from ledger import x\n"),
    ],
)
def test_checker_catches_a_violation(path: str, source: str) -> None:
    assert violations(source, path), f"{path}: {source!r} should be a violation"


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("domain/money.py", "from decimal import Decimal\nfrom .currency import Currency"),
        ("domain/sub/rules.py", "from .. import money\nfrom domain.money import Money"),
        ("ledger/app.py", "import eventsourcing.application\nfrom domain import money"),
        ("ledger/__init__.py", "from .app import LedgerApp\nfrom . import app"),
        ("projections/balances.py", "from domain.money import Money\nfrom . import base"),
        ("api/app.py", "import ledger, projections, domain\nfrom api.schemas import Reply"),
        ("api/cli.py", "from .app import create_app"),
    ],
)
def test_checker_allows_permitted_imports(path: str, source: str) -> None:
    assert violations(source, path) == []


def test_relative_imports_resolve() -> None:
    names = [m for _, m in imported_modules("from ..x import y\nfrom . import z", "ledger/a/b.py")]
    assert names == ["ledger.x", "ledger.a.z"]
