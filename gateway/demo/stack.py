"""``gateway serve --demo``: the whole demo story on 127.0.0.1, supervised by one process.

This process starts, as children, the Leeds hospital stand-in and the alert receiver (standin.py), the
gateway (``gateway serve``, not in demo mode) and ``gateway worker``; it loads ``fixtures/demo`` over FHIR
as a sponsor and a hospital would, prints the demo patient's id and every URL, and on Ctrl-C or SIGTERM
stops its children (SIGTERM, then SIGKILL after 10 s). Children run in their own process groups (the
terminal's Ctrl-C reaches this process only) and, on Linux, are told to stop if this process dies.

The development configuration is written to ``<instance>/demo/``: a hospital file made from
``mappings/hospitals/leeds.yaml`` pointing at the stand-in, and keys generated on first run (the contact
request key and the gateway's SMART Backend Services key pair), reused after. The children get it through
the documented environment variables (GATEWAY_ALLOWED_HOSTS lists the two stand-ins only).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from gateway.config import Settings, child_environment
from gateway.datafiles import bundled
from gateway.fhir.conventions import CONSENT_SCOPE, NHS_NUMBER, PURPOSE_TRIAL_ALERTS, TOPIC_NEW_MATCHING_STUDY
from gateway.notify.subscriptions import EXT_FILTER_CRITERIA, EXT_PAYLOAD_CONTENT
from gateway.outbound.errors import OutboundError
from gateway.outbound.http import HttpClient

DEMO_DATA = bundled("demo")  # package data (gateway/datafiles.py); top-level files only: the walkthrough
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}  # adds walkthrough/
STARTUP_SECONDS = 60.0
STOP_SECONDS = 10.0


class DemoError(Exception):
    """The demo could not start; the message says what failed."""


@dataclass
class DemoConfig:
    """What ``prepare`` wrote and the environment the children get."""

    folder: Path
    env: dict[str, str]
    hospital_file: Path
    leeds_public_key: Path


@dataclass
class Child:
    name: str
    proc: subprocess.Popen


@dataclass
class Stack:
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str], sock: socket.socket | None = None) -> Child:
        """Start a child; ``sock`` (bound by ``reserve``) is handed to it as ``--fd N`` and closed here."""
        if sock is not None:
            args = [*args, "--fd", str(sock.fileno())]
        try:
            child = Child(name, subprocess.Popen(args, env=env, process_group=0, preexec_fn=_stop_with_parent,
                                                 pass_fds=(sock.fileno(),) if sock is not None else ()))
        finally:
            if sock is not None:
                sock.close()
        self.children.append(child)
        return child

    def dead(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self) -> None:
        """SIGTERM to every child (newest first), then SIGKILL to any still running after STOP_SECONDS."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()


