"""A local OpenID Connect test issuer on 127.0.0.1 (plays NHS login in tests; never used in production).

Endpoints: ``/.well-known/openid-configuration``, ``/jwks``, ``/authorize`` (auto-approves the configured test
patient: no login page), ``/token`` (authorization_code with PKCE S256; client_secret_basic/post), and, for API
tests, ``access_token(...)`` to mint a bearer token directly. Tokens are RS256 JWTs carrying ``nhs_number``.

In process:   ``with OidcIssuer(client_id="web", client_secret="s", nhs_number="9434765919") as idp: idp.url``
As a process: ``python tests/oidc_issuer.py --port 0 --client-id web --client-secret s --nhs-number ...``
(prints ``listening on <port>``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import sys
import threading
import time
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify, redirect, request
from werkzeug.serving import make_server

KID = "test-issuer-1"


class OidcIssuer:
    """A tiny OIDC provider. ``nhs_number`` is who /authorize signs in (change it between tests)."""

    def __init__(self, *, client_id: str = "gateway-web", client_secret: str = "test-secret",
                 nhs_number: str | None = "9434765919", api_audience: str = "trial-gateway", port: int = 0,
                 client_public_key: object | None = None):
        self.client_id, self.client_secret = client_id, client_secret
        self.client_public_key = client_public_key  # set: private_key_jwt (RS512) as NHS login asks, not secrets
        self.nhs_number = nhs_number
        self.api_audience = api_audience
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.codes: dict[str, dict] = {}
        self.token_requests: list[dict] = []  # what the token endpoint was sent (tests assert PKCE was used)
        self._server = make_server("127.0.0.1", port, self._app(), threaded=True)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    # -- tokens ----------------------------------------------------------------------------------
    def jwks(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": KID, "alg": "RS256", "use": "sig"}]}

    def sign(self, claims: dict) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})

    def access_token(self, nhs_number: str | None = None, *, client_id: str = "nhs-app", exp_in: int = 600,
                     **extra) -> str:
        """A bearer token for the gateway's API (audience ``api_audience``), as an app would get one."""
        now = int(time.time())
        claims = {"iss": self.url, "aud": self.api_audience, "sub": secrets.token_hex(8), "iat": now,
                  "exp": now + exp_in, "client_id": client_id, "scope": "openid profile",
                  "nhs_number": nhs_number or self.nhs_number, **extra}
        return self.sign(claims)

    # -- the app ---------------------------------------------------------------------------------
    def _app(self) -> Flask:
        app = Flask("oidc-test-issuer")

        @app.get("/.well-known/openid-configuration")
        def discovery():
            return jsonify({"issuer": self.url, "authorization_endpoint": f"{self.url}/authorize",
                            "token_endpoint": f"{self.url}/token", "jwks_uri": f"{self.url}/jwks",
                            "response_types_supported": ["code"], "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                            "code_challenge_methods_supported": ["S256"],
                            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                                      "private_key_jwt"],
                            "token_endpoint_auth_signing_alg_values_supported": ["RS512"]})

        @app.get("/jwks")
        def jwks():
            return jsonify(self.jwks())

        @app.get("/authorize")
        def authorize():
            a = request.args
            if a.get("client_id") != self.client_id or a.get("response_type") != "code":
                return jsonify({"error": "unauthorized_client"}), 400
            if a.get("code_challenge_method") != "S256" or not a.get("code_challenge"):
                return jsonify({"error": "invalid_request", "error_description": "PKCE S256 is required"}), 400
            if not a.get("state") or not a.get("nonce") or not a.get("redirect_uri"):
                return jsonify({"error": "invalid_request", "error_description": "state, nonce, redirect_uri"}), 400
            if self.nhs_number is None:
                return redirect(f"{a['redirect_uri']}?{urlencode({'error': 'access_denied', 'state': a['state']})}")
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"nonce": a["nonce"], "challenge": a["code_challenge"],
                                "redirect_uri": a["redirect_uri"], "nhs": self.nhs_number, "scope": a.get("scope")}
            return redirect(f"{a['redirect_uri']}?{urlencode({'code': code, 'state': a['state']})}")

        @app.post("/token")
        def token():
            f = request.form
            self.token_requests.append(f.to_dict())
            if not self._client_ok(f):
                return jsonify({"error": "invalid_client"}), 401
            grant = self.codes.pop(f.get("code", ""), None)
            if f.get("grant_type") != "authorization_code" or grant is None:
                return jsonify({"error": "invalid_grant"}), 400
            verifier = f.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if digest != grant["challenge"] or f.get("redirect_uri") != grant["redirect_uri"]:
                return jsonify({"error": "invalid_grant", "error_description": "PKCE or redirect_uri"}), 400
            now = int(time.time())
            id_token = self.sign({"iss": self.url, "aud": self.client_id, "sub": secrets.token_hex(8), "iat": now,
                                  "exp": now + 300, "nonce": grant["nonce"], "nhs_number": grant["nhs"],
                                  "auth_time": now, "vot": "P9.Cp.Cd"})
            return jsonify({"access_token": self.access_token(grant["nhs"], client_id=self.client_id),
                            "token_type": "Bearer", "expires_in": 600, "id_token": id_token,
                            "scope": grant["scope"]})

        return app

    def _client_ok(self, form) -> bool:
        """client_secret_basic / _post, or private_key_jwt when a client public key is configured."""
        if self.client_public_key is not None:
            if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
                return False
            try:
                claims = jwt.decode(form.get("client_assertion", ""), self.client_public_key, algorithms=["RS512"],
                                    audience=f"{self.url}/token", options={"require": ["iss", "sub", "exp", "jti"]})
            except jwt.PyJWTError:
                return False
            return claims["iss"] == claims["sub"] == self.client_id
        cid, secret = form.get("client_id"), form.get("client_secret")
        if request.authorization and request.authorization.type == "basic":
            cid, secret = request.authorization.username, request.authorization.password
        return cid == self.client_id and secret == self.client_secret

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> OidcIssuer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> OidcIssuer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--client-id", default="gateway-web")
    ap.add_argument("--client-secret", default="test-secret")
    ap.add_argument("--nhs-number", default="9434765919")
    ap.add_argument("--api-audience", default="trial-gateway")
    args = ap.parse_args()
    issuer = OidcIssuer(client_id=args.client_id, client_secret=args.client_secret, nhs_number=args.nhs_number,
                        api_audience=args.api_audience, port=args.port)
    print(f"listening on {issuer.port}", flush=True)
    issuer._server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
