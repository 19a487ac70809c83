"""Stand-ins for the demo's partners: small real HTTP servers on 127.0.0.1 that record what they receive.

    python -m gateway.demo.standin hospital --port 8081 --patients BUNDLE.json --client-key PUBLIC.pem
    python -m gateway.demo.standin receiver --port 8082

``hospital`` plays a hospital's FHIR R4 server, just enough for the gateway's outbound client: search by
``identifier``, create (with ``If-None-Exist``), update and conditional update, read; with ``--client-key`` it
asks for SMART Backend Services tokens (``POST /auth/token`` checks the client's signed assertion against the
public key, as a hospital's authorisation server does). ``receiver`` plays the alert channel (e-mail or NHS
App push): it accepts every POST. Both show what they received at ``GET /received`` (JSON, newest last).
State is in memory: a restart forgets it.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import threading
import time
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_LIFETIME = 300  # seconds


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _outcome(message: str, code: str = "processing") -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": message}]}


def _has_identifier(resource: dict, wanted: str) -> bool:
    """'system|value' (or 'value' alone) against the resource's identifiers."""
    system, _, value = wanted.rpartition("|")
    idents = resource.get("identifier") or []
    for ident in idents if isinstance(idents, list) else [idents]:
        if isinstance(ident, dict) and ident.get("value") == value and (not system or ident.get("system") == system):
            return True
    return False


