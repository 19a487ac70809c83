"""Security of the HTTP API, assembled in one place (``init_app``) from modules split by purpose:

- ``authstate``: the shared state (clients, tokens, rate limit, audit switch), public paths, this request's Access;
- ``authz``: request hooks (route authorization, rate limit, tenant stamp) and the store's write hooks;
- ``tokens``: ``/auth/token``, ``/auth/jwks`` and SMART discovery;
- ``audit``: which responses the audit trail records;
- ``erasure``: ``POST /admin/erasure``;
- ``visibility``: the helpers the FHIR views call to read, filter and write as the caller.

Every request's caller is resolved by ``gateway.api.caller.resolve_caller``; views filter what they return
through ``visibility``; writes are checked inside the store transaction by ``Access.write_hook``.
"""

from __future__ import annotations

from flask import Flask

from gateway.api import authz, erasure, tokens
from gateway.api.authstate import EXT, build_state
from gateway.fhir.limits import configure as configure_search_limits


def init_app(app: Flask) -> None:
    """Security state, the request hooks and the /auth and /admin/erasure routes (the store's security hooks,
    gateway.security.guards, are installed by the composition root, gateway/compose.py)."""
    settings = app.config["SETTINGS"]
    app.extensions[EXT] = build_state(settings, app.extensions["gateway.store"],
                                      app.extensions["gateway.root"].clients)
    configure_search_limits(settings.max_search_value_length, settings.max_search_parameters)
    authz.install_request_hooks(app)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(erasure.bp)
