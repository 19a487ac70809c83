"""Bearer tokens: client assertions at /auth/token (private_key_jwt), our access tokens, external IdP tokens.

Client assertion (SMART Backend Services / NHS signed JWT): RS384, ES384 or RS512 only; ``iss`` =
``sub`` = client id; ``aud`` = the token endpoint URL; ``exp`` at most 5 minutes ahead; ``jti`` used
once (kept in the ``used_jtis`` table, so a replay is refused by every process).
Access tokens we issue are JWTs signed with GATEWAY_TOKEN_SIGNING_KEY (RSA -> RS384, EC P-384 -> ES384).
Tokens of an external identity provider are verified against its JWKS (GATEWAY_IDP_JWKS_URL or _FILE).
Verified tokens are cached until they expire, so a request pays one dict lookup.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from gateway.fhir.nhs_number import is_valid_nhs_number, normalise_nhs_number
from gateway.security.clients import Client, ClientRegistry
from gateway.security.principal import Caller
from gateway.security.scopes import narrow
from gateway.store import schema

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS384", "ES384", "RS512")
IDP_ROLES = frozenset({"patient-app"})  # the roles an identity provider's tokens may act as
IDP_ALGS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512")
ACCESS_TOKEN_SECONDS = 300
MAX_ASSERTION_LIFETIME = 300
CLOCK_SKEW = 10  # seconds of tolerated clock difference between client and gateway
JWKS_CACHE_SECONDS = 3600


class OAuthError(Exception):
    """An error of the token endpoint, rendered as RFC 6749 JSON: {"error", "error_description"}."""

    def __init__(self, error: str, description: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class TokenRejected(Exception):
    """A bearer token that does not verify: the API answers 401 with an OperationOutcome."""


class NotConfigured(Exception):
    """Token issuing needs GATEWAY_TOKEN_SIGNING_KEY."""


@dataclass(frozen=True)
class SigningKey:
    private: object
    alg: str
    kid: str
    public_jwk: dict

    @staticmethod
    def from_pem(pem: str) -> SigningKey:
        """PEM private key -> SigningKey; RSA (>= 2048 bits) signs RS384, EC P-384 signs ES384."""
        try:
            key = serialization.load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise NotConfigured(f"GATEWAY_TOKEN_SIGNING_KEY is not a usable unencrypted PEM private key: {exc}"
                                ) from None
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 2048:
                raise NotConfigured("GATEWAY_TOKEN_SIGNING_KEY: RSA keys need at least 2048 bits")
            alg, jwk = "RS384", json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
            alg, jwk = "ES384", json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        else:
            raise NotConfigured("GATEWAY_TOKEN_SIGNING_KEY must be an RSA or EC P-384 private key")
        # RFC 7638 thumbprint as the key id.
        members = {k: jwk[k] for k in (("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y"))}
        kid = jwt.utils.base64url_encode(hashlib.sha256(
            json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()).decode()
        jwk.update(kid=kid, alg=alg, use="sig")
        return SigningKey(key, alg, kid, jwk)


# GET a URL -> its parsed JSON, raising on any failure: the outbound client's ``get_json``, passed in by the API
# (security does not import outbound), so the fetch has its timeouts, allow-list and log line.
FetchJson = Callable[[str], object]


class _JwksSource:
    """The identity provider's public keys, fetched through ``fetch`` (or read from a file) and cached."""

    def __init__(self, url: str | None, path: Path | None, fetch: FetchJson | None = None):
        self.url, self.path, self.fetch = url, path, fetch
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = not self._keys or now - self._fetched > JWKS_CACHE_SECONDS
        rotated = kid not in self._keys and now - self._fetched > 60  # key rotation: refetch at most once a minute
        if stale or rotated:
            self._load()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid or "")

    def _load(self) -> None:
        with self._lock:
            try:
                if self.path is None and self.fetch is None:
                    raise LookupError("no outbound client to fetch the JWKS URL with")
                data = json.loads(self.path.read_text()) if self.path is not None else self.fetch(self.url)
            except Exception as exc:  # file, network, status or JSON: whatever failed, the token cannot be checked
                raise TokenRejected(f"the identity provider's keys cannot be loaded ({type(exc).__name__})") from None
            keys = {}
            for k in data.get("keys", []) if isinstance(data, dict) else []:
                try:
                    jwk = jwt.PyJWK(k)
                except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                    continue  # keys of types or algorithms we do not use
                keys[jwk.key_id or ""] = jwk
            self._keys, self._fetched = keys, time.monotonic()


def _unverified(token: str) -> tuple[dict, dict]:
    """A JWT's header and claims before its signature is checked (they name the key): jwt.PyJWTError if not a JWT."""
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


