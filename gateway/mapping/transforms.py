"""Named transforms that mapping files may use (``transform: NAME``), as a registry.

Each transform is ``fn(value, ctx, **args) -> new value`` (None means "no value"); it raises
MappingValueError to reject the record, naming the source field. Examples:
``age("6 Months")`` -> Quantity 6 mo; ``code-case("NOT_YET_RECRUITING")`` -> 'not-yet-recruiting'.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.fhir import conventions as c
from gateway.fhir.nhs_number import is_valid_nhs_number, normalise_nhs_number


class MappingValueError(ValueError):
    """A source value the mapping cannot use; ``path`` overrides the rule's source path if set."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path


@dataclass
class Context:
    """What a transform may look at besides its input value."""

    record: dict
    source_id: str | None = None
    item: object = None
    item_path: str | None = None
    conceptmaps: Any = None  # gateway.terminology.conceptmap.ConceptMapIndex
    settings: dict = field(default_factory=dict)
    path: str | None = None  # the source path the value came from (for error messages)


Transform = Callable[..., object]
TRANSFORMS: dict[str, Transform] = {}


def transform(name: str) -> Callable[[Transform], Transform]:
    def deco(fn: Transform) -> Transform:
        TRANSFORMS[name] = fn
        return fn
    return deco


# -- general -----------------------------------------------------------------------------------
@transform("join")
def join(value: object, ctx: Context, sep: str = "+") -> str | None:
    """['PHASE1', 'PHASE2'] -> 'PHASE1+PHASE2'."""
    if isinstance(value, list):
        return sep.join(str(v) for v in value) if value else None
    return None if value is None else str(value)


@transform("template")
def template(value: object, ctx: Context, format: str = "{}") -> str:
    """'PALLAS', format 'Eligibility for {}' -> 'Eligibility for PALLAS'."""
    return format.format(value)


@transform("text-concept")
def text_concept(value: object, ctx: Context) -> dict:
    """'Interventional' -> {'text': 'Interventional'}."""
    return {"text": str(value)}


@transform("text-concepts")
def text_concepts(value: object, ctx: Context) -> list[dict] | None:
    """['a', 'b'] -> [{'text': 'a'}, {'text': 'b'}]."""
    items = value if isinstance(value, list) else [value]
    return [{"text": str(v)} for v in items if isinstance(v, str) and v.strip()] or None


@transform("display-reference")
def display_reference(value: object, ctx: Context) -> dict:
    """'Pfizer' -> {'display': 'Pfizer'} (a Reference with no target we store)."""
    return {"display": str(value)}


@transform("code-case")
def code_case(value: object, ctx: Context) -> str:
    """'NOT_YET_RECRUITING' -> 'not-yet-recruiting'."""
    return str(value).strip().lower().replace("_", "-").replace(" ", "-")


@transform("boolean")
def boolean(value: object, ctx: Context) -> bool:
    """True, 'yes', 'Y', '1' -> True; False, 'no', 'N', '0' -> False; anything else is an error."""
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("true", "yes", "y", "1"):
        return True
    if s in ("false", "no", "n", "0"):
        return False
    raise MappingValueError(f"'{value}' is not a yes/no value")


_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%Y-%m", "%Y", "%d-%m-%Y", "%d %b %Y")
_FHIR_DATE = re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$")


@transform("date")
def date(value: object, ctx: Context, formats: list[str] | None = None) -> str | None:
    """'2015-08' -> '2015-08'; '05/03/2021' -> '2021-03-05' (dd/mm/yyyy, as UK extracts write it)."""
    s = str(value).strip()
    if not s:
        return None
    for fmt in formats or _DATE_FORMATS:
        try:
            parsed = datetime.strptime(s, fmt)
        except ValueError:
            continue
        precision = 3 if "%d" in fmt else 2 if "%m" in fmt else 1
        iso = parsed.date().isoformat()
        return iso[: {1: 4, 2: 7, 3: 10}[precision]]
    if _FHIR_DATE.match(s):
        return s
    raise MappingValueError(f"'{s}' is not a date (expected one of: {', '.join(formats or _DATE_FORMATS)})")


@transform("geo-position")
def geo_position(value: object, ctx: Context) -> dict | None:
    """{'lat': 53.8, 'lon': -1.5} -> {'latitude': 53.8, 'longitude': -1.5}."""
    if not isinstance(value, dict) or value.get("lat") is None or value.get("lon") is None:
        return None
    lat, lon = value["lat"], value["lon"]
    if not (isinstance(lat, int | float) and isinstance(lon, int | float) and -90 <= lat <= 90
            and -180 <= lon <= 180):
        raise MappingValueError(f"geoPoint {value!r} is not a latitude/longitude pair")
    return {"latitude": lat, "longitude": lon}


