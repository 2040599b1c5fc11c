"""The layering of docs/architecture.md, checked on the source with `ast`:
domain/ and repo/ modules of every service import neither gRPC nor protobuf
(generated stubs included), and the chassis' error kinds know no status codes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
WIRE = ("grpc", "grpc_status", "google.protobuf", "google.rpc", "avatario")


def wire_imports(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                 else [])
        found += [f"{path.relative_to(root)}:{node.lineno} imports {n}" for n in names
                  if any(n == w or n.startswith(w + ".") for w in WIRE)]
    return found


def layer_files(layer: str) -> list[Path]:
    return sorted(p for p in SERVICES.glob(f"*/{layer}/**/*.py"))


@pytest.mark.parametrize("layer", ["domain", "repo"])
def test_domain_and_repo_modules_import_no_grpc_or_protobuf(layer):
    files = layer_files(layer)
    assert files, f"no {layer}/ modules found"
    found = [hit for path in files for hit in wire_imports(path)]
    assert not found, "\n".join(found)


def test_every_data_service_has_the_layers():
    for service in ("profile", "analytics"):
        for part in ("servicer.py", "domain", "repo"):
            assert (SERVICES / service / part).exists(), f"{service} lacks {part}"
    for part in ("clients", "repo", "servicers"):
        assert (SERVICES / "gateway" / part).is_dir(), f"gateway lacks {part}"
    assert (SERVICES / "analytics" / "clients").is_dir()


def test_the_chassis_error_kinds_import_no_transport():
    assert wire_imports(SERVICES / "common" / "errors.py") == []


def test_the_checker_sees_a_wire_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("import grpc\nfrom avatario.common.v1 import family_pb2\nimport json\n")
    assert len(wire_imports(bad, tmp_path)) == 2
