"""tools/mutation-check stays applicable: every mutation's original text occurs exactly once in
its file (so the bug it plants is the one described), differs from the bug, and names tests that
exist. The mutations themselves run outside the suite (each needs its own test run)."""
from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    loader = importlib.machinery.SourceFileLoader("mutation_check", str(ROOT / "tools" / "mutation-check"))
    spec = importlib.util.spec_from_loader("mutation_check", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


MUTATIONS = load_tool().MUTATIONS


def test_names_are_unique() -> None:
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name.replace(" ", "_"))
def test_each_mutation_applies_once_and_names_real_tests(mutation) -> None:
    for path, old, new in mutation.edits:
        source = (ROOT / path).read_text()
        assert source.count(old) == 1, f"{old!r} in {path}"
        assert new != old
        ast.parse(source.replace(old, new))          # a bug, not a syntax error
    assert mutation.tests
    for node_id in mutation.tests:
        path, _, name = node_id.partition("::")
        tree = ast.parse((ROOT / path).read_text())
        assert name in {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}, node_id