@transform("row-key")
def row_key(value: object, ctx: Context, fields: list[str] | tuple[str, ...] = (),
            normalise: dict[str, str] | None = None) -> str:
    """A stable id for a source row from its identifying columns (sha-256, 20 hex characters).

    ``normalise`` runs a transform on a column first, so '944 930 6060' and '9449306060', or
    '02/09/2026' and '2026-09-02', give the same key. A missing column counts as empty (onset
    dates often are); all of them missing is an error.
    """
    parts = []
    for f in fields:
        v = ctx.record.get(f)
        if v not in (None, "") and normalise and f in normalise:
            v = TRANSFORMS[normalise[f]](v, ctx)
        parts.append(str(v or "").strip())
    if not any(parts):
        raise MappingValueError(f"none of {', '.join(fields)} is given to identify the row", fields[0])
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


# -- ages (ClinicalTrials.gov minimumAge / maximumAge) ----------------------------------------------
_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(years?|months?|weeks?|days?|hours?|minutes?)\s*$", re.IGNORECASE)
_AGE_UNITS = {"year": ("a", "years"), "month": ("mo", "months"), "week": ("wk", "weeks"), "day": ("d", "days"),
              "hour": ("h", "hours"), "minute": ("min", "minutes")}


def parse_age(text: str) -> dict | None:
    """'18 Years' -> {'value': 18, 'unit': 'years', 'system': UCUM, 'code': 'a'}; 'N/A' -> None."""
    s = text.strip()
    if s.upper() in ("N/A", "NA", "NONE", ""):
        return None
    m = _AGE_RE.match(s)
    if not m:
        raise ValueError(f"'{text}' is not an age (expected a number and a unit, e.g. '18 Years', "
                         "'6 Months', '3 Weeks', or 'N/A')")
    num = float(m.group(1))
    code, unit = _AGE_UNITS[m.group(2).lower().rstrip("s")]
    return {"value": int(num) if num.is_integer() else num, "unit": unit, "system": c.UCUM, "code": code}


@transform("ctgov-age-range")
def ctgov_age_range(value: object, ctx: Context) -> dict | None:
    """eligibilityModule {'minimumAge': '18 Years', 'maximumAge': 'N/A'} -> Range {low: 18 a}."""
    if not isinstance(value, dict):
        return None
    out = {}
    for src, dst in (("minimumAge", "low"), ("maximumAge", "high")):
        raw = value.get(src)
        if raw is None:
            continue
        if not isinstance(raw, str):
            raise MappingValueError(f"expected an age string, got {raw!r}", f"{ctx.path}.{src}")
        try:
            q = parse_age(raw)
        except ValueError as exc:
            raise MappingValueError(str(exc), f"{ctx.path}.{src}") from None
        if q is not None:
            out[dst] = q
    if "low" in out and "high" in out and out["low"]["code"] == out["high"]["code"] and (
            out["low"]["value"] > out["high"]["value"]):
        raise MappingValueError(f"minimumAge '{value['minimumAge']}' is above maximumAge '{value['maximumAge']}'",
                                f"{ctx.path}.minimumAge")
    return out or None


# -- identifiers ---------------------------------------------------------------------------------
_NCT_RE = re.compile(r"^NCT\d{8}$")
_ISRCTN_RE = re.compile(r"^ISRCTN\s?(\d{8})$", re.IGNORECASE)
_EUDRACT_RE = re.compile(r"^\d{4}-\d{6}-\d{2}$")
_EUCT_RE = re.compile(r"^\d{4}-5\d{5}-\d{2}-\d{2}$")
_IRAS_RE = re.compile(r"^(?:IRAS\s*(?:ID|number|no\.?)?[:\s]*)(\d{5,7})$", re.IGNORECASE)


