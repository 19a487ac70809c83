"""Imports point one way (../shared/ARCHITECTURE.md, docs/architecture.md), with no exceptions listed:
``api`` (and the pages, CLI, demo, composition root) -> (security, mapping, matching, notify, outbound) ->
(fhir, terminology, store). Among the middle layers only ``notify`` may use ``matching`` and ``outbound``;
``matching``, ``mapping``, ``terminology`` and ``fhir`` never import Flask."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"
MIDDLE = {"security", "mapping", "matching", "notify", "outbound"}
# observability (logs, metrics) and datafiles (where the package's data files are) serve every layer
BOTTOM = {"fhir", "terminology", "store", "observability", "datafiles"}
SIDEWAYS = {("notify", "matching"), ("notify", "outbound")}
NO_FLASK = {"matching", "mapping", "terminology", "fhir"}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def _wrong_way(layer: str, module: str) -> bool:
    if module.split(".")[0] == "flask":
        return layer in NO_FLASK
    if not module.startswith("gateway."):
        return False
    target = module.split(".")[1]
    if target == layer:
        return False
    if layer in BOTTOM:
        return target not in BOTTOM
    if layer in MIDDLE:
        return target not in BOTTOM and (layer, target) not in SIDEWAYS
    return False  # the top (api, web, cli, demo, compose, ...) may import any layer below it


MODULES = sorted(GATEWAY.rglob("*.py"))


def _layer(path: Path) -> str:
    return path.relative_to(GATEWAY).parts[0].removesuffix(".py")


@pytest.mark.parametrize("layer", sorted(MIDDLE | BOTTOM))
def test_imports_point_one_way(layer):
    wrong = [f"{path.relative_to(GATEWAY.parent)}:{line} imports {module}"
             for path in MODULES if _layer(path) == layer
             for line, module in _imports(path) if _wrong_way(layer, module)]
    assert wrong == []


def test_the_rule_catches_a_wrong_import():
    assert _wrong_way("store", "gateway.matching.people")
    assert _wrong_way("matching", "gateway.notify.flows")
    assert _wrong_way("terminology", "flask")
    assert not _wrong_way("notify", "gateway.matching.consent")
    assert not _wrong_way("matching", "gateway.store.repo")
