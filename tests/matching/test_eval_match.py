"""scripts/eval_match.py: precision and recall of $match over the labelled pairs meet the issue's 0.95 floor."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "eval_match.py"


def test_eval_match_reaches_the_floor(capsys):
    spec = importlib.util.spec_from_file_location("eval_match", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "precision 1.000" in out.splitlines()[0]
