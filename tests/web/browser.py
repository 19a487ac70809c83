"""The browser tests' world: real processes on 127.0.0.1 and headless Chromium from the OS package.

- the gateway (``tests/procs.py``) as in production: clients configured, so its FHIR API needs bearer tokens while
  the pages are public; the demo data loaded by the operator (``gateway load``); OIDC sign-in against the local
  test issuer (``tests/oidc_issuer.py``), a research office for The Christie (ODS RBV, a site of the demo
  glioblastoma study) as the contact route, and the alert channel pointed at a receiver;
- a second gateway playing the research office's FHIR server (it stores the Tasks it is sent);
- ``gateway worker`` (outbox delivery and the automatic alert flows);
- a receiver standing for the patient's alert channel (``tests/notify/receiver.py``).

Chromium is never downloaded: Playwright launches ``/usr/bin/chromium`` (Debian's ``chromium`` package, which
``.ci/run`` installs). axe-core is the vendored copy in ``tests/data/axe/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests

from gateway.fhir.search import parse_search
from gateway.store.engine import make_engine
from gateway.store.repo import Store
from tests.e2e.test_alerts_e2e import Receiver, start_worker
from tests.e2e.test_contact_delivery import _child_env
from tests.oidc_issuer import OidcIssuer
from tests.procs import GatewayProcess, free_port
from tests.web.pages import DEMO, ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
AXE = ROOT / "tests" / "data" / "axe" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
DOC_IMAGES = ROOT / "docs" / "img"  # screenshots land here with GATEWAY_WEB_SCREENSHOTS=1 (else in a temp folder)
ME = "9449306060"  # the demo Leeds patient (fixtures/demo/03): the signed-in test patient
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
OFFICE_YAML = """\
# The Christie's research office (played by a second gateway): told of contact requests about its studies.
name: christie-research-office
ods_code: RBV
fhir_base_url: {base}
timeouts: {{connect: 2, read: 10}}
write_back: {{research_subject: false, site_contact: true}}
"""


def second_glioblastoma_study(folder: Path) -> Path:
    """A new study that matches the demo patient (the demo study with other identifiers and title), as a file."""
    text = (DEMO / "01-sponsor-glioblastoma-study.json").read_text()
    text = text.replace("NOTC-GBM-01", "NOTC-GBM-03").replace("ISRCTN12345678", "ISRCTN11223344")
    path = folder / "new-glioblastoma-study.json"
    path.write_text(text.replace("ReGlio: re-irradiation", "ReGlio-3: hypofractionated re-irradiation"))
    return path


NHS_APP_CLIENT = """\
client_id: nhs-app
name: Patient app (browser tests)
role: patient-app
scopes: [patient/ResearchStudy.rs, patient/ResearchSubject.crus]
"""


class World:
    """Start and stop every process; ``base`` is the gateway's site root (pages), ``fhir`` its FHIR base."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list = []
        self.issuer: OidcIssuer | None = None

    def start(self) -> World:
        self.issuer = OidcIssuer(client_id="gateway-web", client_secret="web-secret", nhs_number=ME).start()
        self.team = GatewayProcess(f"sqlite:///{self.folder / 'team.sqlite3'}", self.folder / "team").start()
        self.procs.append(self.team)
        self.alerts = Receiver(self.folder)
        self.procs.append(self.alerts.child)
        hub = self.folder / "hub"
        (hub / "hospitals").mkdir(parents=True)
        (hub / "clients").mkdir()
        (hub / "clients" / "nhs-app.yaml").write_text(NHS_APP_CLIENT)
        (hub / "hospitals" / "christie-research-office.yaml").write_text(OFFICE_YAML.format(base=self.team.base))
        port = free_port()
        env = {
            "GATEWAY_CLIENTS_PATH": str(hub / "clients"), "GATEWAY_RATE_LIMIT": "0",
            "GATEWAY_HOSPITALS_PATH": str(hub / "hospitals"), "GATEWAY_ALLOWED_HOSTS": "127.0.0.1",
            "GATEWAY_CONTACT_ID_KEY": "browser-test-contact-key",
            "GATEWAY_OIDC_ISSUER": self.issuer.url, "GATEWAY_OIDC_CLIENT_ID": "gateway-web",
            "GATEWAY_OIDC_CLIENT_SECRET": "web-secret",
            "GATEWAY_OIDC_REDIRECT_URI": f"http://127.0.0.1:{port}/patient/callback",
            "GATEWAY_SESSION_SECRET": "browser-test-session-secret", "GATEWAY_SESSION_COOKIE_SECURE": "false",
            "GATEWAY_PATIENT_ALERT_ENDPOINT": self.alerts.url,
            "GATEWAY_OUTBOX_BACKOFF_BASE": "0.05", "GATEWAY_OUTBOX_BACKOFF_MAX": "0.3",
            "GATEWAY_WORKER_POLL_SECONDS": "0.1",
        }
        self.database_url = f"sqlite:///{hub / 'gateway.sqlite3'}"
        self.cli_env = _child_env({**env, "GATEWAY_DATABASE_URL": self.database_url, "GATEWAY_INSTANCE_PATH": str(hub)})
        self.load(*(DEMO / name for name in ("01-sponsor-glioblastoma-study.json",
                                             "02-sponsor-brain-metastases-study.json",
                                             "03-leeds-patient-glioblastoma.json")))
        self.gw = GatewayProcess(self.database_url, hub, env=env, port=port).start()
        self.procs.append(self.gw)
        self.base = self.gw.base.removesuffix("/fhir")
        assert requests.get(f"{self.gw.base}/ResearchStudy", timeout=10).status_code == 401  # API: tokens only
        worker_env = {**self.cli_env, "GATEWAY_BASE_URL": self.gw.base}
        self.worker = start_worker(worker_env, hub)
        self.procs.append(self.worker)
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        if self.issuer is not None:
            self.issuer.stop()

    def load(self, *paths: Path) -> None:
        """The operator loads FHIR files with ``gateway load`` (the API would need a sponsor's token)."""
        done = subprocess.run([sys.executable, "-c", "from gateway.cli import main; main()", "load", "--quiet",
                               *map(str, paths)], env=self.cli_env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def study_id(self, identifier: str) -> str:
        """The id of the ResearchStudy with this identifier value (read from the database, as the operator can)."""
        engine = make_engine(self.database_url)
        try:
            return Store(engine).search_ids(parse_search("ResearchStudy", [("identifier", identifier)]))[0]
        finally:
            engine.dispose()

    def team_tasks(self) -> list[dict]:
        r = requests.get(f"{self.team.base}/Task", headers=FHIR, timeout=10)
        return [e["resource"] for e in r.json().get("entry", [])]

    def alerts_about(self, study_id: str) -> list[dict]:
        """Event notifications received on the alert channel whose focus is ResearchStudy/<study_id>."""
        out = []
        for b in self.alerts.bundles():
            params = b["entry"][0]["resource"]["parameter"]
            if not any(p["name"] == "type" and p.get("valueCode") == "event-notification" for p in params):
                continue
            focus = [part.get("valueReference", {}).get("reference", "") for p in params
                     if p["name"] == "notification-event" for part in p.get("part", []) if part["name"] == "focus"]
            if f"ResearchStudy/{study_id}" in focus:
                out.append(b)
        return out


def run_axe(page) -> list[dict]:
    """axe-core on the current page (WCAG 2.0-2.2 A/AA rules) -> its serious and critical violations."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                           AXE_TAGS)
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def describe(violations: list[dict]) -> str:
    return json.dumps(violations, indent=1)
