"""The README's demo walkthrough, run as written against ``gateway serve --demo`` in a real process.

The commands are read from the README's "A walk through the demo story" section (its bash blocks), with only
the ports and the instance folder changed to this test's, and run with bash and curl in order. A command that
reads a stand-in is repeated until what the README says should be there has arrived. Then Ctrl-C (SIGINT) must
stop the supervisor and every child it started.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from gateway.fhir.conventions import CONTACT_REQUEST_ID
from tests.conftest import BACKENDS, PG_URL, reset_postgres
from tests.procs import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None,
                                reason="the README's commands need bash and curl")


def walkthrough() -> list[str]:
    """The commands of the README walkthrough, in order (a command's continuation lines joined to it)."""
    text = README.read_text()
    section = text.split("## A walk through the demo story", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith(("curl ", "export ", ".venv/bin/gateway ")) or not commands:
                commands.append(line)
            else:
                commands[-1] += "\n" + line
    return commands


@dataclass
class Demo:
    proc: subprocess.Popen
    log_path: Path
    instance: Path
    urls: dict[str, str] = field(default_factory=dict)  # README's root URL -> this test's
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def run(self, command: str) -> str:
        for theirs, ours in self.urls.items():
            command = command.replace(theirs, ours)
        command = command.replace("@instance/demo/", f"@{self.instance / 'demo'}/")
        out = subprocess.run(["bash", "-c", command], cwd=ROOT, env=self.env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
        return out.stdout


def _children(pid: int) -> list[int]:
    """Linux: the pids whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(params=BACKENDS)
def demo(request, tmp_path):
    instance = tmp_path / "instance"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_INSTANCE_PATH": str(instance), "PYTHONUNBUFFERED": "1"})
    if request.param == "postgresql":
        reset_postgres(PG_URL)
        env["GATEWAY_DATABASE_URL"] = PG_URL
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", "from gateway.cli import main; main()", "serve", "--demo",
                                 "--port", str(free_port())], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    d = Demo(proc, log_path, instance, env=env)
    try:
        ready = wait_until(lambda: re.search(r"export PATIENT=(\S+) STUDY=(\S+)", d.log()) or proc.poll() is not None,
                           timeout=90, what="the demo to be ready")
        assert proc.poll() is None, d.log()
        base = re.search(r"FHIR base URL: (http://\S+)/fhir", d.log()).group(1)
        leeds = re.search(r"Leeds hospital stand-in: (http://\S+)/fhir", d.log()).group(1)
        alerts = re.search(r"alert receiver: (http://127\.0\.0\.1:\d+)/", d.log()).group(1)
        d.urls = {"http://127.0.0.1:8080": base, "http://127.0.0.1:8081": leeds, "http://127.0.0.1:8082": alerts}
        d.env = {**env, "PATIENT": ready.group(1), "STUDY": ready.group(2)}
        yield d
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def _received(d: Demo, command: str, check, what: str) -> list[dict]:
    """Run a stand-in's /received command until ``check`` holds for what it lists."""
    return wait_until(lambda: check(json.loads(d.run(command))["received"]), timeout=30, what=what)


def test_readme_walkthrough_runs_as_written(demo):
    commands = walkthrough()
    exports = [c for c in commands if c.startswith("export ")]
    assert exports and re.fullmatch(r"export PATIENT=\S+ STUDY=\S+", exports[0]), "README: the line serve prints"
    patient, study = demo.env["PATIENT"], demo.env["STUDY"]
    steps = [c for c in commands if not c.startswith("export ")]
    assert len(steps) == 9, steps  # search, $match, contact + Leeds + outbox, opt-in + alerts, new study + alerts
    search, match, contact, at_leeds, outbox, opt_in, alerts_1, new_study, alerts_2 = steps

    titles = [e["resource"]["title"] for e in json.loads(demo.run(search))["entry"] if e["search"]["mode"] == "match"]
    assert titles and titles[0].startswith("ReGlio") and not any("metastases" in t.lower() for t in titles)

    matched = json.loads(demo.run(match))
    first = next(e for e in matched["entry"] if e["search"]["mode"] == "match")
    assert first["resource"]["id"] == study and first["resource"]["title"].startswith("ReGlio")
    assert 0 < first["search"]["score"] <= 1 and "393563007" in json.dumps(first["search"])

    subject = json.loads(demo.run(contact))
    assert subject["resourceType"] == "ResearchSubject" and subject["status"] == "candidate", subject
    assert subject["individual"] == {"reference": f"Patient/{patient}"}
    contact_id = next(i["value"] for i in subject["identifier"] if i["system"] == CONTACT_REQUEST_ID)

    def delivered(received: list[dict]) -> list[dict] | None:
        written = {e["resource"]["resourceType"]: e["resource"] for e in received if e.get("status") == 201}
        return received if {"ResearchSubject", "Task"} <= set(written) else None

    received = _received(demo, at_leeds, delivered, "the contact request and Task at the Leeds stand-in")
    copy = next(e["resource"] for e in received if e["resource"]["resourceType"] == "ResearchSubject")
    assert copy["identifier"] == [{"system": CONTACT_REQUEST_ID, "value": contact_id}]
    assert copy["individual"] == {"reference": "Patient/1"}  # the stand-in's own id for her (its first resource)
    assert copy["study"]["identifier"]["value"] in ("NOTC-GBM-01", "ISRCTN12345678")
    task = next(e["resource"] for e in received if e["resource"]["resourceType"] == "Task")
    assert task["status"] == "requested" and task["for"] == {"reference": "Patient/1"}
    # The README's .venv is this interpreter's (the same code) wherever the test runs.
    listed = demo.run(outbox.replace(".venv/bin/gateway", f"{shlex.quote(sys.executable)} -c "
                                     "'from gateway.cli import main; main()'", 1)).splitlines()
    assert any("\tdelivered\tresearch-subject\tleeds\t" in line and subject["id"] in line for line in listed), listed
    fhir_without_token = requests.get(demo.urls["http://127.0.0.1:8081"] + "/fhir/ResearchSubject", timeout=10)
    assert fhir_without_token.status_code == 401  # the stand-in's FHIR API wanted the worker's SMART token

    opted = json.loads(demo.run(opt_in))
    assert [e["response"]["status"][:3] for e in opted["entry"]] == ["201", "201"], opted

    def events(received: list[dict]) -> list[dict]:
        return [ev for e in received if e["summary"].get("type") == "event-notification"
                for ev in e["summary"]["events"]]

    got = _received(demo, alerts_1, lambda r: r if events(r) else None, "the alert about the recruiting study")
    assert [e["summary"]["type"] for e in got][0] == "handshake"
    assert [ev["focus"] for ev in events(got)] == [f"ResearchStudy/{study}"]

    pushed = json.loads(demo.run(new_study))
    new_id = next(e["response"]["location"].split("/")[1] for e in pushed["entry"]
                  if e["response"]["location"].startswith("ResearchStudy/"))
    got = _received(demo, alerts_2, lambda r: r if len(events(r)) >= 2 else None, "the alert about the new study")
    assert [ev["focus"] for ev in events(got)] == [f"ResearchStudy/{study}", f"ResearchStudy/{new_id}"]
    sent = json.dumps([e["body"] for e in got])
    assert "9449306060" not in sent and "Whitaker" not in sent and f"Patient/{patient}" not in sent  # not about her

    # Ctrl-C: the supervisor stops every child and exits 0.
    children = _children(demo.proc.pid)
    assert len(children) == 4, children  # two stand-ins, the gateway, the worker
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=30) == 0, demo.log()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children), demo.log()


def test_leeds_standin_checks_the_client_assertion(tmp_path):
    """The stand-in's token endpoint takes an assertion signed with the registered key only; FHIR needs the token."""
    import threading

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from gateway.demo.standin import ASSERTION_TYPE, StandinServer

    def pem(key) -> str:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    ours, theirs = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    public = ours.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    server = StandinServer("hospital", 0, "leeds-test", public, "trial-gateway")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def token(key) -> requests.Response:
            now = int(time.time())
            claims = {"iss": "trial-gateway", "sub": "trial-gateway", "aud": f"{server.root}/auth/token",
                      "exp": now + 60, "iat": now, "jti": str(now)}
            return requests.post(f"{server.root}/auth/token", timeout=10, data={
                "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": jwt.encode(claims, pem(key), algorithm="RS384")})

        refused = token(theirs)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
        granted = token(ours)
        assert granted.status_code == 200, granted.text
        url = f"{server.base}/Patient"
        assert requests.get(url, timeout=10).status_code == 401
        ok = requests.get(url, headers={"Authorization": f"Bearer {granted.json()['access_token']}"}, timeout=10)
        assert ok.status_code == 200 and ok.json()["type"] == "searchset"
    finally:
        server.shutdown()
        server.server_close()


def test_development_configuration(tmp_path):
    """The hospital file is the shipped Leeds file pointed at the stand-in, valid for the hospital loader; the
    allow-list names the stand-ins only; keys are private files made once and reused."""
    from gateway.demo.stack import prepare
    from gateway.outbound.allowlist import AllowList
    from gateway.outbound.hospitals import load_hospitals

    first = prepare(tmp_path, ROOT / "mappings", 18081, 18082, "http://127.0.0.1:18080/fhir")
    leeds = load_hospitals(first.hospital_file.parent).get("leeds")
    assert leeds.fhir_base_url == "http://127.0.0.1:18081/fhir" and leeds.ods_code == "RR8"
    assert leeds.auth["type"] == "smart-backend" and leeds.auth["token_url"] == "http://127.0.0.1:18081/auth/token"
    allowed = AllowList.parse(first.env["GATEWAY_ALLOWED_HOSTS"])
    assert allowed.allows("http://127.0.0.1:18081/fhir") and allowed.allows("http://127.0.0.1:18082/alerts")
    assert not allowed.allows("http://127.0.0.1:18080/fhir") and not allowed.allows(leeds.auth["token_url"]
                                                                                   .replace("127.0.0.1", "localhost"))
    assert first.env["LEEDS_FHIR_PRIVATE_KEY"].startswith("-----BEGIN PRIVATE KEY-----")
    keys = tmp_path / "keys"
    assert {p.name: p.stat().st_mode & 0o777 for p in keys.iterdir() if not p.name.endswith(".pub.pem")} == {
        "contact-id.key": 0o600, "session.key": 0o600, "leeds-client.pem": 0o600}
    again = prepare(tmp_path, ROOT / "mappings", 19081, 19082, "http://127.0.0.1:19080/fhir")
    for name in ("GATEWAY_CONTACT_ID_KEY", "GATEWAY_SESSION_SECRET", "LEEDS_FHIR_PRIVATE_KEY"):
        assert again.env[name] == first.env[name], name  # stable identifiers and sessions across restarts
    assert load_hospitals(again.hospital_file.parent).get("leeds").fhir_base_url == "http://127.0.0.1:19081/fhir"


def test_a_reserved_port_is_held_until_its_stand_in_listens_on_it():
    # The demo's stand-ins inherit the socket the parent bound (gateway.demo.stack.reserve), so another process cannot
    # take the port between choosing it and listening on it (a CI run once lost the Leeds stand-in that way).
    from gateway.demo.stack import Stack, child_environment, reserve

    sock = reserve(0)
    port = sock.getsockname()[1]
    with socket.socket() as other, pytest.raises(OSError):  # held: nobody else can bind it
        other.bind(("127.0.0.1", port))

    def received() -> requests.Response | None:
        try:
            return requests.get(f"http://127.0.0.1:{port}/received", timeout=2)
        except requests.ConnectionError:
            return None

    stack = Stack()
    try:
        stack.start("receiver", [sys.executable, "-m", "gateway.demo.standin", "receiver", "--name", "r"],
                    child_environment(PYTHONUNBUFFERED="1"), sock)
        assert sock.fileno() == -1  # the parent's copy is closed once handed over
        got = wait_until(received, timeout=30, what="the stand-in")
        assert got.status_code == 200
    finally:
        stack.stop()
