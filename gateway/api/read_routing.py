"""Which requests may read from the read database (``GATEWAY_READ_DATABASE_URL``, a streaming replica).

Only FHIR requests that write nothing whose answer a client expects to reflect its own latest write: GET and HEAD
under /fhir (searches, reads, vreads, history, ``$match``, ``$candidates``, other read-only operations), and the
POST forms of a search (``_search``) and of ``$match``. Everything else (create, update, patch, delete,
conditional writes, transaction and batch Bundles, contact requests, the patient pages) reads the primary, and
so does every read inside a write transaction (``Store.write``). Lag semantics: docs/deployment.md.
"""

from __future__ import annotations

from flask import Flask, g, request

from gateway.store.repo import Store

_READ_METHODS = frozenset({"GET", "HEAD"})
_READ_POSTS = ("/_search", "/$match")


def replica_ok() -> bool:
    """True when the current request's reads may be as old as the replica's replay lag."""
    if request.blueprint != "fhir":
        return False
    if request.method in _READ_METHODS:
        return True
    return request.method == "POST" and request.path.rstrip("/").endswith(_READ_POSTS)


def init_app(app: Flask, store: Store) -> None:
    """Route this app's replica-safe requests to ``store``'s read engine (nothing when it has none)."""
    if store.read_engine is None:
        return

    @app.before_request
    def _route_reads():
        if replica_ok():
            g.replica_reads = store.replica_reads()
            g.replica_reads.__enter__()

    @app.teardown_request
    def _end_route(_exc):
        cm = g.pop("replica_reads", None)
        if cm is not None:
            cm.__exit__(None, None, None)
