"""Core commands: serve, load, db upgrade."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import click
import orjson
from tqdm import tqdm

from gateway.cli import settings as cli_settings
from gateway.compose import build
from gateway.fhir.errors import FhirError
from gateway.observability import logs
from gateway.store.engine import make_engine
from gateway.store.interactions import FhirService
from gateway.store.schema import migrate

log = logging.getLogger("gateway.serve")


def register(cli: click.Group) -> None:
    cli.add_command(serve)
    cli.add_command(load)
    cli.add_command(db)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on (0: any free port).")
@click.option("--demo/--no-demo", default=False, show_default=True,
              help="The demo story: also start a worker and stand-ins for Leeds and an alert receiver on "
                   "127.0.0.1 with a development configuration, load fixtures/demo, print the URLs and the demo "
                   "patient's id (see README.md).")
def serve(host: str, port: int, demo: bool) -> None:
    """Run the gateway (development server; use gunicorn in production, see the Dockerfile)."""
    if demo:  # --demo: this process supervises the gateway, a worker and the stand-ins (gateway/demo/stack.py)
        from gateway.demo.stack import run_demo

        sys.exit(run_demo(host, port, cli_settings()))
    from werkzeug.serving import make_server

    from gateway.api.app import create_app
    from gateway.observability.logs import QuietRequestHandler
    from gateway.security.devmode import check_bind

    settings = cli_settings()
    # JSON lines on stdout; one line a request, from the app (no werkzeug line)
    logs.configure(settings.observability.log_level)
    app = create_app(settings)
    for line in check_bind(host, bool(app.extensions["gateway.security"].registry), settings.security.insecure_dev):
        log.warning(line)  # development mode: loopback only unless GATEWAY_INSECURE_DEV=true
    server = make_server(host, port, app, threaded=True, request_handler=QuietRequestHandler)
    bound_port = server.server_port
    log.info("database: %s", _redact(settings.store.database_url))
    log.info("FHIR base URL: http://%s:%d/fhir", host, bound_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def load(paths: tuple[Path, ...], quiet: bool) -> None:
    """Load FHIR JSON resources, Bundles and NDJSON files (or directories of them).

    Transaction and batch Bundles are processed as such; other Bundles (collection, searchset)
    load each entry. Resources with an id are created-or-updated under that id; others are created.
    """
    # the REST API's service graph, every write hook included (Subscription checks, outbox...), so that loaded
    # files obey the same rules as requests
    gw = build(cli_settings())
    try:
        stats = load_paths(gw.service, list(paths), progress=not quiet)
    finally:
        gw.close()  # close pooled connections before exit (PostgreSQL)
    click.echo(_summary(stats))
    for reason in stats.get("_reasons", [])[:50]:
        click.echo(f"  failed: {reason}", err=True)
    if stats["failed"]:
        sys.exit(1)


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the current version."""
    engine = make_engine(cli_settings().store.database_url)
    try:
        applied = migrate(engine)
    finally:
        engine.dispose()
    click.echo(f"applied migrations: {applied}" if applied else "schema is up to date")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def _summary(stats: dict) -> str:
    return ", ".join(f"{k} {stats.get(k, 0)}" for k in ("created", "updated", "unchanged", "failed"))


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*") if x.suffix in (".json", ".ndjson") and x.is_file()))
        else:
            out.append(p)
    return out


def _items(path: Path) -> Iterator[tuple[str, object]]:
    if path.suffix == ".ndjson":
        with path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield f"{path.name}:{n}", orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        yield f"{path.name}:{n}", exc
    else:
        try:
            yield path.name, orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            yield path.name, exc


def load_paths(svc: FhirService, paths: list[Path], progress: bool = True) -> dict:
    """Load files into the store; return counts of created/updated/unchanged/failed and reasons."""
    stats: Counter = Counter()
    reasons: list[str] = []
    files = _files(paths)
    with tqdm(total=len(files), unit="file", disable=not progress, file=sys.stderr) as bar:
        for path in files:
            for where, data in _items(path):
                _load_one(svc, where, data, stats, reasons)
            bar.update(1)
            bar.set_postfix(created=stats["created"], failed=stats["failed"])
    result: dict = dict(stats)
    for k in ("created", "updated", "unchanged", "failed"):
        result.setdefault(k, 0)
    result["_reasons"] = reasons
    return result


def _load_one(svc: FhirService, where: str, data: object, stats: Counter, reasons: list[str]) -> None:
    if isinstance(data, Exception):
        stats["failed"] += 1
        reasons.append(f"{where}: not valid JSON: {data}")
        return
    try:
        if isinstance(data, dict) and data.get("resourceType") == "Bundle" and data.get("type") in (
                "transaction", "batch"):
            _, results = svc.run_bundle(data)
            for i, res in enumerate(results):
                if res.write is not None:
                    stats[res.write.outcome] += 1
                elif res.outcome is not None:
                    stats["failed"] += 1
                    diag = res.outcome.get("issue", [{}])[0].get("diagnostics", str(res.status))
                    reasons.append(f"{where} entry {i}: {diag}")
            return
        if isinstance(data, dict) and data.get("resourceType") == "Bundle" and data.get("type") in (
                "collection", "searchset", "history", "document"):
            for i, entry in enumerate(data.get("entry") or []):
                _load_one(svc, f"{where} entry {i}", (entry or {}).get("resource"), stats, reasons)
            return
        if isinstance(data, dict) and data.get("id"):
            result = svc.update(data.get("resourceType", ""), data["id"], data)
        else:
            result = svc.create(data)  # type: ignore[arg-type]
        stats[result.outcome] += 1
    except FhirError as exc:
        stats["failed"] += 1
        reasons.append(f"{where}: {exc.diagnostics}")
