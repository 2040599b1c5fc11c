"""The import rule of docs/architecture.md, checked on the source with `ast`.

A module under services/<a>/ may import its own service, the chassis
(services/common) and the generated stubs (`avatario.*`). It never imports
another service's modules (data moves between services over gRPC only), and
nothing under services/ imports the tools (`avatario_tools`): tools may import
services, never the other way round.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
SHARED = {"common"}  # the chassis every service may import
TOOLS = "avatario_tools"


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """Dotted name of a source file under `root`'s parent, and whether it is a package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ImportFrom names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module a source file imports, as (line, dotted name).

    `from pkg import name` yields `pkg.name` when `pkg` is a top-level package,
    since `name` may then be a service (`from services import analytics`);
    `importlib.import_module("...")` with a literal name counts as an import.
    """
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            if "." in base:
                out.append((node.lineno, base))
            else:
                out += [(node.lineno, f"{base}.{alias.name}" if base else alias.name)
                        for alias in node.names if alias.name != "*"]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module"
                   or getattr(node.func, "id", None) == "import_module")):
            out.append((node.lineno, node.args[0].value))
    return out


def violations(root: Path) -> list[str]:
    """Breaches of the import rule in every module under `root` (a `services` folder)."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root)
        parts = module.split(".")
        owner = parts[1] if len(parts) > 1 else None
        where = path.relative_to(root.parent)
        for line, name in imported_modules(path.read_text(encoding="utf-8"), module, is_package):
            target = name.split(".")
            if target[0] == TOOLS:
                found.append(f"{where}:{line} imports the tool {name}")
            elif (target[0] == root.name and len(target) > 1 and owner is not None
                  and target[1] not in SHARED | {owner}):
                found.append(f"{where}:{line} ({owner}) imports {name}")
    return sorted(set(found))


def test_no_service_imports_another_service_or_the_tools():
    assert SERVICES.is_dir()
    found = violations(SERVICES)
    assert not found, "import rule broken:\n" + "\n".join(found)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "services"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(("rel", "source"), [
    ("gateway/client/sim.py", "from services.analytics.domain import simulator\n"),
    ("gateway/x.py", "import services.profile.repo.children as c\n"),
    ("gateway/x.py", "from services import analytics\n"),
    ("gateway/servicers/x.py", "from ...analytics import convert\n"),
    ("analytics/x.py", "def f():\n    from services.gateway.cli import app\n"),
    ("common/x.py", "from services.inference.planner import ConfigError\n"),
    ("profile/x.py", "import importlib\nm = importlib.import_module('services.gateway.auth')\n"),
    ("profile/x.py", "from avatario_tools.cli import app\n"),
    ("common/x.py", "import avatario_tools.devstack\n"),
])
def test_the_checker_catches_each_kind_of_breach(tmp_path, rel, source):
    root = _tree(tmp_path, {rel: source})
    assert len(violations(root)) == 1, violations(root)


def test_the_checker_allows_own_service_chassis_stubs_and_relative_imports(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "gateway/__init__.py": "from . import auth\n",
        "gateway/servicers/chat.py": (
            "from avatario.gateway.v1 import gateway_pb2\n"
            "from services.common.status import field_violations\n"
            "from services.gateway.auth import Principal\n"
            "from ..chat import Orchestrator\n"
            "from .base import helper\n"
            "import grpc\n"),
    })
    assert violations(root) == []
