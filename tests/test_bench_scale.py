"""bench/bench_scale.py keeps its interface (issue #16): ``--patients N --json FILE`` with the database from
GATEWAY_DATABASE_URL writes the six figures under their fixed names; a loaded database is reused. Tiny, on SQLite."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from gateway.config import child_environment
from gateway.store import schema

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_scale.py"
CONTRACT = ("first_match_after_start_s", "process_rss_mb", "match_p95_ms", "candidates_rare_first_page_ms",
            "candidates_broad_first_page_ms", "alerts_broad_enqueue_s")


def _module():
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_contract_keys_then_a_second_load_reuses_the_database(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'scale.sqlite3'}"
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--patients", "60", "--studies", "30", "--probes", "4",
                          "--candidate-runs", "1", "--alert-runs", "1", "--json", str(out)],
                         env=child_environment(GATEWAY_DATABASE_URL=url), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert _module().CONTRACT == CONTRACT  # the names never change
    for key in CONTRACT:
        assert isinstance(figures[key], int | float) and figures[key] > 0, key
    assert figures["people_in_database"] == figures["loaded_people"] == 60
    assert figures["loaded_studies"] == 30
    assert figures["alerts_broad_jobs"] >= 0 and figures["candidates_broad_fit"] >= 0
    # a second run stores only what is missing: ten more people (one of them subscribed), no study
    monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
    args = argparse.Namespace(patients=70, studies=30, seed=7, batch=500, profile=None)
    again = _module().load(args)
    assert (again["loaded_people"], again["loaded_studies"], again["people_in_database"]) == (10, 0, 70)
    engine = create_engine(url)
    with engine.connect() as conn:
        subscribed = set(conn.execute(select(schema.subscription_state.c.subscription_id)).scalars())
    engine.dispose()
    assert subscribed == {f"sub{i}" for i in range(1, 70, 10)}


def test_help_and_the_default_database_is_refused(tmp_path, capsys, monkeypatch):
    module = _module()
    monkeypatch.setattr(sys, "argv", ["bench_scale.py", "--help"])
    with pytest.raises(SystemExit) as done:
        module.main()
    assert done.value.code == 0
    assert "--patients" in capsys.readouterr().out
    monkeypatch.delenv("GATEWAY_DATABASE_URL", raising=False)
    monkeypatch.setenv("GATEWAY_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["bench_scale.py", "--patients", "5"])
    with pytest.raises(SystemExit) as refused:
        module.main()
    assert "GATEWAY_DATABASE_URL" in str(refused.value.code)
    assert not (tmp_path / "gateway.sqlite3").exists()
