"""Search quality on real studies: precision@5 and recall@10 of ``_text`` over tests/data/search-quality (issue #14
targets: precision@5 >= 0.8, recall@10 >= 0.9). SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import PG_URL, ROOT, reset_postgres

_spec = importlib.util.spec_from_file_location("eval_search", ROOT / "scripts" / "eval_search.py")
eval_search = importlib.util.module_from_spec(_spec)
sys.modules["eval_search"] = eval_search  # dataclasses look their module up
_spec.loader.exec_module(eval_search)

PRECISION_AT_5 = 0.8
RECALL_AT_10 = 0.9


@pytest.mark.parametrize("backend", ["sqlite"] + (["postgresql"] if PG_URL else []))
def test_search_quality_meets_the_targets(backend):
    url = None
    if backend == "postgresql":
        reset_postgres(PG_URL)
        url = PG_URL
    p5, r10, results = eval_search.run(url)
    assert len(results) >= 25
    assert p5 >= PRECISION_AT_5, [(r.query, r.precision5) for r in results if r.precision5 < 1]
    assert r10 >= RECALL_AT_10, [(r.query, r.recall10) for r in results if r.recall10 < 1]
