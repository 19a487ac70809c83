"""Apply a mapping to a payload: pure (no Flask, no database).

``map_payload("ctgov-v2", study_json)`` -> [MappedRecord(index=0, source_id='NCT02513394', bundle={transaction
Bundle: PUT Location?identifier=..., PUT Group?identifier=..., PUT ResearchStudy?identifier=...})]
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from gateway.fhir import conventions
from gateway.mapping.readers import READERS, RecordError
from gateway.mapping.spec import Mapping, ResourceSpec, Rule
from gateway.mapping.transforms import TRANSFORMS, Context, MappingValueError

_MISSING = object()
# Displays for the eligibility characteristic codes a mapping may name (`characteristic: AGE`).
_CHARACTERISTIC_DISPLAY = {"AGE": "Age", "SEX": "Sex", "DIAGNOSIS": "Diagnosis",
                           "HEALTHY_VOLUNTEERS": "Healthy volunteers accepted",
                           "ECOG": "ECOG Performance Status score", "KARNOFSKY": "Karnofsky Performance Status"}


@dataclass
class MappedRecord:
    """One source record, mapped: a transaction ``bundle``, or ``errors`` [(source field path, message)]."""

    index: int
    source_id: str | None
    bundle: dict | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    unreadable: bool = False  # the reader could not take a record from the input (bad JSON line, not an object)
    hierarchy: list[dict] = field(default_factory=list)  # side output for the terminology layer
    # entry index -> {top-level FHIR element: the source path it came from}, to name source fields in errors
    provenance: dict[int, dict[str, str]] = field(default_factory=dict)
    # entry index -> systems whose identifiers may already name this resource (see gateway.ingest)
    lookups: dict[int, list[str]] = field(default_factory=dict)
    # entry indexes whose resource already passed validation (see gateway.mapping.ingest.prevalidate)
    validated: set[int] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.bundle is not None and not self.errors


class _RecordFailed(Exception):
    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


def get_path(data: object, path: str) -> object:
    """get_path({'a': {'b': [1]}}, 'a.b') -> [1]; a missing step gives _MISSING."""
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def _empty(v: object) -> bool:
    return v is _MISSING or v is None or v == "" or v == [] or v == {}


def _resolve(ctx: Context, path: str) -> tuple[object, str]:
    """A source path -> (value, its printable path). '$' = the record, '@' / '@.x' = the `each` item."""
    if path == "$":
        return ctx.record, "$"
    if path == "@" or path.startswith("@."):
        base = ctx.item_path or "@"
        if path == "@":
            return ctx.item, base
        return get_path(ctx.item, path[2:]), f"{base}.{path[2:]}"
    return get_path(ctx.record, path), path


class _Evaluator:
    def __init__(self, mapping: Mapping, ctx: Context, fullurls: dict[str, list[str]]):
        self.mapping, self.ctx, self.fullurls = mapping, ctx, fullurls

    def rule(self, rule: Rule, target: str) -> tuple[object, str]:
        """Run one rule; return (value or _MISSING, the source path it came from)."""
        value: object = _MISSING
        where = target
        if rule.ref is not None:
            urls = self.fullurls.get(rule.ref) or []
            refs = [{"reference": u} for u in urls]
            value = refs if len(refs) != 1 or target.endswith("[]") else refs[0]
            if not refs:
                value = _MISSING
        elif rule.has_const:
            value = rule.const
        elif rule.paths:
            for p in rule.paths:
                v, where = _resolve(self.ctx, p)
                if not _empty(v):
                    value = v
                    break
            else:
                where = rule.paths[0] if not rule.paths[0].startswith("@") else _resolve(self.ctx, rule.paths[0])[1]
        else:
            value = None  # a transform without a source reads the record through ctx
        sourceless = not rule.paths and not rule.has_const and rule.ref is None
        if not sourceless and _empty(value):
            if rule.required:
                raise _RecordFailed(where, "is required but missing")
            return _MISSING, where
        self.ctx.path = where
        for verb, arg in rule.steps:
            value = self.step(verb, arg, value, rule, where)
            if _empty(value):
                if rule.required:
                    raise _RecordFailed(where, "is required but gave no value")
                return _MISSING, where
        return value, where

    def step(self, verb: str, arg: object, value: object, rule: Rule, where: str) -> object:
        if verb == "transform":
            try:
                return TRANSFORMS[str(arg)](value, self.ctx, **rule.args)
            except MappingValueError as exc:
                raise _RecordFailed(exc.path or where, exc.message) from None
            except (TypeError, AttributeError, ValueError) as exc:
                # a source value of a shape the transform does not take (a list for a string ...): this record
                # is rejected with the reason, the others go on
                raise _RecordFailed(where, f"cannot be used by transform '{arg}': {exc}") from None
        if verb == "table":
            table = self.mapping.tables[str(arg)]
            key = value if isinstance(value, str | int | bool) else str(value)
            if key in table:
                return table[key]
            if "_default" in table:
                return table["_default"]
            raise _RecordFailed(where, f"'{value}' is not a known value (table '{arg}' has: "
                                       f"{', '.join(str(k) for k in table)})")
        if verb == "coding":
            if isinstance(value, dict):
                coding = {"system": arg, "code": value.get("code")}
                if value.get("display"):
                    coding["display"] = value["display"]
                return {"coding": [coding], **({"text": value["display"]} if value.get("display") else {})}
            return {"coding": [{"system": arg, "code": str(value)}]}
        if verb == "characteristic":
            system, code = getattr(conventions, str(arg))
            display = _CHARACTERISTIC_DISPLAY.get(str(arg), str(arg))
            return {"code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
                    _value_key(value): value, "exclude": False}
        if verb == "extension":
            return {"url": arg, rule.value_type or "valueString": value}
        raise AssertionError(f"unknown step {verb}")  # the loader refuses unknown verbs


def _value_key(value: object) -> str:
    """Choose Group.characteristic.value[x] from the value's shape."""
    if isinstance(value, bool):
        return "valueBoolean"
    if isinstance(value, dict) and ("low" in value or "high" in value):
        return "valueRange"
    if isinstance(value, dict) and "value" in value:
        return "valueQuantity"
    return "valueCodeableConcept"  # {coding, text}