def _secondary_system(sec: dict) -> tuple[str | None, str]:
    """A secondary id -> (our system for it, normalised value); (None, value) when unknown."""
    value = str(sec.get("id", "")).strip()
    kind = str(sec.get("type") or "").upper()
    domain = str(sec.get("domain") or "")
    if m := _ISRCTN_RE.match(value):
        return c.ISRCTN, f"ISRCTN{m.group(1)}"
    if "isrctn" in domain.lower() and value.isdigit():
        return c.ISRCTN, f"ISRCTN{value}"
    if kind == "EUDRACT_NUMBER" or (_EUDRACT_RE.match(value) and "eudract" in domain.lower()):
        return c.EUDRACT, value
    if _EUCT_RE.match(value) or kind == "CTIS":
        return c.EU_CT, value
    if m := _IRAS_RE.match(value):
        return c.IRAS, m.group(1)
    if "iras" in domain.lower().split() and value.isdigit():
        return c.IRAS, value
    if _EUDRACT_RE.match(value):
        return c.EUDRACT, value
    return None, value


@transform("ctgov-identifiers")
def ctgov_identifiers(value: object, ctx: Context) -> list[dict]:
    """identificationModule -> [NCT id (official), org study id, ISRCTN/EudraCT/IRAS/... (secondary)]."""
    if not isinstance(value, dict):
        raise MappingValueError("identificationModule is missing")
    nct = value.get("nctId")
    if not isinstance(nct, str) or not _NCT_RE.match(nct.strip()):
        raise MappingValueError(f"nctId {nct!r} is not an NCT number (NCT followed by 8 digits)",
                                f"{ctx.path}.nctId")
    out = [{"use": "official", "system": c.CTGOV, "value": nct.strip()}]
    seen = {(c.CTGOV, nct.strip())}
    org = (value.get("organization") or {}).get("fullName")
    org_id = (value.get("orgStudyIdInfo") or {}).get("id")
    if org_id:
        ident = {"use": "secondary", "type": {"text": "Organization study id"}, "system": c.ORG_STUDY_ID,
                 "value": str(org_id).strip()}
        if org:
            ident["assigner"] = {"display": org}
        out.append(ident)
    for sec in value.get("secondaryIdInfos") or []:
        if not isinstance(sec, dict) or not sec.get("id"):
            continue
        system, v = _secondary_system(sec)
        if (system, v) in seen:
            continue
        seen.add((system, v))
        ident = {"use": "secondary", "value": v}
        if system:
            ident["system"] = system
        else:
            ident["type"] = {"text": sec.get("domain") or sec.get("type") or "Secondary id"}
        out.append(ident)
    return out


# -- conditions and MeSH -------------------------------------------------------------------------
@transform("ctgov-conditions")
def ctgov_conditions(value: object, ctx: Context) -> list[dict] | None:
    """The study's condition terms as text, each with its MeSH coding when the derived section links it.

    Linking uses conditionBrowseModule.browseLeaves[].asFound (the study's term) -> leaf name -> meshes[]
    term. MeSH terms linked to no condition text are kept as conditions of their own.
    """
    record = ctx.record
    terms = ((record.get("protocolSection") or {}).get("conditionsModule") or {}).get("conditions") or []
    browse = (record.get("derivedSection") or {}).get("conditionBrowseModule") or {}
    meshes = {str(m.get("term", "")).lower(): m for m in browse.get("meshes") or [] if isinstance(m, dict)}
    by_found: dict[str, dict] = {}
    for leaf in browse.get("browseLeaves") or []:
        if isinstance(leaf, dict) and leaf.get("asFound") and str(leaf.get("name", "")).lower() in meshes:
            by_found.setdefault(str(leaf["asFound"]).lower(), meshes[str(leaf["name"]).lower()])
    out, used = [], set()
    plain = [t for t in terms if isinstance(t, str) and t.strip()]
    for term in plain:
        split = condition_split(term, len(plain))
        if split is not None:
            core, _ = split
            if core is None:  # qualifiers no code carries: left unresolved (docs/eligibility.md)
                out.append({"coding": [{"system": c.UNRESOLVED_QUALIFIED[0], "code": c.UNRESOLVED_QUALIFIED[1],
                                        "display": "Condition with qualifiers no code carries"}], "text": term.strip()})
            else:
                out.append({"text": core})  # its qualifiers are Group characteristics (eligibility-characteristics)
            mesh = by_found.get(term.strip().lower()) or meshes.get(term.strip().lower())
            if mesh:
                used.add(mesh["id"])  # the broader MeSH term is not added as a condition of its own
            continue
        cc: dict = {"text": term.strip()}
        mesh = by_found.get(term.strip().lower()) or meshes.get(term.strip().lower())
        if mesh:
            cc["coding"] = [{"system": c.MESH, "code": c.normalise_mesh_id(mesh["id"]), "display": mesh["term"]}]
            used.add(mesh["id"])
        out.append(cc)
    qualified_only = _mesh_only_from_qualified(browse, plain)
    for m in browse.get("meshes") or []:
        if isinstance(m, dict) and m.get("id") and m["id"] not in used and m["id"] not in qualified_only:
            out.append({"coding": [{"system": c.MESH, "code": c.normalise_mesh_id(m["id"]), "display": m.get("term")}],
                        "text": m.get("term")})
    return out or None


