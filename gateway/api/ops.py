"""Operations endpoints and per-request bookkeeping: request ids, one JSON log line and metrics per request,
``/healthz`` (alive), ``/readyz`` (able to serve) and ``/metrics`` (Prometheus text format).

The request id is the caller's ``X-Request-ID`` when it is safe (1-128 of ``A-Za-z0-9._:-``), else a new
UUID; it is echoed in the response, carried by every log line of the request and recorded in the AuditEvent.
``/metrics`` is authorized like ``/admin/*`` (gateway.api.authz): administrators, i.e. in development mode the
local caller on loopback, otherwise a client with the admin role. ``/healthz`` and ``/readyz`` are public.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from http import HTTPStatus

from flask import Flask, Response, current_app, g, jsonify, request
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text

from gateway.observability import logs, metrics
from gateway.outbound import outbox
from gateway.store import schema
from gateway.store.repo import Store

log = logging.getLogger("gateway.request")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # others count as OTHER
UNMATCHED = "<unmatched>"  # the route label of a request no rule matched (404, or 405 on a known path)
# Loaded at start-up by each part's init_app; readiness says which one is missing.
DATA_EXTENSIONS = {"gateway.mappings": "mappings", "gateway.topics": "subscription topics",
                   "gateway.outbound": "hospital endpoints", "gateway.security": "clients"}


def init_app(app: Flask) -> None:
    """Register the request hooks first (so every later hook sees the request id) and the three endpoints."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.teardown_request(_teardown)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/readyz", "readyz", readyz)
    app.add_url_rule("/metrics", "metrics", metrics_view)


# -- per request -------------------------------------------------------------------------------
def _start() -> None:
    g.request_id = logs.valid_request_id(request.headers.get("X-Request-ID")) or logs.new_request_id()
    g.request_started = time.perf_counter()
    g.request_id_token = logs.request_id_var.set(g.request_id)


def _finish(resp: Response) -> Response:
    resp.headers["X-Request-ID"] = g.get("request_id", "")
    started = g.get("request_started")
    if started is None:
        return resp
    seconds = time.perf_counter() - started
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    status = str(resp.status_code)
    method = request.method if request.method in _METHODS else "OTHER"
    metrics.REQUESTS.labels(method=method, route=route, status=status).inc()
    metrics.REQUEST_SECONDS.labels(method=method, route=route, status=status).observe(seconds)
    op = g.get("operation")
    name = metrics.operation_label(*op) if isinstance(op, tuple) and len(op) == 2 else None
    if name is not None:
        metrics.OPERATION_SECONDS.labels(operation=name, status=status).observe(seconds)
    caller = g.get("caller")
    log.log(logging.WARNING if resp.status_code >= 500 else logging.INFO, "request", extra={
        "method": method, "path": logs.redact_target(request.path, request.query_string), "route": route,
        "status": resp.status_code, "duration_ms": round(seconds * 1000, 1),
        "role": getattr(caller, "role", None), "interaction": g.get("interaction")})
    return resp


def _teardown(_exc) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        logs.request_id_var.reset(token)


# -- endpoints ---------------------------------------------------------------------------------
def healthz():
    """The process is alive and answering (no dependency checked: restart only what is really stuck)."""
    return jsonify({"status": "ok"})


def readyz():
    """200 when the database answers, the schema is at this code's migration and the data files are loaded;
    else 503 naming what is not ready (no connection strings, no error text that could hold secrets)."""
    checks: dict[str, str] = {}
    store: Store = current_app.extensions["gateway.store"]
    expected = max(v for v, _ in schema.MIGRATIONS)
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
            version = conn.execute(text("SELECT MAX(version) FROM schema_version")).scalar()
        checks["schema"] = "ok" if version == expected else f"at version {version}, this code needs {expected}"
    except Exception as exc:  # a probe reports, it never raises: any driver error means "not ready"
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        checks.setdefault("database", "unreachable")
        checks.setdefault("schema", "unknown")
    missing = [label for key, label in DATA_EXTENSIONS.items() if current_app.extensions.get(key) is None]
    try:
        from gateway.matching.terms import default_terminology

        default_terminology()  # loaded once per process; the first probe warms it before traffic arrives
    except Exception as exc:  # a broken terminology file: not ready, and the operators are told why
        log.warning("readiness: terminology not loaded: %s", type(exc).__name__)
        missing.append("terminology")
    checks["data"] = "ok" if not missing else "not loaded: " + ", ".join(missing)
    ready = all(v == "ok" for v in checks.values())
    resp = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    resp.status_code = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
    return resp


def metrics_view():
    """Every process's counters and histograms, then the outbox backlog read from the database now."""
    store: Store = current_app.extensions["gateway.store"]
    body = metrics.exposition(lambda: _outbox_families(store))
    return Response(body, mimetype=None, content_type=metrics.CONTENT_TYPE_LATEST)


def _outbox_families(store: Store):
    depth = GaugeMetricFamily("gateway_outbox_jobs", "Outbox jobs not delivered, by kind and state "
                              "(pending, in-progress, dead)", labels=["kind", "state"])
    age = GaugeMetricFamily("gateway_outbox_oldest_pending_age_seconds",
                            "Age of the oldest pending job (since it was enqueued), by kind", labels=["kind"])
    now = datetime.now(UTC)
    for kind, state, n, oldest in outbox.backlog(store):
        depth.add_metric([kind, state], n)
        if state == "pending" and oldest:
            age.add_metric([kind], max(0.0, (now - datetime.fromisoformat(oldest)).total_seconds()))
    dead = GaugeMetricFamily("gateway_outbox_dead_jobs", "Dead jobs (given up; see gateway outbox list "
                             "--state dead) by kind and destination", labels=["kind", "destination"])
    totals: dict[tuple[str, str], int] = {}
    for kind, destination, n in outbox.dead_by_destination(store):
        key = (kind, metrics.destination_label(destination))
        totals[key] = totals.get(key, 0) + n
    for key, n in sorted(totals.items()):
        dead.add_metric(list(key), n)
    return [depth, age, dead]
