"""GET /admin/outbox: delivery state of outbound jobs (filter by state, resource, kind, destination)."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from gateway.fhir.errors import Forbidden, InvalidResource
from gateway.outbound import outbox

bp = Blueprint("outbox", __name__, url_prefix="/admin")


@bp.get("/outbox")
def list_outbox():
    caller = g.get("caller")
    if caller is None or not caller.is_admin:
        raise Forbidden("The outbox is for administrators", "outbox")
    state = request.args.get("state") or None
    if state and state not in outbox.STATES:
        raise InvalidResource(f"state must be one of {', '.join(outbox.STATES)}", "state")
    try:
        limit = min(1000, int(request.args.get("_count", 100)))
        offset = max(0, int(request.args.get("_offset", 0)))
    except ValueError:
        raise InvalidResource("_count and _offset must be integers", "_count") from None
    store = current_app.extensions["gateway.store"]
    total, jobs = outbox.list_jobs(store, state=state, resource=request.args.get("resource") or None,
                                   kind=request.args.get("kind") or None,
                                   destination=request.args.get("destination") or None, limit=limit, offset=offset)
    items = []
    for job in jobs:
        item = job.to_json()
        item.pop("payload", None)  # holds the NHS number: not for listings
        if request.args.get("attempts") in ("1", "true"):
            item["attempts_log"] = outbox.attempts_of(store, job.id)
        items.append(item)
    return jsonify({"total": total, "counts": outbox.counts(store), "jobs": items})