class Recorder:
    """What a stand-in received: one entry per write (hospital) or per POST (receiver)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[dict] = []

    def add(self, **entry: object) -> None:
        with self.lock:
            self.entries.append({"n": len(self.entries) + 1, "at": _now(), **entry})


class FhirStore:
    """Resources by type, ids assigned here (the hospital's own ids, not the gateway's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_type: dict[str, dict[str, dict]] = {}
        self.next_id = 1

    def put(self, resource: dict, rid: str | None = None) -> tuple[dict, bool]:
        """Store (a new id unless given); -> (the stored resource, created?)."""
        with self.lock:
            bucket = self.by_type.setdefault(resource["resourceType"], {})
            if rid is None:
                rid, self.next_id = str(self.next_id), self.next_id + 1
            old = bucket.get(rid)
            version = int((old or {}).get("meta", {}).get("versionId", "0")) + 1
            stored = {**resource, "id": rid, "meta": {"versionId": str(version), "lastUpdated": _now()}}
            bucket[rid] = stored
            return stored, old is None

    def find(self, rtype: str, identifier: str | None) -> list[dict]:
        with self.lock:
            found = list(self.by_type.get(rtype, {}).values())
        return [r for r in found if identifier is None or _has_identifier(r, identifier)]

    def read(self, rtype: str, rid: str) -> dict | None:
        with self.lock:
            return self.by_type.get(rtype, {}).get(rid)


class Handler(BaseHTTPRequestHandler):
    server: StandinServer

    # -- plumbing -------------------------------------------------------------------------------
    def _send(self, status: int, body: object = None, headers: dict[str, str] | None = None,
              content_type: str = "application/fhir+json") -> None:
        data = json.dumps(body, indent=1).encode() if body is not None else b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.log(f"{self.command} {urlsplit(self.path).path} -> {status}")

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self) -> dict | None:
        try:
            body = json.loads(self._body() or b"null")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def log_message(self, *args: object) -> None:  # one line per request comes from _send instead
        pass

    # -- routes ---------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parts = urlsplit(self.path)
        if parts.path in ("/", "/received"):
            with self.server.recorder.lock:
                received = list(self.server.recorder.entries)
            return self._send(HTTPStatus.OK, {"standin": self.server.role, "received": received},
                              content_type="application/json")
        if self.server.role != "hospital" or not parts.path.startswith("/fhir/"):
            return self._send(HTTPStatus.NOT_FOUND, _outcome(f"no route {parts.path}", "not-found"))
        if not self._authorised():
            return None
        segments = parts.path.removeprefix("/fhir/").strip("/").split("/")
        store = self.server.store
        if segments == ["metadata"]:
            return self._send(HTTPStatus.OK, {"resourceType": "CapabilityStatement", "status": "active",
                                              "date": _now()[:10], "kind": "instance", "fhirVersion": "4.0.1",
                                              "format": ["application/fhir+json"]})
        if len(segments) == 2:
            found = store.read(*segments)
            return self._send(HTTPStatus.OK, found) if found else self._send(
                HTTPStatus.NOT_FOUND, _outcome(f"{segments[0]}/{segments[1]} is not known", "not-found"))
        query = parse_qs(parts.query)
        matches = store.find(segments[0], (query.get("identifier") or [None])[0])
        base = self.server.base
        self._send(HTTPStatus.OK, {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                                   "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
                                              "search": {"mode": "match"}} for r in matches]})

    def do_POST(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        if self.server.role == "receiver":
            body = self._json()
            self.server.recorder.add(request=f"POST {parts.path}", summary=notification_summary(body),
                                     body=body)
            return self._send(HTTPStatus.OK)
        if parts.path == "/auth/token":
            return self._token()
        if not parts.path.startswith("/fhir/"):
            return self._send(HTTPStatus.NOT_FOUND, _outcome(f"no route {parts.path}", "not-found"))
        if not self._authorised():
            return None
        rtype = parts.path.removeprefix("/fhir/").strip("/")
        resource = self._json()
        if not resource or resource.get("resourceType") != rtype:
            return self._send(HTTPStatus.BAD_REQUEST, _outcome(f"the body must be a {rtype} resource", "invalid"))
        condition = self.headers.get("If-None-Exist", "")
        if condition:
            existing = self.server.store.find(rtype, parse_qs(condition).get("identifier", [""])[0])
            if existing:
                self.server.recorder.add(request=f"POST {parts.path}", status=200, outcome="already held",
                                         resource=existing[0])
                return self._send(HTTPStatus.OK, existing[0])
        self._write(rtype, resource, None, f"POST {parts.path}")

    def do_PUT(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        if self.server.role != "hospital" or not parts.path.startswith("/fhir/"):
            return self._send(HTTPStatus.NOT_FOUND, _outcome(f"no route {parts.path}", "not-found"))
        if not self._authorised():
            return None
        segments = parts.path.removeprefix("/fhir/").strip("/").split("/")
        resource = self._json()
        if not resource or resource.get("resourceType") != segments[0]:
            return self._send(HTTPStatus.BAD_REQUEST, _outcome(f"the body must be a {segments[0]}", "invalid"))
        rid = segments[1] if len(segments) == 2 else None
        if rid is None:  # conditional update: the one match, or create
            matches = self.server.store.find(segments[0], (parse_qs(parts.query).get("identifier") or [""])[0])
            if len(matches) > 1:
                return self._send(HTTPStatus.PRECONDITION_FAILED, _outcome("several matches", "multiple-matches"))
            rid = matches[0]["id"] if matches else None
        self._write(segments[0], resource, rid, f"PUT {parts.path}")

    def _write(self, rtype: str, resource: dict, rid: str | None, request: str) -> None:
        stored, created = self.server.store.put(resource, rid)
        status = HTTPStatus.CREATED if created else HTTPStatus.OK
        self.server.recorder.add(request=request, status=int(status), resource=stored)
        location = f"{self.server.base}/{rtype}/{stored['id']}/_history/{stored['meta']['versionId']}"
        self._send(status, stored, {"Location": location, "ETag": f'W/"{stored["meta"]["versionId"]}"'})

    # -- SMART Backend Services -----------------------------------------------------------------
    def _authorised(self) -> bool:
        if self.server.public_key is None:
            return True
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        with self.server.tokens_lock:
            expires = self.server.tokens.get(token, 0.0)
        if expires > time.time():
            return True
        self._send(HTTPStatus.UNAUTHORIZED, _outcome("a valid bearer token is required", "login"),
                   {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return False

    def _token(self) -> None:
        form = {k: v[0] for k, v in parse_qs(self._body().decode(errors="replace")).items()}
        if self.server.public_key is None:
            return self._send(HTTPStatus.NOT_FOUND, _outcome("this stand-in asks for no token", "not-found"))
        if form.get("grant_type") != "client_credentials" or form.get("client_assertion_type") != ASSERTION_TYPE:
            return self._oauth_error("unsupported_grant_type", "client_credentials with a JWT assertion only")
        try:
            claims = jwt.decode(form.get("client_assertion", ""), self.server.public_key,
                                algorithms=["RS384", "ES384"], audience=f"{self.server.root}/auth/token",
                                issuer=self.server.client_id, options={"require": ["exp", "jti", "sub"]})
        except jwt.PyJWTError as exc:
            return self._oauth_error("invalid_client", f"the client assertion was refused: {exc}")
        if claims.get("sub") != self.server.client_id:
            return self._oauth_error("invalid_client", "sub must be the client id")
        token = secrets.token_urlsafe(24)
        with self.server.tokens_lock:
            self.server.tokens[token] = time.time() + TOKEN_LIFETIME
        self._send(HTTPStatus.OK, {"access_token": token, "token_type": "bearer", "expires_in": TOKEN_LIFETIME,
                                   "scope": form.get("scope", "")}, content_type="application/json")

    def _oauth_error(self, error: str, description: str) -> None:
        self._send(HTTPStatus.UNAUTHORIZED if error == "invalid_client" else HTTPStatus.BAD_REQUEST,
                   {"error": error, "error_description": description}, content_type="application/json")


def notification_summary(body: dict | None) -> dict:
    """A subscription notification (history Bundle, SubscriptionStatus Parameters first) -> its type and the
    resources each event was about; {} for anything else."""
    try:
        status = body["entry"][0]["resource"]  # type: ignore[index]
        params = status["parameter"]
    except (KeyError, IndexError, TypeError):
        return {}
    out: dict = {}
    for p in params:
        if p.get("name") == "type":
            out["type"] = p.get("valueCode")
        elif p.get("name") == "subscription":
            out["subscription"] = (p.get("valueReference") or {}).get("reference")
        elif p.get("name") == "notification-event":
            parts = {q.get("name"): q for q in p.get("part") or []}
            out.setdefault("events", []).append({
                "number": (parts.get("event-number") or {}).get("valueString"),
                "focus": ((parts.get("focus") or {}).get("valueReference") or {}).get("reference")})
    return out


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, role: str, port: int, name: str, public_key: str | None = None,
                 client_id: str = "trial-gateway", fd: int | None = None):
        # fd: a socket the parent has already bound (gateway serve --demo), so no other process can take the port
        # between choosing it and listening on it
        super().__init__(("127.0.0.1", port), Handler, bind_and_activate=fd is None)
        if fd is not None:
            self.socket.close()
            self.socket = socket.socket(fileno=fd)
            self.server_address = self.socket.getsockname()
            self.server_name, self.server_port = "127.0.0.1", self.server_address[1]
            self.server_activate()
        self.role, self.name = role, name
        self.root = f"http://127.0.0.1:{self.server_port}"
        self.base = f"{self.root}/fhir"
        self.recorder = Recorder()
        self.store = FhirStore()
        self.public_key, self.client_id = public_key, client_id
        self.tokens: dict[str, float] = {}
        self.tokens_lock = threading.Lock()

    def log(self, line: str) -> None:
        print(f"{self.name}: {line}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m gateway.demo.standin", description=__doc__.split("\n\n")[0])
    ap.add_argument("role", choices=["hospital", "receiver"])
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--fd", type=int, help="listen on this already-bound socket (inherited) instead of --port")
    ap.add_argument("--name", help="shown in log lines (default: the role)")
    ap.add_argument("--patients", action="append", default=[],
                    help="hospital: a FHIR Bundle or resource file; its Patients are held from the start")
    ap.add_argument("--client-key", help="hospital: the gateway's public key (PEM); tokens are then required")
    ap.add_argument("--client-id", default="trial-gateway")
    args = ap.parse_args(argv)
    key = open(args.client_key).read() if args.client_key else None  # noqa: SIM115 (read once at start)
    server = StandinServer(args.role, args.port, args.name or args.role, key, args.client_id, fd=args.fd)
    for path in args.patients:
        with open(path) as fh:
            data = json.load(fh)
        entries = [e.get("resource") for e in data.get("entry") or []] if data.get("resourceType") == "Bundle" \
            else [data]
        for resource in entries:
            if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
                held = {k: v for k, v in resource.items() if k not in ("id", "meta")}
                org = held.get("managingOrganization")
                if isinstance(org, dict) and str(org.get("reference", "")).startswith("urn:"):
                    held["managingOrganization"] = {k: v for k, v in org.items() if k != "reference"}
                server.store.put(held)  # the hospital's own copy, under its own id
    server.log(f"listening on {server.server_port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
