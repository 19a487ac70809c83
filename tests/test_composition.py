"""The composition root (gateway/compose.py): one service graph for the API, every CLI command and the worker.

Every CLI command and ``gateway worker`` run in a subprocess where Flask cannot be imported (a sitecustomize that
blocks it, inherited by any child process, e.g. the import's workers), so none of them builds a Flask app; the
store's write hooks are the root's one ordered list, whichever process writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
import responses

from gateway.compose import WRITE_HOOKS, build
from gateway.config import Settings
from gateway.notify import delivery
from gateway.outbound import contact
from gateway.security import guards
from tests.conftest import DATA, ROOT

DEMO = ROOT / "fixtures" / "demo"
CTGOV = DATA / "ctgov" / "NCT02513394.json"
BLOCK_FLASK = """\
import sys
sys.modules["flask"] = None  # 'import flask' raises ImportError in this process
"""

# One invocation per command (serve is the HTTP server: the one command that builds the Flask app). A new command
# without a line here fails test_every_command_is_covered.
COMMANDS: dict[str, list[list[str]]] = {
    "db upgrade": [["db", "upgrade"]],
    "load": [["load", "--quiet", str(DEMO / "01-sponsor-glioblastoma-study.json"),
              str(DEMO / "03-leeds-patient-glioblastoma.json")]],
    "import": [["import", "--mapping", "ctgov-v2", "--quiet", "--workers", "1", str(CTGOV)],
               ["import", "--mapping", "ctgov-v2", "--dry-run", str(CTGOV)]],
    "rematch": [["rematch", "--quiet"], ["rematch", "--full", "--quiet"]],
    "worker": [["worker", "--once"]],
    "outbox list": [["outbox", "list"]],
    "outbox retry": [["outbox", "retry", "--all-dead"]],
    "outbox purge-delivered": [["outbox", "purge-delivered"]],
    "mappings check": [["mappings", "check"]],
    "mappings list": [["mappings", "list"]],
    "sites link": [["sites", "link", "--report"]],
}
NOT_COVERED = {"serve"}


def _leaf_commands(group: click.Group, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            out |= _leaf_commands(cmd, f"{full} ")
        else:
            out.add(full)
    return out


def test_every_command_is_covered():
    from gateway.cli import cli

    assert _leaf_commands(cli) - NOT_COVERED == set(COMMANDS)


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory) -> dict[str, str]:
    """A process environment whose Python cannot import Flask, with a fresh SQLite database."""
    folder = tmp_path_factory.mktemp("noflask")
    (folder / "site").mkdir()
    (folder / "site" / "sitecustomize.py").write_text(BLOCK_FLASK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    env.update({"PYTHONPATH": os.pathsep.join([str(folder / "site"), str(ROOT)]),
                "GATEWAY_DATABASE_URL": f"sqlite:///{folder / 'gateway.sqlite3'}",
                "GATEWAY_INSTANCE_PATH": str(folder), "GATEWAY_BASE_URL": "http://127.0.0.1:8080/fhir"})
    return env


# One process runs the commands one after the other (the imports cost seconds a process on a busy machine);
# each command's exit code is printed on a line of its own.
DRIVER = """
import json, sys, traceback
from gateway.cli import cli
for args in json.loads(sys.argv[1]):
    try:
        cli.main(args=args, prog_name="gateway", standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:
        traceback.print_exc()
        code = "exception"
    print("@@ " + json.dumps([args, code]), flush=True)
"""


def _gateway(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from gateway.cli import main; main()", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_flask_is_really_blocked(blocked_env):
    proc = subprocess.run([sys.executable, "-c", "import flask"], env=blocked_env, capture_output=True, text=True)
    assert proc.returncode == 1 and "import of flask halted" in proc.stderr
    assert _gateway(blocked_env, "serve", "--port", "0").returncode != 0  # serve builds the app: it needs Flask


def test_every_command_and_the_worker_run_without_flask(blocked_env):
    runs = [args for name in COMMANDS for args in COMMANDS[name]]
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs)], env=blocked_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    codes = [json.loads(line[3:]) for line in proc.stdout.splitlines() if line.startswith("@@ ")]
    assert [args for args, _ in codes] == runs, proc.stderr[-3000:]
    failed = [" ".join(args) for args, code in codes if code != 0]
    assert not failed, f"failed without Flask: {failed}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "flask" not in proc.stderr.lower()
    assert "processed" in proc.stdout and "ok  topics under" in proc.stdout  # the worker and the checks did run


def test_the_store_write_hooks_are_one_ordered_list(settings):
    gw = build(settings)
    try:
        hooks = gw.service.hooks
        assert len(hooks) == len(WRITE_HOOKS) == 3
        assert hooks[0] is guards.write_guard  # a write the caller may not make rolls back before anything else
        assert hooks[1].__qualname__.startswith("subscription_hook")  # checked before the outbox takes anything
        assert hooks[2].__qualname__.startswith("make_hook")  # contact requests queued for the hospital
        assert gw.service.guards == [guards.existing_guard] and gw.service.visibility is guards.caller_view
        bare = build(settings, write_hooks=False)
        assert bare.service.hooks == [] and bare.service.transforms == gw.service.transforms
        bare.close()
    finally:
        gw.close()


def test_the_api_adds_no_write_hook_of_its_own(settings):
    from gateway.api.app import create_app

    app = create_app(settings)
    other = build(settings)
    try:
        root = app.extensions["gateway.root"]
        assert app.extensions["gateway.service"] is root.service
        assert [h.__qualname__ for h in root.service.hooks] == [h.__qualname__ for h in other.service.hooks]
    finally:
        other.close()
        app.extensions["gateway.security"].audit_writer.close()
        app.extensions["gateway.store"].engine.dispose()


def test_the_worker_gets_its_job_kinds_explicitly(settings):
    gw = build(settings)
    try:
        w = gw.worker(name="t")
        assert set(w.handlers) == set(contact.JOB_KINDS) | set(delivery.KINDS)
        assert w.ctx.store is gw.store and w.ctx.destinations is gw.destinations
    finally:
        gw.close()


def test_notifications_without_a_base_url_are_refused_not_defaulted(settings):
    """A graph built without GATEWAY_BASE_URL (a tool, a test) cannot name this server: no local default."""
    from gateway.outbound.errors import ConfigurationError

    config = delivery.DeliveryConfig(base_url=None, topics={})
    with pytest.raises(ConfigurationError, match="GATEWAY_BASE_URL"):
        delivery._base(config)
    assert delivery._base(delivery.DeliveryConfig("https://gw.example.org/fhir/", {})) == "https://gw.example.org/fhir"


def test_settings_are_not_read_from_the_environment_by_the_root(settings, monkeypatch):
    """The graph uses the settings object it is given, whatever the environment says."""
    monkeypatch.setenv("GATEWAY_ALLOWED_HOSTS", "changed.example.org")
    gw = build(Settings(store=settings.store, instance_path=settings.instance_path))
    try:
        assert not gw.outbound.allowed_hosts.allows("https://changed.example.org/x")
    finally:
        gw.close()


def test_the_mapping_layer_does_not_import_the_store():
    """Mapping returns resources; the caller stores them (gateway/ingest.py)."""
    import ast

    found = []
    for path in sorted((ROOT / "gateway" / "mapping").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("gateway.store")]
    assert found == []


@responses.activate
def test_the_national_optout_url_is_read_through_the_outbound_client(settings):
    """GATEWAY_NATIONAL_OPTOUT as a URL: fetched once, through the allow-list, by the root's consent gate."""
    from dataclasses import replace

    from gateway.config import NotifySettings
    from gateway.outbound.allowlist import AllowList
    from gateway.outbound.errors import DestinationNotAllowed
    from gateway.outbound.settings import OutboundSettings

    url = "https://optout.example.org/list.txt"
    responses.add(responses.GET, url, body="9434765919\n9449306060\n")
    allowed = replace(settings, notify=NotifySettings(national_optout=url),
                      outbound=OutboundSettings(allowed_hosts=AllowList.parse("optout.example.org")))
    gw = build(allowed)
    try:
        gate = gw.policy()
        assert len(gate.optout) == 2 and "9434765919" in gate.optout
        assert len(responses.calls) == 1
    finally:
        gw.close()
    gw = build(replace(allowed, outbound=OutboundSettings()))  # the host is not on the allow-list
    try:
        with pytest.raises(DestinationNotAllowed):
            gw.policy()
        assert len(responses.calls) == 1  # nothing was sent
    finally:
        gw.close()