def condition_split(term: str, conditions: int) -> tuple[str | None, list] | None:
    """None: a plain disease name. Else (core or None, findings): a qualified phrase ('EGFR-mutant NSCLC') of a
    study with this one condition, whose qualifiers the extractor can state, keeps its core as the condition and
    its findings become Group characteristics; any other qualified phrase is left unresolved (core None)."""
    from gateway.mapping.eligibility.conditions import qualified_condition

    q = qualified_condition(term.strip())
    if q is None:
        return None
    if q.generic or conditions != 1 or not q.core:
        return None, []
    findings = _condition_findings(term.strip())
    if not findings:
        return None, []
    return q.core, findings


def _condition_findings(term: str) -> list:
    from gateway.mapping.eligibility.extract import recognise_criterion
    from gateway.mapping.eligibility.split import Criterion
    from gateway.terminology.lexicons import default_lexicons

    result = recognise_criterion(Criterion(term, 0, len(term), "inclusion"), default_lexicons())
    return [f for f in result.findings if f.kind in ("variant", "receptor", "msi", "mmr", "pdl1", "stage")]


def _mesh_only_from_qualified(browse: dict, terms: list[str]) -> set[str]:
    """MeSH ids that ClinicalTrials.gov linked only from qualified condition phrases (their broader concept)."""
    names: dict[str, set[bool]] = {}
    for leaf in browse.get("browseLeaves") or []:
        if isinstance(leaf, dict) and leaf.get("asFound") and leaf.get("name"):
            found = str(leaf["asFound"])
            qualified = any(t.strip().lower() == found.strip().lower() and condition_split(t, len(terms)) is not None
                            for t in terms)
            names.setdefault(str(leaf["name"]).lower(), set()).add(qualified)
    return {m["id"] for m in browse.get("meshes") or [] if isinstance(m, dict) and m.get("id") and
            names.get(str(m.get("term", "")).lower()) == {True}}


# -- eligibility criteria (gateway.mapping.eligibility; docs/eligibility.md) ------------------------------------
@transform("eligibility-characteristics")
def eligibility_characteristics(value: object, ctx: Context) -> list[dict] | None:
    """eligibilityCriteria text -> extracted Group.characteristic entries (and the qualifiers of a split condition)."""
    from gateway.mapping.eligibility.cache import parts_for
    from gateway.mapping.eligibility.fhir import condition_characteristics

    chars: list[dict] = []
    if isinstance(value, str) and value.strip():
        chars, _ = parts_for(value)
    terms = ((ctx.record.get("protocolSection") or {}).get("conditionsModule") or {}).get("conditions") or []
    plain = [t for t in terms if isinstance(t, str) and t.strip()]
    for term in plain:
        split = condition_split(term, len(plain))
        if split is not None and split[0] is not None:
            chars += condition_characteristics(term.strip(), split[1])
    return chars or None


@transform("eligibility-extensions")
def eligibility_extensions(value: object, ctx: Context) -> list[dict] | None:
    """eligibilityCriteria text -> the Group's unstructured-criterion extensions and its criteria count."""
    from gateway.mapping.eligibility.cache import parts_for
    from gateway.mapping.eligibility.fhir import registry_age_covered

    if not isinstance(value, str) or not value.strip():
        return None
    _, exts = parts_for(value)
    # the age line beside the registry's structured age is checked by that Age characteristic, not left unchecked
    module = (ctx.record.get("protocolSection") or {}).get("eligibilityModule") or {}
    ages = {n for n in (_years(module.get("minimumAge")), _years(module.get("maximumAge"))) if n is not None}
    return registry_age_covered(exts, ages)


def _years(age: object) -> int | None:
    """'18 Years' -> 18; other units ('6 Months') or nothing -> None."""
    m = re.fullmatch(r"\s*(\d{1,3})\s*years?\s*", age, re.IGNORECASE) if isinstance(age, str) else None
    return int(m.group(1)) if m else None


