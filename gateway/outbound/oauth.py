"""authlib's OAuth 2 / OpenID Connect calls through the one outbound client (``HttpClient``).

authlib makes the provider calls of patient sign-in itself (discovery document, JWKS, code exchange) with a
``requests`` session of its own class. ``OutboundOAuth2Session`` is that class with one change: every request
it would send goes through an ``HttpClient`` instead, so those calls get the allow-list (checked before a byte
is sent), the timeouts, no redirects, the typed errors, the bounded retries (only for calls safe to repeat:
a code exchange is never sent twice) and the one log line (method, path, status, time; never a query string,
a body or a token). authlib still builds each request (client authentication, PKCE verifier) and reads each
answer; a non-2xx answer is returned to it, as ``requests`` would, so its own error handling is unchanged.

It is given to authlib as the session class of the registered client, with the ``HttpClient`` in
``client_kwargs`` (``outbound=...``), which authlib passes to every session it creates::

    class App(FlaskOAuth2App):
        client_cls = OutboundOAuth2Session
    oauth.register("patient", client_cls=App, client_kwargs={"outbound": http, ...}, ...)
"""

from __future__ import annotations

import requests
from authlib.integrations.base_client import MissingTokenError
from authlib.integrations.requests_client import OAuth2Session

from gateway.outbound.http import HttpClient

# The keyword arguments authlib's requests (metadata, JWKS, token endpoint) carry; anything else is refused
# loudly rather than dropped (a proxy, a verify=False), so a new authlib cannot bypass the outbound client.
_PASSED = frozenset({"params", "data", "headers", "timeout"})
_IGNORED = frozenset({"allow_redirects"})  # redirects are never followed; others are accepted only when None


class OutboundOAuth2Session(OAuth2Session):
    """authlib's requests session, sending through ``outbound`` (an ``HttpClient``)."""

    def __init__(self, *args, outbound: HttpClient, **kwargs):
        self.outbound = outbound
        super().__init__(*args, **kwargs)

    def request(self, method, url, withhold_token=False, auth=None, **kwargs) -> requests.Response:
        # as authlib's own request(): the access token signs the request unless withheld or auth is given
        if not withhold_token and auth is None:
            if not self.token:
                raise MissingTokenError()
            auth = self.token_auth
        unknown = {k for k, v in kwargs.items() if k not in _PASSED | _IGNORED and v is not None}
        if unknown:
            raise TypeError(f"outbound OAuth request: unsupported argument(s) {sorted(unknown)}")
        timeout = kwargs.get("timeout") or self.default_timeout
        headers = {**self.headers, **(kwargs.get("headers") or {})}
        return self.outbound.send(method.upper(), url, params=kwargs.get("params"), data=kwargs.get("data"),
                                  headers=headers, auth=auth, check=False,
                                  timeout=tuple(timeout) if isinstance(timeout, list | tuple) else None)


__all__ = ["OutboundOAuth2Session"]
