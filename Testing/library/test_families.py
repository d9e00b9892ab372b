"""The Family seam: every family declares what it adds, and nothing in the library probes for it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from NormativeADLib.models import FAMILIES, Family

LIB = Path(__file__).resolve().parents[2] / "NormativeADLib"
# A flag and the methods a family sets with it.
DECLARED = {"makes_batches": ("training_volumes", "training_batch"), "segments": ("probability",),
            "reads_study": ("probability_study",), "builds_on_models": ("complete_network",)}


def _overrides(family: Family, method: str) -> bool:
    return getattr(type(family), method) is not getattr(Family, method)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_sets_a_flag_and_its_methods_together(name):
    family = FAMILIES[name]
    assert isinstance(family, Family) and family.name == name
    for method in ("build", "loss", "restore"):
        assert _overrides(family, method), f"{name} lacks {method}"
    for flag, methods in DECLARED.items():
        for method in methods:
            assert getattr(family, flag) == _overrides(family, method), f"{name}: {flag} and {method} disagree"


def _probes(source: str) -> list[str]:
    """hasattr/getattr calls on something named like a family."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
                and node.args and "family" in ast.unparse(node.args[0]).lower()):
            found.append(ast.unparse(node))
    return found


def test_nothing_probes_a_family_for_a_capability():
    probes = {str(p.relative_to(LIB)): _probes(p.read_text()) for p in LIB.rglob("*.py")}
    assert {k: v for k, v in probes.items() if v} == {}
    assert _probes("getattr(model.family, 'whole_volume', False)")  # the check sees one
