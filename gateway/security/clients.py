"""Clients as data: ``mappings/clients/*.yaml`` (one client per file), validated with marshmallow.

Each file names a client id, its role, its tenant (ODS code or sponsor organisation identifier), the
scopes it may be granted and its PUBLIC keys (a JWKS). Errors name the file and the field:
``leeds.yaml: role: Must be one of: admin, sponsor, hospital, research-team, patient-app.``
Only the top level of the folder is read, so ``mappings/clients/examples/`` stays inert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jwt
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from gateway.datafiles import load_yaml_file
from gateway.fhir.conventions import ODS_ORGANIZATION
from gateway.security.principal import ROLES
from gateway.security.scopes import Scope, ScopeError

_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


class ClientConfigError(ValueError):
    """One or more client files are invalid; the message lists file: field: problem."""


@dataclass(frozen=True)
class Client:
    client_id: str
    role: str
    tenant: str | None
    tenant_system: str
    scopes: frozenset[str]
    keys: tuple[jwt.PyJWK, ...] = ()
    studies: frozenset[str] = frozenset()
    name: str = ""
    source: str = ""

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The public key with this ``kid``; with no kid, the only key (if there is exactly one)."""
        if kid is None:
            return self.keys[0] if len(self.keys) == 1 else None
        return next((k for k in self.keys if k.key_id == kid), None)


@dataclass
class ClientRegistry:
    clients: dict[str, Client] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.clients)

    def get(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)


class _JwksField(fields.Dict):
    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        keys = value.get("keys")
        if not isinstance(keys, list) or not keys:
            raise ValidationError("expected a JWKS object with a non-empty 'keys' list")
        out = []
        for i, k in enumerate(keys):
            if not isinstance(k, dict):
                raise ValidationError(f"keys[{i}] must be a JWK object")
            private = sorted(_PRIVATE_MEMBERS & k.keys())
            if private:
                raise ValidationError(f"keys[{i}] contains private or secret key material ({', '.join(private)}); "
                                      "client files hold PUBLIC keys only")
            if k.get("kty") not in ("RSA", "EC"):
                raise ValidationError(f"keys[{i}].kty must be RSA or EC, got {k.get('kty')!r}")
            if not k.get("kid"):
                raise ValidationError(f"keys[{i}].kid is required (clients name the key in the JWT header)")
            try:
                out.append(jwt.PyJWK(k))
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
                raise ValidationError(f"keys[{i}] is not a usable public key: {exc}") from None
        return tuple(out)


class ClientSchema(Schema):
    client_id = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9._:-]{1,128}$"))
    name = fields.String(load_default="")
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    tenant = fields.String(load_default=None, validate=validate.Regexp(r"^\S{1,64}$"))
    tenant_system = fields.String(load_default=ODS_ORGANIZATION)
    scopes = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    studies = fields.List(fields.String(validate=validate.Regexp(r"^\S+\|\S+$",
                                                                 error="expected 'system|value'")),
                          load_default=list)
    jwks = _JwksField(load_default=None)

    @validates("scopes")
    def _scopes(self, value: list[str], **_kw) -> None:
        for s in value:
            try:
                Scope.parse(s)
            except ScopeError as exc:
                raise ValidationError(str(exc)) from None

    @validates_schema
    def _by_role(self, data: dict, **_kw) -> None:
        role = data.get("role")
        scopes = [Scope.parse(s) for s in data.get("scopes") or []]
        if role == "patient-app":
            if any(s.context != "patient" for s in scopes):
                raise ValidationError("a patient-app has patient/ scopes only", "scopes")
        elif any(s.context == "patient" for s in scopes):
            raise ValidationError(f"patient/ scopes are for patient-app clients, not {role}", "scopes")
        if role in ("sponsor", "hospital") and not data.get("tenant"):
            raise ValidationError(f"a {role} client needs its organisation (ODS code or sponsor identifier)",
                                  "tenant")
        if role == "research-team" and not data.get("studies"):
            raise ValidationError("a research-team client needs the studies it works on", "studies")
        if role != "patient-app" and data.get("jwks") is None:
            raise ValidationError("backend clients need their public keys (jwks) for /auth/token", "jwks")


def load_client_file(path: Path) -> Client:
    """One YAML file -> Client; ClientConfigError naming the file and field."""
    data = load_yaml_file(path, ClientSchema(), ClientConfigError, label=path.name, top="(file)",
                          expected="a mapping with client_id, role, scopes, jwks")
    return Client(client_id=data["client_id"], role=data["role"], tenant=data["tenant"],
                  tenant_system=data["tenant_system"], scopes=frozenset(data["scopes"]),
                  keys=data["jwks"] or (), studies=frozenset(data["studies"]), name=data["name"],
                  source=path.name)


def load_clients(folder: Path | None) -> ClientRegistry:
    """Every ``*.yaml``/``*.yml`` directly in ``folder`` -> ClientRegistry (empty: development mode).

    ``folder`` None means no clients are configured (development mode). A folder that is configured but
    missing, not a folder or unreadable is a ClientConfigError: it never falls back to development mode.
    """
    reg = ClientRegistry()
    if folder is None:
        return reg
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    except FileNotFoundError:
        raise ClientConfigError(f"GATEWAY_CLIENTS_PATH={str(folder)!r} does not exist; create it, or unset "
                                "GATEWAY_CLIENTS_PATH for development mode") from None
    except NotADirectoryError:
        raise ClientConfigError(f"GATEWAY_CLIENTS_PATH={str(folder)!r} is not a folder") from None
    except OSError as exc:
        raise ClientConfigError(f"GATEWAY_CLIENTS_PATH={str(folder)!r} cannot be read: "
                                f"{exc.strerror or type(exc).__name__}") from None
    errors: list[str] = []
    tenants: dict[tuple[str, str], str] = {}
    for path in files:
        try:
            client = load_client_file(path)
        except ClientConfigError as exc:
            errors.append(str(exc))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{path.name}: cannot be read: {getattr(exc, 'strerror', None) or type(exc).__name__}")
            continue
        if client.client_id in reg.clients:
            errors.append(f"{path.name}: client_id: '{client.client_id}' is already defined in "
                          f"{reg.clients[client.client_id].source}")
            continue
        if client.tenant and client.role in ("sponsor", "hospital"):
            # Tenants are told apart by their value (the tag we stamp): two organisations may not share one.
            other = tenants.get((client.role, client.tenant))
            known = {v for (_, v) in tenants}
            if client.tenant in known and other is None:
                errors.append(f"{path.name}: tenant: '{client.tenant}' is already used by a client of another role")
            tenants[(client.role, client.tenant)] = client.client_id
        reg.clients[client.client_id] = client
    if errors:
        raise ClientConfigError("invalid client definitions: " + "; ".join(errors))
    return reg