def _stop_with_parent() -> None:  # pragma: no cover (runs in the child between fork and exec)
    """Linux: the child gets SIGTERM when this process dies, even by SIGKILL (no orphaned servers)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def reserve(preferred: int) -> socket.socket:
    """A socket bound on 127.0.0.1 to ``preferred`` when it is free (0: never), else to any free port; the child that
    will listen on it inherits it, so the port cannot be taken in between (``Stack.start``)."""
    for port in (preferred, 0) if preferred else (0,):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        s.set_inheritable(True)
        return s
    raise DemoError("no free port on 127.0.0.1")


def port_or_free(preferred: int) -> int:
    """``preferred`` when it is free on 127.0.0.1 (0: never), else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers will: TIME_WAIT is free
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise DemoError("no free port on 127.0.0.1")


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _keys(folder: Path) -> tuple[dict[str, str], str, Path]:
    """({variable: key} for the gateway's own keys, its private key PEM for Leeds, the public key file);
    made once, then reused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    keys = folder / "keys"
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    own = {"GATEWAY_CONTACT_ID_KEY": keys / "contact-id.key", "GATEWAY_SESSION_SECRET": keys / "session.key"}
    for path in own.values():
        if not path.exists():
            _write_secret(path, secrets.token_hex(32).encode())
    private, public = keys / "leeds-client.pem", keys / "leeds-client.pub.pem"
    if not (private.exists() and public.exists()):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_secret(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    return {name: path.read_text().strip() for name, path in own.items()}, private.read_text(), public


def prepare(folder: Path, mappings_path: Path, leeds_port: int, alerts_port: int, base_url: str) -> DemoConfig:
    """Write the development configuration into ``folder`` and return the children's environment."""
    template = mappings_path / "hospitals" / "leeds.yaml"
    try:
        leeds = yaml.safe_load(template.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DemoError(f"cannot read {template}: {exc}") from None
    own_keys, private_pem, public_key = _keys(folder)
    stand_in = f"http://127.0.0.1:{leeds_port}"
    leeds.update(fhir_base_url=f"{stand_in}/fhir", timeouts={"connect": 2, "read": 10})
    auth = dict(leeds.get("auth") or {})
    if auth.get("type") == "smart-backend":  # the real file's flow, against the stand-in's token endpoint
        auth["token_url"] = f"{stand_in}/auth/token"
        leeds["auth"] = auth
    hospitals = folder / "hospitals"
    hospitals.mkdir(parents=True, exist_ok=True)
    hospital_file = hospitals / "leeds.yaml"
    hospital_file.write_text(f"# Written by `gateway serve --demo` from {template}: the Leeds stand-in on 127.0.0.1.\n"
                             + yaml.safe_dump(leeds, sort_keys=False))
    env = {"GATEWAY_ALLOWED_HOSTS": f"127.0.0.1:{leeds_port},127.0.0.1:{alerts_port}",
           "GATEWAY_HOSPITALS_PATH": str(hospitals.resolve()),
           "GATEWAY_BASE_URL": base_url, **own_keys}
    if auth.get("key_env"):
        env[auth["key_env"]] = private_pem  # the variable the hospital file names (LEEDS_FHIR_PRIVATE_KEY)
    return DemoConfig(folder, env, hospital_file, public_key)


def _http(url: str, read_timeout: float) -> HttpClient:
    """The demo's calls to the processes it started on 127.0.0.1 go through the one outbound client (timeouts,
    no redirects, log line), allowed to reach that one host and port; no retries (the callers poll or fail)."""
    return HttpClient.for_configured_url(url, timeout=(2.0, read_timeout), max_retries=0)


def _wait(url: str, stack: Stack, what: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        dead = stack.dead()
        if dead:
            raise DemoError(f"{dead.name} exited with code {dead.proc.returncode} while starting")
        try:
            if _http(url, 2.0).send("GET", url, check=False).status_code == 200:
                return
        except OutboundError:
            pass
        time.sleep(0.1)
    raise DemoError(f"{what} did not answer at {url} within {STARTUP_SECONDS:.0f} s")


def load_demo_data(base: str) -> None:
    """POST the demo Bundles to the gateway, as the sponsor and the hospital do (conditional: repeatable)."""
    for path in sorted(DEMO_DATA.glob("*.json")):
        r = _http(base, 60.0).send("POST", base, data=path.read_bytes(), headers=FHIR_JSON, check=False)
        if r.status_code != 200:
            raise DemoError(f"loading {path.name} failed: HTTP {r.status_code} {r.text[:300]}")


def demo_patient(base: str) -> str:
    """The id the gateway gave the Patient of the demo data (found by its NHS number, as a hospital would)."""
    nhs = None
    for path in sorted(DEMO_DATA.glob("*.json")):
        for entry in json.loads(path.read_text()).get("entry") or []:
            res = entry.get("resource") or {}
            if res.get("resourceType") == "Patient":
                nhs = next((i["value"] for i in res.get("identifier", []) if i.get("system") == NHS_NUMBER), None)
    if nhs is None:
        raise DemoError(f"no Patient with an NHS number in {DEMO_DATA}")
    found = _http(base, 30.0).send("GET", f"{base}/Patient", params={"identifier": f"{NHS_NUMBER}|{nhs}",
                                                                     "_elements": "id"},
                                   headers=FHIR_JSON).json().get("entry") or []
    if len(found) != 1:
        raise DemoError(f"expected one demo Patient at the gateway, found {len(found)}")
    return found[0]["resource"]["id"]


def first_match(base: str, patient_id: str) -> str:
    """The study ``$match`` ranks first for the patient (the one the walkthrough asks to be contacted about)."""
    bundle = _http(base, 60.0).send("GET", f"{base}/ResearchStudy/$match", params={"patient-id": patient_id},
                                    headers=FHIR_JSON).json()
    ids = [e["resource"]["id"] for e in bundle.get("entry") or [] if (e.get("search") or {}).get("mode") == "match"]
    if not ids:
        raise DemoError(f"$match found no study for Patient/{patient_id}: {json.dumps(bundle)[:300]}")
    return ids[0]


def alert_opt_in(patient_id: str, endpoint: str) -> dict:
    """A transaction Bundle: the patient's trial-alerts Consent and a Subscription to the new-matching-study
    topic, rest-hook to the alert receiver. Fixed ids (not hers): posting it again makes no second opt-in."""
    consent = {"resourceType": "Consent", "id": "demo-trial-alerts", "status": "active",
               "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "research"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
               "patient": {"reference": f"Patient/{patient_id}"},
               "policyRule": {"text": "Trial alerts chosen in the patient's app"},
               "provision": {"type": "permit", "purpose": [{"system": PURPOSE_TRIAL_ALERTS[0],
                                                            "code": PURPOSE_TRIAL_ALERTS[1]}]}}
    subscription = {
        "resourceType": "Subscription", "id": "demo-trial-alerts", "status": "requested",
        "reason": "Tell me about new trials I may fit", "criteria": TOPIC_NEW_MATCHING_STUDY,
        "_criteria": {"extension": [{"url": EXT_FILTER_CRITERIA,
                                     "valueString": f"ResearchStudy?patient=Patient/{patient_id}"}]},
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": EXT_PAYLOAD_CONTENT, "valueCode": "id-only"}]}}}
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                      for r in (consent, subscription)]}


def run_demo(host: str, port: int, settings: Settings | None = None) -> int:
    """Start everything, print where it is, supervise until Ctrl-C/SIGTERM; -> the exit code.
    ``settings``: the command's (its instance folder and mappings are used; the children read their own)."""
    settings = settings or Settings.from_env()
    folder = (settings.instance_path / "demo").resolve()
    gateway_port = port_or_free(port)
    if port and gateway_port != port:
        print(f"gateway serve --demo: port {port} is in use (use --port)", file=sys.stderr)
        return 1
    leeds_sock, alerts_sock = reserve(gateway_port + 1), reserve(gateway_port + 2)  # held until the stand-ins start
    while gateway_port in (leeds_sock.getsockname()[1], alerts_sock.getsockname()[1]):  # the gateway's is not held
        leeds_sock.close()
        alerts_sock.close()
        leeds_sock, alerts_sock = reserve(0), reserve(0)
    leeds_port, alerts_port = leeds_sock.getsockname()[1], alerts_sock.getsockname()[1]
    worker_port = port_or_free(gateway_port + 3)  # its /metrics answering = the worker is polling
    if len({gateway_port, leeds_port, alerts_port, worker_port}) < 4:
        worker_port = port_or_free(0)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{url_host}:{gateway_port}/fhir"
    alerts_url = f"http://127.0.0.1:{alerts_port}/alerts"
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored there)
        signal.signal(sig, _interrupt)
    stack = Stack()
    try:
        config = prepare(folder, settings.mappings_path, leeds_port, alerts_port, base)
        plain = child_environment(PYTHONUNBUFFERED="1")  # the stand-ins: none of the gateway's keys
        env = {**plain, **config.env}
        py = [sys.executable, "-m"]
        cli = [sys.executable, "-c", "from gateway.cli import main; main()"]
        stack.start("the Leeds stand-in", [*py, "gateway.demo.standin", "hospital",
                                           "--name", "leeds-standin", "--client-key", str(config.leeds_public_key),
                                           *[a for p in sorted(DEMO_DATA.glob("*.json")) for a in
                                             ("--patients", str(p))]], plain, leeds_sock)
        stack.start("the alert receiver", [*py, "gateway.demo.standin", "receiver", "--name", "alert-receiver"],
                    plain, alerts_sock)
        stack.start("the gateway", [*cli, "serve", "--host", host, "--port", str(gateway_port)], env)
        _wait(f"http://127.0.0.1:{leeds_port}/received", stack, "the Leeds stand-in")
        _wait(f"http://127.0.0.1:{alerts_port}/received", stack, "the alert receiver")
        _wait(base.removesuffix("/fhir") + "/healthz", stack, "the gateway")
        stack.start("the worker", [*cli, "worker"], {**env, "GATEWAY_WORKER_METRICS_PORT": str(worker_port)})
        load_demo_data(base)  # the worker was started after the gateway had migrated the schema
        patient = demo_patient(base)
        study = first_match(base, patient)
        opt_in = folder / "alert-opt-in.json"
        opt_in.write_text(json.dumps(alert_opt_in(patient, alerts_url), indent=1))
        _wait(f"http://127.0.0.1:{worker_port}/metrics", stack, "the worker")
        print(_banner(base, leeds_port, alerts_port, alerts_url, worker_port, folder, patient, study), flush=True)
        while not (dead := stack.dead()):
            time.sleep(0.5)
        print(f"gateway serve --demo: {dead.name} exited with code {dead.proc.returncode}; stopping the rest",
              file=sys.stderr, flush=True)
        return 1
    except (DemoError, OutboundError, requests.JSONDecodeError) as exc:
        print(f"gateway serve --demo: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("gateway serve --demo: stopping", flush=True)
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the stopping short
            signal.signal(sig, signal.SIG_IGN)
        leeds_sock.close()  # (no-op once handed to its stand-in)
        alerts_sock.close()
        stack.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _banner(base: str, leeds_port: int, alerts_port: int, alerts_url: str, worker_port: int, folder: Path,
            patient: str, study: str) -> str:
    root = base.removesuffix("/fhir")
    try:
        shown = folder.relative_to(Path.cwd())
    except ValueError:
        shown = folder
    return "\n".join([
        "",
        "gateway serve --demo: ready (Ctrl-C stops everything)",
        f"  FHIR base URL: {base}   patient pages: {root}/trials",
        f"  Leeds hospital stand-in: http://127.0.0.1:{leeds_port}/fhir   "
        f"what it received: http://127.0.0.1:{leeds_port}/received",
        f"  alert receiver: {alerts_url}   what it received: http://127.0.0.1:{alerts_port}/received",
        f"  worker: delivers contact requests and alerts   its metrics: http://127.0.0.1:{worker_port}/metrics",
        f"  demo patient: Patient/{patient}   first study of its $match: ResearchStudy/{study}",
        f"  development configuration (allow-list, hospital file, generated keys): {shown}",
        "Walkthrough (README.md): in a second terminal, in this folder, paste",
        f"  export PATIENT={patient} STUDY={study}",
        "",
    ])