def _set(resource: dict, target: str, value: object) -> None:
    """Set a dotted target; 'x[]' appends (a list value extends)."""
    *parents, last = target.split(".")
    node = resource
    for p in parents:
        node = node.setdefault(p, {})
    if last.endswith("[]"):
        lst = node.setdefault(last[:-2], [])
        lst.extend(value if isinstance(value, list) else [value])
    else:
        node[last] = value


def _token(system: str, value: str) -> str:
    """system|value for a search URL: FHIR escapes , | $ \\ in token values; then percent-encode."""
    esc = value.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")
    return quote(f"{system}|{esc}", safe="/:|\\")


def _map_record(mapping: Mapping, index: int, record: dict, conceptmaps: object) -> MappedRecord:
    source_id = None
    for p in mapping.source_id:
        v = get_path(record, p)
        if not _empty(v):
            source_id = str(v)
            break
    out = MappedRecord(index, source_id)
    ctx = Context(record=record, source_id=source_id, conceptmaps=conceptmaps, settings=mapping.settings)
    fullurls: dict[str, list[str]] = {}
    entries: list[dict] = []
    ev = _Evaluator(mapping, ctx, fullurls)
    try:
        for spec in mapping.resources:
            if spec.when and _empty(get_path(record, spec.when)):
                continue
            if spec.each:
                items = get_path(record, spec.each)
                items = items if isinstance(items, list) else []
                for i, item in enumerate(items):
                    ctx.item, ctx.item_path = item, f"{spec.each}[{i}]"
                    entries.append(_build(spec, ev, fullurls, out, len(entries)))
                ctx.item, ctx.item_path = None, None
            else:
                entries.append(_build(spec, ev, fullurls, out, len(entries)))
        if mapping.hierarchy is not None:
            value, _ = ev.rule(mapping.hierarchy, "hierarchy")
            out.hierarchy = value if isinstance(value, list) else []
    except _RecordFailed as exc:
        out.errors.append((exc.path, exc.message))
        out.provenance.clear()
        out.lookups.clear()
        return out
    out.bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return out


