"""POST /ingest/<mapping-name>[?dry-run=true]: non-FHIR records in, a batch-response (or collection) Bundle out."""

from __future__ import annotations

import logging
import uuid
from collections import Counter

from flask import Blueprint, Flask, current_app, request

from gateway.api.http import fhir_response, read_body
from gateway.fhir.errors import InvalidResource, NotFound
from gateway.ingest import ingest
from gateway.mapping import MappingFileError, MappingRegistry, PayloadError, UnknownMapping, map_payload
from gateway.mapping.ingest import dry_run_bundle
from gateway.mapping.registry import PROJECT_MAPPINGS
from gateway.observability import metrics
from gateway.terminology import default_terminology

log = logging.getLogger("gateway.ingest")
bp = Blueprint("ingest", __name__, url_prefix="/ingest")
_KEY = "gateway.mappings"


def init_app(app: Flask) -> None:
    """Load every mapping file once; a broken one stops start-up with a message naming file and field."""
    folder = app.config["SETTINGS"].mappings_path
    if not folder.is_dir():
        log.warning("GATEWAY_MAPPINGS_PATH %s is not a folder; using the project's %s", folder, PROJECT_MAPPINGS)
        folder = PROJECT_MAPPINGS
    try:
        app.extensions[_KEY] = MappingRegistry(folder.resolve())
    except MappingFileError:
        app.extensions["gateway.store"].engine.dispose()  # the app will not start: release its connections
        raise
    from gateway.api import translate  # noqa: F401  (registers ConceptMap/$translate)

    app.register_blueprint(bp)


def registry() -> MappingRegistry:
    return current_app.extensions[_KEY]


def _flag(name: str) -> bool:
    return request.args.get(name, "false").strip().lower() in ("true", "1", "yes")


@bp.post("/<name>")
def ingest_view(name: str):
    try:
        mapping = registry().get(name)
    except UnknownMapping as exc:
        raise NotFound(str(exc.args[0]), "mapping-name") from None
    raw = read_body()
    try:
        records = map_payload(mapping, raw, conceptmaps=registry().conceptmaps)
    except PayloadError as exc:
        raise InvalidResource(f"{name}: {exc}", "body") from None
    if _flag("dry-run"):
        return fhir_response({**dry_run_bundle(records), "id": str(uuid.uuid4())})
    # MeSH terms and ancestors of stored studies feed the running terminology (is-a for matching).
    results = ingest(current_app.extensions["gateway.service"], records,
                     hierarchy_sink=default_terminology().add_registry_hierarchy)
    for outcome, n in Counter(r.outcome for r in results).items():
        metrics.IMPORTS.labels(mapping=metrics.mapping_label(name), outcome=outcome).inc(n)
    return fhir_response({"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "batch-response",
                          "entry": [r.bundle_entry() for r in results]})