class TokenService:
    """Issues and verifies tokens for one app. ``registry`` holds the clients (empty: development mode)."""

    def __init__(self, registry: ClientRegistry, engine: Engine, *, signing_pem: str | None = None,
                 idp_jwks_url: str | None = None, idp_jwks_file: Path | None = None,
                 idp_issuer: str | None = None, idp_audience: str | None = None,
                 nhs_number_claim: str = "nhs_number", fetch_json: FetchJson | None = None):
        """``fetch_json``: how the identity provider's JWKS URL is read (the outbound client's ``get_json``)."""
        self.registry = registry
        self.engine = engine
        self.signing: SigningKey | None = SigningKey.from_pem(signing_pem) if signing_pem else None
        self.idp = _JwksSource(idp_jwks_url, idp_jwks_file, fetch_json) if (idp_jwks_url or idp_jwks_file) else None
        self.idp_issuer, self.idp_audience = idp_issuer, idp_audience
        self.nhs_number_claim = nhs_number_claim
        self._cache: dict[str, tuple[Caller, float]] = {}
        self._purged = 0.0

    # -- issuing -------------------------------------------------------------------------------
    def issue(self, form: dict[str, list[str]], token_url: str, issuer: str, audience: str) -> dict:
        """A client_credentials request (form fields, each a list of values) -> the token response.

        Every malformed or forged request is an OAuthError (RFC 6749 section 5.2), whatever the configuration:
        the client is authenticated before the gateway says it cannot issue (NotConfigured, no signing key).
        """
        repeated = sorted(k for k, v in form.items() if len(v) > 1)
        if repeated:
            raise OAuthError("invalid_request", f"parameters may not be repeated: {', '.join(repeated)}")
        fields = {k: v[0] for k, v in form.items()}
        grant = fields.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required (client_credentials)")
        if grant != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if fields.get("client_assertion_type") != ASSERTION_TYPE or not fields.get("client_assertion"):
            raise OAuthError("invalid_client", f"client authentication needs client_assertion_type={ASSERTION_TYPE} "
                             "and a client_assertion (private_key_jwt)", HTTPStatus.UNAUTHORIZED)
        client, jti, exp = self._check_assertion(fields["client_assertion"], token_url)
        if client.role == "patient-app":
            raise OAuthError("unauthorized_client", "patient apps sign in through the identity provider, not "
                             "with client credentials")
        requested = (fields.get("scope") or "").split()
        granted = narrow(requested, client.scopes) if requested else client.scopes
        if requested and not granted:
            raise OAuthError("invalid_scope", f"none of the requested scopes is allowed for {client.client_id}")
        if self.signing is None:
            raise NotConfigured("The token endpoint is not configured: set GATEWAY_TOKEN_SIGNING_KEY (a PEM "
                                "private key) or GATEWAY_TOKEN_SIGNING_KEY_FILE")
        self._use_jti(client.client_id, jti, exp)
        now = int(time.time())
        claims = {"iss": issuer, "sub": client.client_id, "aud": audience, "iat": now,
                  "exp": now + ACCESS_TOKEN_SECONDS, "jti": str(uuid.uuid4()), "scope": " ".join(sorted(granted))}
        token = jwt.encode(claims, self.signing.private, algorithm=self.signing.alg,
                           headers={"kid": self.signing.kid})
        return {"access_token": token, "token_type": "bearer", "expires_in": ACCESS_TOKEN_SECONDS,
                "scope": claims["scope"]}

    def verify_assertion(self, assertion: str, token_url: str) -> Client:
        """Check a private_key_jwt client assertion; record its jti. -> the client."""
        client, jti, exp = self._check_assertion(assertion, token_url)
        self._use_jti(client.client_id, jti, exp)
        return client

    def _check_assertion(self, assertion: str, token_url: str) -> tuple[Client, str, float]:
        """A private_key_jwt client assertion -> (client, jti, exp); OAuthError invalid_client otherwise."""
        def fail(why: str) -> OAuthError:
            return OAuthError("invalid_client", f"client assertion rejected: {why}", HTTPStatus.UNAUTHORIZED)

        try:
            header, unverified = _unverified(assertion)
        except jwt.PyJWTError:
            raise fail("not a JWT") from None
        alg = header.get("alg")
        if alg not in ASSERTION_ALGS:
            raise fail(f"alg {alg!r} is not accepted (use {', '.join(ASSERTION_ALGS)})")
        client = self.registry.get(str(unverified.get("iss")))
        if client is None or not client.keys:
            raise fail("unknown client (iss)")
        key = client.key(header.get("kid"))
        if key is None:
            raise fail(f"unknown key id {header.get('kid')!r} for client {client.client_id}")
        try:
            claims = jwt.decode(assertion, key.key, algorithms=[alg], audience=token_url, issuer=client.client_id,
                                leeway=CLOCK_SKEW, options={"require": ["iss", "sub", "aud", "exp", "jti"]})
        except jwt.ExpiredSignatureError:
            raise fail("expired") from None
        except jwt.InvalidAudienceError:
            raise fail(f"aud must be the token endpoint {token_url}") from None
        except jwt.PyJWTError as exc:
            raise fail(str(exc)) from None
        if claims["sub"] != client.client_id:
            raise fail("sub must equal iss (the client id)")
        now = time.time()
        if not isinstance(claims["exp"], int | float) or claims["exp"] > now + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
            raise fail("exp is more than 5 minutes ahead")
        return client, str(claims["jti"]), float(claims["exp"])

    def _use_jti(self, client_id: str, jti: str, exp: float) -> None:
        t = schema.used_jtis
        expires = datetime.fromtimestamp(exp + CLOCK_SKEW, UTC).isoformat()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t).values(client_id=client_id, jti=jti[:255], expires_at=expires))
        except IntegrityError:
            raise OAuthError("invalid_client", "client assertion rejected: jti was already used (replay)",
                             HTTPStatus.UNAUTHORIZED) from None
        if time.monotonic() - self._purged > 600:
            self._purged = time.monotonic()
            with self.engine.begin() as conn:
                conn.execute(delete(t).where(t.c.expires_at < datetime.now(UTC).isoformat()))

    def public_jwks(self) -> dict:
        return {"keys": [self.signing.public_jwk] if self.signing else []}

    # -- verifying bearer tokens ---------------------------------------------------------------
    def cached(self, token: str) -> Caller | None:
        """The Caller of a token verified before and not yet expired (one dict lookup), else None."""
        hit = self._cache.get(token)
        if hit is not None:
            if hit[1] > time.time():
                return hit[0]
            self._cache.pop(token, None)
        return None

    def caller_for(self, token: str, issuer: str, audience: str) -> Caller:
        """A bearer token -> the Caller; TokenRejected when it does not verify. Cached until expiry."""
        hit = self.cached(token)
        if hit is not None:
            return hit
        now = time.time()
        caller, exp = self._verify(token, issuer, audience)
        if len(self._cache) > 50_000:  # bound memory: expired and surplus entries go
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) > 50_000:
                self._cache.clear()
        self._cache[token] = (caller, exp)
        return caller

    def _verify(self, token: str, issuer: str, audience: str) -> tuple[Caller, float]:
        try:
            header, unverified = _unverified(token)
        except jwt.PyJWTError:
            raise TokenRejected("the bearer token is not a JWT") from None
        alg = header.get("alg")
        iss = unverified.get("iss")
        if iss == issuer and self.signing is not None:
            if alg != self.signing.alg or header.get("kid") != self.signing.kid:
                raise TokenRejected("the token's alg or key id is not the gateway's")
            claims = self._decode(token, self.signing.private.public_key(), alg, audience, issuer)
            client = self.registry.get(str(claims.get("sub")))
            if client is None:
                raise TokenRejected("the token's client is no longer registered")
            scopes = narrow(str(claims.get("scope", "")).split(), client.scopes)
            return self._caller(client, scopes, None), float(claims["exp"])
        if self.idp is not None and iss == self.idp_issuer and iss is not None:
            if not self.idp_audience:
                raise TokenRejected("identity provider tokens need GATEWAY_IDP_AUDIENCE to be set")
            if alg not in IDP_ALGS:
                raise TokenRejected(f"alg {alg!r} is not accepted")
            key = self.idp.key(header.get("kid"))
            if key is None:
                raise TokenRejected(f"unknown key id {header.get('kid')!r} at the identity provider")
            claims = self._decode(token, key.key, alg, self.idp_audience, iss)
            client_id = claims.get("client_id") or claims.get("azp") or claims.get("cid")
            client = self.registry.get(str(client_id)) if client_id else None
            if client is None:
                raise TokenRejected("the token's client (client_id/azp) is not registered here")
            if client.role not in IDP_ROLES:
                # A backend client's role comes only from its own signed assertion (our tokens), never from a
                # claim an identity provider's user can get into a token.
                raise TokenRejected(f"an identity provider token may only act for a patient app; "
                                    f"{client.client_id!r} is a {client.role} client")
            requested = [s for s in str(claims.get("scope", "")).split() if "/" in s]
            scopes = narrow(requested, client.scopes) if requested else client.scopes
            nhs = None
            if client.role == "patient-app":
                raw = claims.get(self.nhs_number_claim)
                nhs = normalise_nhs_number(str(raw)) if raw else ""
                if not is_valid_nhs_number(nhs):
                    raise TokenRejected(f"a patient-app token needs a valid NHS number in '{self.nhs_number_claim}'")
            return self._caller(client, scopes, nhs), float(claims["exp"])
        raise TokenRejected("the token's issuer is not trusted here")

    @staticmethod
    def _decode(token: str, key: object, alg: str, audience: str, issuer: str) -> dict:
        try:
            return jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=issuer, leeway=CLOCK_SKEW,
                              options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise TokenRejected("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("the token is for another audience") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"the token does not verify: {exc}") from None

    @staticmethod
    def _caller(client: Client, scopes: frozenset[str], nhs: str | None) -> Caller:
        return Caller(client_id=client.client_id, role=client.role, tenant=client.tenant, scopes=scopes,
                      nhs_number=nhs, studies=client.studies)
