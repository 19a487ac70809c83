"""Flask app factory: the service graph from the composition root (gateway/compose.py), then each API part's
routes and request hooks. The store's write hooks are the root's, not the API's."""

from __future__ import annotations

import logging

from flask import Flask, g, request

from gateway.api import errors, ops, read_routing
from gateway.api.caller import resolve_caller
from gateway.compose import build
from gateway.config import Settings
from gateway.store.clock import now_iso

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


def create_app(settings: Settings | None = None) -> Flask:
    """Build the gateway. ``settings`` overrides the environment (tests pass their own)."""
    settings = settings or Settings.from_env()
    app = Flask("gateway", instance_path=str(settings.instance_path.resolve()))
    app.config["SETTINGS"] = settings
    app.config["STARTED_AT"] = now_iso()
    app.config["MAX_CONTENT_LENGTH"] = None  # we enforce the limit ourselves, with an OperationOutcome
    app.json.sort_keys = False

    gw = build(settings)  # the service graph (gateway/compose.py), the same as the CLI's and the worker's
    app.extensions["gateway.root"] = gw
    app.extensions["gateway.store"] = gw.store
    app.extensions["gateway.service"] = gw.service
    app.extensions["gateway.outbound"] = gw.destinations
    app.extensions["gateway.topics"] = gw.topics
    read_routing.init_app(app, gw.store)  # GET searches and reads, $match, $candidates: the read database

    errors.init_app(app)
    ops.init_app(app)  # first hook: the request id (X-Request-ID, validated), one JSON log line, metrics

    @app.before_request
    def _identify():
        g.caller = resolve_caller(request)

    @app.after_request
    def _headers(resp):
        for k, v in _SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    from gateway.api import fhir_rest

    app.register_blueprint(fhir_rest.bp)
    from gateway.api import subscriptions

    subscriptions.init_app(app)
    from gateway.api import matching_ops

    matching_ops.init_app(app)
    from gateway.api import contact

    contact.init_app(app)  # outbound: POST /fhir/ResearchSubject, /admin/outbox
    from gateway.api import auth

    auth.init_app(app)  # security: tokens, route authorization, rate limit, audit, /auth, /admin/erasure
    from gateway.api import patient

    patient.init_app(app)  # patient sign-in (OIDC) and actions: /patient/login, /patient/contact-requests, alerts
    __import__("gateway.api.ingest", fromlist=["init_app"]).init_app(app)  # mapping: /ingest, $translate
    __import__("gateway.api.subsumes")  # terminology: registers CodeSystem/$subsumes
    __import__("gateway.web", fromlist=["init_app"]).init_app(app)  # patient pages: /, /trials (gateway/web)
    if logging.getLogger("gateway").level == logging.NOTSET:  # GATEWAY_LOG_LEVEL (observability.logs) decides
        logging.getLogger("gateway").setLevel(logging.INFO)
    return app
