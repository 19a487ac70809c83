"""Run the gateway in a separate process for end-to-end tests: ``GatewayProcess`` and the ``gateway_process``
fixture factory.

>>> with GatewayProcess(db_url, tmp_path) as gw:
...     requests.get(f"{gw.base}/metadata")
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
_BASE_LINE = re.compile(r"FHIR base URL: (http://\S+/fhir)")


class GatewayProcess:
    """``gateway serve --port 0`` as a child process with its own database and instance folder.

    The base URL is read from the line the server prints once bound; readiness is /healthz answering.
    Leaving the ``with`` block terminates the process (SIGTERM, then SIGKILL after 5 s).
    """

    def __init__(self, database_url: str, instance_path: Path, env: dict[str, str] | None = None,
                 startup_timeout: float = 30.0, port: int = 0):
        self.database_url = database_url
        self.instance_path = Path(instance_path)
        self.extra_env = env or {}
        self.startup_timeout = startup_timeout
        self.port = port  # 0: any free port (a fixed one when a URL must be known before start, e.g. OIDC redirect)
        self.proc: subprocess.Popen | None = None
        self.base = ""
        self.log_path = self.instance_path / "gateway-process.log"

    def start(self) -> GatewayProcess:
        self.instance_path.mkdir(parents=True, exist_ok=True)
        # Only this test's settings: no GATEWAY_* leaking in from the developer's shell.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update({"GATEWAY_DATABASE_URL": self.database_url, "GATEWAY_INSTANCE_PATH": str(self.instance_path),
                    "PYTHONUNBUFFERED": "1", **self.extra_env})
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from gateway.cli import main; main()", "serve", "--host", "127.0.0.1",
             "--port", str(self.port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child holds its own descriptor
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            m = _BASE_LINE.search(self.log())
            if m and self._healthy(m.group(1)):
                self.base = m.group(1)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not become healthy in {self.startup_timeout} s:\n{self.log()}")

    def _healthy(self, base: str) -> bool:
        try:
            return requests.get(base.removesuffix("/fhir") + "/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def e2e_database_url(backend: str, folder: Path) -> str:
    """The database of an end-to-end deployment: a new SQLite file in ``folder`` for ``"sqlite"``, else the test
    PostgreSQL database (GATEWAY_TEST_DATABASE_URL), emptied first."""
    from tests.conftest import database_url  # conftest imports the app; only e2e tests need it here

    return database_url(backend, folder)


def post_fhir(base: str, path: str, body: bytes) -> requests.Response:
    """POST a FHIR JSON body to ``base`` + ``path`` (``""``: a transaction Bundle to the base)."""
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    return requests.post(f"{base}/{path}" if path else base, data=body, headers=headers, timeout=60)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a process that must be told its port before it starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 40.0, what: str = "condition"):
    """Poll ``check`` every 0.1 s until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
