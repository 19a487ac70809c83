"""A throwaway PostgreSQL primary and its streaming replica on 127.0.0.1, from the OS's PostgreSQL binaries.

``initdb`` a primary in a temporary folder, start it on a free port, ``pg_basebackup -R`` a hot standby from it and
start that on another free port. Self-contained: the developer's own server is never touched or reconfigured.
PostgreSQL refuses to run as root, so under root (as ``.ci/run`` runs here) every server command runs as the
``postgres`` OS user (``runuser``) in a folder that user owns.

>>> with PgPair() as pair:
...     pair.primary_url, pair.replica_url
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.procs import free_port

BIN = Path(os.environ.get("GATEWAY_PG_BIN", "/usr/lib/postgresql/15/bin"))
_TOOLS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
_OS_USER = "postgres"


def missing_reason() -> str | None:
    """Why a pair cannot be started here (the reason to skip with), or None."""
    absent = [t for t in _TOOLS if not (BIN / t).exists()]
    if absent:
        return f"PostgreSQL server binaries not found in {BIN} (missing: {', '.join(absent)}; set GATEWAY_PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_OS_USER)
        except KeyError:
            return f"running as root and there is no '{_OS_USER}' OS user to run the PostgreSQL servers as"
    return None


class PgPair:
    """A primary and a streaming hot standby; ``primary_url`` and ``replica_url`` are SQLAlchemy URLs."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gateway-pgpair-"))
        self.primary_dir = self.root / "primary"
        self.replica_dir = self.root / "replica"
        self.primary_port = 0
        self.replica_port = 0
        self._started: list[Path] = []
        self._as_root = os.geteuid() == 0
        if self._as_root:  # the servers' own user must own their folders
            user = pwd.getpwnam(_OS_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(BIN / tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", _OS_USER, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def _server_options(self, port: int) -> str:
        # fsync off: a test cluster, thrown away; sockets in our folder, not the system's /var/run/postgresql
        return (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c wal_level=replica -c max_wal_senders=4 "
                "-c hot_standby=on -c wal_receiver_status_interval=1")

    def _start(self, data: Path, port: int) -> None:
        log = str(self.root / f"{data.name}.log")
        self._run("pg_ctl", "-D", str(data), "-o", self._server_options(port), "-l", log, "-w", "-t", "60", "start")
        self._started.append(data)

    def start(self) -> PgPair:
        try:
            self._run("initdb", "-D", str(self.primary_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")
            self.primary_port = free_port()
            self._start(self.primary_dir, self.primary_port)
            self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                      "-D", str(self.replica_dir), "-R", "-X", "stream", "-c", "fast", "--no-sync")
            self.replica_port = free_port()
            self._start(self.replica_dir, self.replica_port)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def primary_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.primary_port}/postgres"

    @property
    def replica_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.replica_port}/postgres"

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for data in reversed(self._started):  # the standby first
            # already gone: the folder is removed below either way
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        self._started.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgPair:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