def _build(spec: ResourceSpec, ev: _Evaluator, fullurls: dict[str, list[str]], out: MappedRecord,
           entry_index: int) -> dict:
    resource: dict = {"resourceType": spec.type}
    prov: dict[str, str] = {}
    for target, rules in spec.fields.items():
        for rule in rules:
            value, where = ev.rule(rule, target)
            if value is not _MISSING:
                _set(resource, target, value)
                prov.setdefault(target.split(".")[0].removesuffix("[]"), where)
    full_url = f"urn:uuid:{uuid.uuid4()}"
    fullurls.setdefault(spec.name, []).append(full_url)
    key = spec.key
    if key.any_of:
        idents = [i for i in resource.get("identifier") or [] if i.get("system") in key.any_of and i.get("value")]
        if not idents:
            raise _RecordFailed(prov.get("identifier", "identifier"),
                                f"gives no identifier in {', '.join(key.any_of)} to write the {spec.type} under")
        query = "identifier=" + ",".join(_token(i["system"], i["value"]) for i in idents)
        out.lookups[entry_index] = list(key.any_of)
    else:
        assert key.rule is not None
        value, where = ev.rule(Rule(paths=key.rule.paths, const=key.rule.const, has_const=key.rule.has_const,
                                    steps=key.rule.steps, args=key.rule.args, required=True), "identifier")
        ident = {"system": key.system, "value": str(value)}
        idents = resource.setdefault("identifier", [])
        if not any(i.get("system") == key.system and i.get("value") == ident["value"] for i in idents):
            idents.insert(0, ident)
        prov.setdefault("identifier", where)
        query = "identifier=" + _token(key.system or "", str(value))
    out.provenance[entry_index] = prov
    entry: dict = {"fullUrl": full_url, "resource": resource}
    if spec.mode == "create":
        entry["request"] = {"method": "POST", "url": spec.type, "ifNoneExist": query}
    else:
        entry["request"] = {"method": "PUT", "url": f"{spec.type}?{query}"}
    return entry


def map_payload(mapping: Mapping | str, payload: object, *, conceptmaps: object = None,
                registry: object = None) -> list[MappedRecord]:
    """Split ``payload`` with the mapping's reader and map each record; one bad record never stops the rest.

    ``mapping`` is a loaded Mapping or a name looked up in ``registry`` (default: the project's mappings/).
    Raises readers.PayloadError when the payload as a whole is unreadable (e.g. bad JSON).
    """
    if isinstance(mapping, str):
        from gateway.mapping.registry import default_registry

        reg = registry or default_registry()
        mapping = reg.get(mapping)  # type: ignore[attr-defined]
        conceptmaps = conceptmaps if conceptmaps is not None else reg.conceptmaps  # type: ignore[attr-defined]
    return map_records(mapping, READERS[mapping.reader](payload), conceptmaps=conceptmaps)


def map_records(mapping: Mapping, records: Iterable[tuple[int, object]], *, conceptmaps: object = None
                ) -> list[MappedRecord]:
    """Map records a reader has already taken from a payload: [(index, record or RecordError)] (a bulk import
    splits a large file once and maps its parts in several processes)."""
    out = []
    for index, record in records:
        if isinstance(record, RecordError):
            out.append(MappedRecord(index, None, errors=[(record.path, record.message)], unreadable=True))
        else:
            out.append(_map_record(mapping, index, record, conceptmaps))  # type: ignore[arg-type]
    return out