@transform("ctgov-mesh-hierarchy")
def ctgov_mesh_hierarchy(value: object, ctx: Context) -> list[dict]:
    """conditionBrowseModule -> hierarchy data for the terminology layer (not ResearchStudy.condition).

    [{'system': MESH, 'code': 'D001943', 'display': 'Breast Neoplasms', 'ancestors': ['D009371', ...]}]:
    ClinicalTrials.gov lists the ancestors of all the study's terms together, so each term carries them all.
    """
    if not isinstance(value, dict):
        return []
    ancestors = [c.normalise_mesh_id(a["id"]) for a in value.get("ancestors") or [] if isinstance(a, dict)
                 and a.get("id")]
    names = {c.normalise_mesh_id(a["id"]): a.get("term") for a in value.get("ancestors") or []
             if isinstance(a, dict) and a.get("id")}
    out = [{"system": c.MESH, "code": c.normalise_mesh_id(m["id"]), "display": m.get("term"),
            "ancestors": ancestors} for m in value.get("meshes") or [] if isinstance(m, dict) and m.get("id")]
    out += [{"system": c.MESH, "code": code, "display": name, "ancestors": []} for code, name in names.items()]
    return out


# -- contacts and sites --------------------------------------------------------------------------
def _telecom(contact: dict) -> list[dict]:
    out = []
    if contact.get("phone"):
        phone = str(contact["phone"]) + (f" ext. {contact['phoneExt']}" if contact.get("phoneExt") else "")
        out.append({"system": "phone", "value": phone})
    if contact.get("email"):
        out.append({"system": "email", "value": str(contact["email"])})
    return out


@transform("ctgov-contacts")
def ctgov_contacts(value: object, ctx: Context) -> list[dict] | None:
    """centralContacts [{'name', 'phone', 'email'}] -> ContactDetail list."""
    out = []
    for contact in value if isinstance(value, list) else []:
        if not isinstance(contact, dict):
            continue
        cd: dict = {}
        if contact.get("name"):
            cd["name"] = str(contact["name"])
        if tel := _telecom(contact):
            cd["telecom"] = tel
        if cd:
            out.append(cd)
    return out or None


@transform("ctgov-address")
def ctgov_address(value: object, ctx: Context) -> dict | None:
    """A location {'city', 'state', 'zip', 'country'} -> Address."""
    if not isinstance(value, dict):
        return None
    addr = {k: str(value[s]) for s, k in (("city", "city"), ("state", "state"), ("zip", "postalCode"),
                                          ("country", "country")) if value.get(s)}
    return addr or None


@transform("ctgov-site-key")
def ctgov_site_key(value: object, ctx: Context) -> str:
    """A site's stable id within its study: 'NCT02513394-' + a hash of facility, city, state, zip, country."""
    if not isinstance(value, dict):
        raise MappingValueError("expected a location object")
    parts = [str(value.get(k) or "").strip().lower() for k in ("facility", "city", "state", "zip", "country")]
    if not any(parts):
        raise MappingValueError("a location needs a facility or an address")
    return f"{ctx.source_id}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:16]}"


# -- hospital extracts ---------------------------------------------------------------------------
@transform("nhs-number")
def nhs_number(value: object, ctx: Context) -> str:
    """'943 476 5919' -> '9434765919'; a wrong check digit is an error."""
    s = normalise_nhs_number(str(value))
    if not is_valid_nhs_number(s):
        raise MappingValueError(f"'{value}' is not a valid NHS number (10 digits, Modulus 11 check digit)")
    return s


@transform("translate-code")
def translate_code(value: object, ctx: Context, system: str = "", targets: list[str] | tuple = (),
                   display_from: str | None = None, unmapped: str = "keep") -> dict:
    """A local code -> CodeableConcept: the local coding first, then its ConceptMap translations.

    ``unmapped: keep`` keeps a code with no translation as a local-only coding; ``error`` rejects the row.
    """
    code = str(value).strip()
    display = ctx.record.get(display_from) if display_from else None
    codings = [{"system": system, "code": code, **({"display": display} if display else {})}]
    found = False
    for target in targets:
        for t in (ctx.conceptmaps.translate(code, system, target_system=target) if ctx.conceptmaps else []):
            if t.is_match:
                coding = {"system": t.system, "code": t.code}
                if t.display:
                    coding["display"] = t.display
                if coding not in codings:
                    codings.append(coding)
                found = True
    if not found and unmapped == "error":
        raise MappingValueError(f"local code '{code}' has no translation to {', '.join(targets)} in the "
                                "ConceptMaps under mappings/")
    out: dict = {"coding": codings}
    if display:
        out["text"] = display
    return out
