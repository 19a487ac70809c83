"""Hospital endpoints as data: ``mappings/hospitals/<name>.yaml`` files, validated by a marshmallow schema.

Which hospital a patient belongs to: the Patient's ``managingOrganization`` ODS code (its
``identifier`` with system https://fhir.nhs.uk/Id/ods-organization-code, or the referenced
Organization's ODS identifier) matched against each file's ``ods_code`` and ``patients.ods_codes``.
Two files claiming the same ODS code is an error found at load time.

>>> reg = load_hospitals(Path("mappings/hospitals"))
>>> reg.by_ods("RR8").name
'leeds'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from gateway.datafiles import field_errors
from gateway.outbound.allowlist import AllowList
from gateway.outbound.auth import Auth, BearerTokenAuth, SmartBackendAuth
from gateway.outbound.errors import ConfigurationError

_ODS = validate.Regexp(r"^[A-Z0-9]{3,10}$", error="an ODS code is 3-10 upper-case letters or digits, e.g. RR8")
_ENV = validate.Regexp(r"^[A-Z_][A-Z0-9_]*$", error="an environment variable name, e.g. LEEDS_FHIR_TOKEN")


class _Timeouts(Schema):
    class Meta:
        unknown = RAISE

    connect = fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=120))
    read = fields.Float(load_default=30.0, validate=validate.Range(min=0.1, max=600))


class _Auth(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(["none", "bearer", "smart-backend"]))
    token_env = fields.String(validate=_ENV)
    token_url = fields.Url(schemes={"http", "https"}, require_tld=False)
    client_id = fields.String()
    key_env = fields.String(validate=_ENV)
    algorithm = fields.String(load_default="RS384", validate=validate.OneOf(["RS384", "ES384"]))
    kid = fields.String()
    scope = fields.String(load_default="system/Patient.rs system/Condition.rs system/Observation.rs "
                                       "system/ResearchSubject.cu system/Task.c system/Communication.c")

    @validates_schema
    def _needs(self, data: dict, **_kw) -> None:
        need = {"bearer": ["token_env"], "smart-backend": ["token_url", "client_id", "key_env"]}.get(data["type"], [])
        missing = [k for k in need if not data.get(k)]
        if missing:
            raise ValidationError({k: [f"required when type is {data['type']}"] for k in missing})


class _Patients(Schema):
    class Meta:
        unknown = RAISE

    ods_codes = fields.List(fields.String(validate=_ODS), load_default=list)


class _WriteBack(Schema):
    class Meta:
        unknown = RAISE

    research_subject = fields.Boolean(load_default=True)
    task = fields.Boolean(load_default=False)
    communication = fields.Boolean(load_default=False)
    # As a study site: its research team gets a Task for every contact request about a study sited here
    # (ResearchStudy.site -> Location.managingOrganization ODS code), whichever trust holds the patient.
    site_contact = fields.Boolean(load_default=False)


class _Pull(Schema):
    class Meta:
        unknown = RAISE

    observation_days = fields.Integer(load_default=365, validate=validate.Range(min=1, max=36500))
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class HospitalSchema(Schema):
    """One hospital file. Unknown keys are errors (a typo must not silently disable a setting)."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9-]*$",
                                                                  error="lower-case letters, digits and '-'"))
    title = fields.String(load_default="")
    ods_code = fields.String(required=True, validate=_ODS)
    fhir_base_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    fhir_version = fields.String(load_default="R4", validate=validate.OneOf(["R4", "4.0.1"]))
    timeouts = fields.Nested(_Timeouts, load_default=lambda: _Timeouts().load({}))
    auth = fields.Nested(_Auth, load_default=lambda: {"type": "none"})
    patients = fields.Nested(_Patients, load_default=lambda: _Patients().load({}))
    write_back = fields.Nested(_WriteBack, load_default=lambda: _WriteBack().load({}))
    pull = fields.Nested(_Pull, load_default=lambda: _Pull().load({}))

    @post_load
    def _make(self, data: dict, **_kw) -> Hospital:
        return Hospital(**data)


@dataclass
class Hospital:
    name: str
    ods_code: str
    fhir_base_url: str
    fhir_version: str = "R4"
    title: str = ""
    timeouts: dict = field(default_factory=lambda: {"connect": 5.0, "read": 30.0})
    auth: dict = field(default_factory=lambda: {"type": "none"})
    patients: dict = field(default_factory=lambda: {"ods_codes": []})
    write_back: dict = field(default_factory=lambda: {"research_subject": True, "task": False,
                                                      "communication": False, "site_contact": False})
    pull: dict = field(default_factory=lambda: {"observation_days": 365, "page_size": 100})
    source: str = ""

    @property
    def ods_codes(self) -> set[str]:
        return {self.ods_code, *self.patients.get("ods_codes", [])}

    @property
    def timeout(self) -> tuple[float, float]:
        return (float(self.timeouts["connect"]), float(self.timeouts["read"]))

    def make_auth(self, env: Mapping[str, str], allowed_hosts: AllowList) -> Auth:
        """The auth strategy of this file; secrets are read from ``env`` when a request needs them."""
        a = self.auth
        if a["type"] == "bearer":
            return BearerTokenAuth(a["token_env"], env=env)
        if a["type"] == "smart-backend":
            return SmartBackendAuth(a["token_url"], a["client_id"], a["key_env"], algorithm=a["algorithm"],
                                    kid=a.get("kid"), scope=a["scope"], env=env, allowed_hosts=allowed_hosts,
                                    timeout=self.timeout)
        return Auth()


class HospitalFileError(ConfigurationError):
    """A hospital file is invalid: names the file, the field and what was expected."""


@dataclass
class Hospitals:
    """The loaded hospital files, by name and by ODS code."""

    by_name: dict[str, Hospital] = field(default_factory=dict)

    def get(self, name: str) -> Hospital:
        try:
            return self.by_name[name]
        except KeyError:
            known = ", ".join(sorted(self.by_name)) or "none configured"
            raise ConfigurationError(f"Unknown hospital '{name}' (known: {known})") from None

    def by_ods(self, ods: str | None) -> Hospital | None:
        if not ods:
            return None
        ods = ods.upper()
        return next((h for h in self.by_name.values() if ods in h.ods_codes), None)


def parse_hospital(data: object, source: str = "<data>") -> Hospital:
    if not isinstance(data, dict):
        raise HospitalFileError(f"{source}: a hospital file must be a YAML mapping")
    try:
        hospital = HospitalSchema().load(data)
    except ValidationError as exc:
        raise HospitalFileError(f"{source}: " + "; ".join(field_errors(exc.messages))) from None
    hospital.source = source
    return hospital


def load_hospitals(path: Path) -> Hospitals:
    """Every ``*.yaml``/``*.yml``/``*.json`` file under ``path`` -> Hospitals. A missing folder is empty."""
    reg = Hospitals()
    if not path.exists():
        return reg
    owner: dict[str, str] = {}
    for f in sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")):
        try:
            data = yaml.safe_load(f.read_text())
        except yaml.YAMLError as exc:
            raise HospitalFileError(f"{f}: not valid YAML: {exc}") from None
        h = parse_hospital(data, str(f))
        if h.name in reg.by_name:
            raise HospitalFileError(f"{f}: name '{h.name}' is already used by {reg.by_name[h.name].source}")
        for code in h.ods_codes:
            if code in owner:
                raise HospitalFileError(f"{f}: ODS code {code} is already claimed by {owner[code]}")
            owner[code] = str(f)
        reg.by_name[h.name] = h
    return reg


__all__ = ["Hospital", "Hospitals", "HospitalFileError", "load_hospitals", "parse_hospital"]
