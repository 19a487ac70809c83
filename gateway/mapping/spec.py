"""Mapping files (mappings/*.yaml): load, check with marshmallow, and turn into typed specs.

A broken file raises MappingFileError naming the file, the field path and what was expected:
``mappings/x.yaml: resources[0].fields.status.table: unknown table 'sttus' (expected one of: phase, status)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from gateway.datafiles import field_errors
from gateway.fhir import conventions
from gateway.fhir.models import SUPPORTED_TYPES

# Verbs a field rule may use. Steps (the ones that change the value) run in the order written.
SOURCE_VERBS = ("from", "const", "ref")
STEP_VERBS = ("transform", "table", "coding", "characteristic", "extension")
OTHER_VERBS = ("args", "type", "required")
RESOURCE_VERBS = ("each", "key", "when", "mode")
ALL_VERBS = frozenset(SOURCE_VERBS + STEP_VERBS + OTHER_VERBS + RESOURCE_VERBS)

VALUE_TYPES = ("valueBoolean", "valueCode", "valueString", "valueMarkdown", "valueInteger", "valueDecimal",
               "valueDate", "valueDateTime", "valueUri", "valueCodeableConcept", "valueCoding", "valueRange",
               "valueQuantity", "valueReference")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans (only true/false) and no implicit dates: YAML 1.1 would read the table key NO (or Yes,
    on, off) as a boolean, and 2015-08-01 as a date object where FHIR wants the string."""


_DROPPED = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp"}
_Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag not in _DROPPED]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


class MappingFileError(ValueError):
    """A mapping file that cannot be used; the message says where and what was expected."""


@dataclass
class Rule:
    """One field rule: a source (from/const/ref) then steps, in the order the file wrote them."""

    paths: list[str] = field(default_factory=list)
    const: object = None
    has_const: bool = False
    ref: str | None = None
    steps: list[tuple[str, object]] = field(default_factory=list)
    args: dict = field(default_factory=dict)
    value_type: str | None = None
    required: bool = False


@dataclass
class Key:
    """The stable identifier a resource is written under (conditional on it)."""

    system: str | None = None  # None with any_of: match any of the resource's identifiers
    rule: Rule | None = None
    any_of: list[str] = field(default_factory=list)


@dataclass
class ResourceSpec:
    name: str
    type: str
    key: Key
    fields: dict[str, list[Rule]]
    each: str | None = None
    when: str | None = None
    mode: str = "upsert"  # upsert: PUT Type?identifier=..; create: POST with ifNoneExist


@dataclass
class Mapping:
    name: str
    description: str
    reader: str
    source_id: list[str]
    resources: list[ResourceSpec]
    tables: dict[str, dict]
    settings: dict
    hierarchy: Rule | None = None
    path: Path | None = None
    verbs: frozenset[str] = frozenset()


# -- marshmallow schemas (shape checks; cross references are checked after) -------------------
def _str_or_list(value: object) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return True
    raise ValidationError("expected a source path (string) or a list of them")


class RuleSchema(Schema):
    class Meta:
        unknown = RAISE

    from_ = fields.Raw(data_key="from", validate=_str_or_list)
    const = fields.Raw(allow_none=True)
    ref = fields.String()
    transform = fields.String()
    args = fields.Dict(keys=fields.String())
    table = fields.String()
    coding = fields.String()
    characteristic = fields.String()
    extension = fields.String()
    type = fields.String(validate=validate.OneOf(VALUE_TYPES))
    required = fields.Boolean()

    @validates_schema
    def _one_source(self, data: dict, **_: object) -> None:
        sources = [k for k in ("from_", "const", "ref") if k in data]
        if len(sources) > 1:
            raise ValidationError("use only one of from, const, ref")
        if not sources and "transform" not in data:
            raise ValidationError("a rule needs a source: from, const, ref or a transform")
        if "extension" in data and "type" not in data:
            raise ValidationError("an extension needs its value type, e.g. type: valueCode", "type")


class AnyOfKeySchema(Schema):
    """key: {any_of: [systems]}: write under whichever of the resource's identifiers already exists."""

    class Meta:
        unknown = RAISE

    any_of = fields.List(fields.String(), required=True, validate=validate.Length(min=1))


class ResourceSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9-]*$",
                                                                 error="expected a lower-case name like 'site'"))
    type = fields.String(required=True, validate=validate.OneOf(sorted(SUPPORTED_TYPES),
                                                                error="expected a FHIR R4 resource type"))
    key = fields.Dict(required=True)
    each = fields.String()
    when = fields.String()
    mode = fields.String(validate=validate.OneOf(["upsert", "create"]))
    fields_ = fields.Dict(data_key="fields", keys=fields.String(), required=True)


class MappingSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True)
    description = fields.String(required=True)
    reader = fields.String(required=True)
    source_id = fields.Raw(required=True, validate=_str_or_list)
    settings = fields.Dict(keys=fields.String(), load_default=dict)
    tables = fields.Dict(keys=fields.String(), values=fields.Dict(), load_default=dict)
    hierarchy = fields.Dict()
    resources = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1))


# -- loading -------------------------------------------------------------------------------------
def _header_verbs(text: str) -> set[str] | None:
    """The verbs the header comment lists ('# verbs: from, const, ...'), or None without a header."""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"#\s*verbs:\s*(.+)$", line, re.IGNORECASE)
        if m:
            return {v.strip() for v in m.group(1).split(",") if v.strip()}
    return None


def _substitute(node: object, variables: dict, where: str, errors: list[str]) -> object:
    """Replace ${NAME} with a setting or a gateway.fhir.conventions constant, recursively."""
    if isinstance(node, str):
        def repl(m: re.Match) -> str:
            name = m.group(1)
            if name in variables:
                return str(variables[name])
            value = getattr(conventions, name, None)
            if isinstance(value, str):
                return value
            errors.append(f"{where}: unknown variable ${{{name}}} (expected a key of settings or a string "
                          "constant of gateway/fhir/conventions.py, e.g. ${CTGOV})")
            return m.group(0)
        return _VAR.sub(repl, node)
    if isinstance(node, dict):
        return {k: _substitute(v, variables, f"{where}.{k}" if where else str(k), errors) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, variables, f"{where}[{i}]", errors) for i, v in enumerate(node)]
    return node


def _rule(raw: object, where: str, errors: list[str]) -> Rule | None:
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a rule (a mapping with from/const/ref/transform), got {raw!r}")
        return None
    try:
        data = RuleSchema().load(raw)
    except ValidationError as exc:
        errors.extend(field_errors(exc.messages, where))
        return None
    src = data.get("from_")
    rule = Rule(paths=[src] if isinstance(src, str) else list(src or []), const=data.get("const"),
                has_const="const" in data, ref=data.get("ref"), args=data.get("args") or {},
                value_type=data.get("type"), required=data.get("required", False))
    rule.steps = [(k, raw[k]) for k in raw if k in STEP_VERBS]
    return rule


def load_mapping(path: Path) -> Mapping:
    """Read and check one mapping file; raise MappingFileError listing every problem found."""
    from gateway.mapping import readers, transforms  # the registries the file names

    text = path.read_text(encoding="utf-8")
    label = str(path)
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise MappingFileError(f"{label}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise MappingFileError(f"{label}: expected a mapping (name, description, reader, resources), got "
                               f"{type(raw).__name__}")
    errors: list[str] = []
    declared = _header_verbs(text)
    if declared is None:
        errors.append("(header): the file must start with a comment listing its verbs, e.g. "
                      "'# verbs: from, const, table, transform'")
    try:
        top = MappingSchema().load(raw)
    except ValidationError as exc:
        raise MappingFileError(f"{label}: " + f"\n{label}: ".join(field_errors(exc.messages))) from None
    settings = top["settings"]
    top = _substitute(top, settings, "", errors)
    if top["name"] != path.stem:
        errors.append(f"name: '{top['name']}' must match the file name ('{path.stem}')")
    if top["reader"] not in readers.READERS:
        errors.append(f"reader: unknown reader '{top['reader']}' (expected one of: "
                      f"{', '.join(sorted(readers.READERS))})")
    used: set[str] = set()
    tables = top["tables"]
    specs: list[ResourceSpec] = []
    names: list[str] = []

    def check_rule(rule: Rule | None, where: str, raw_rule: dict) -> None:
        if rule is None:
            return
        used.update(k for k in raw_rule if k in ALL_VERBS)
        for verb, arg in rule.steps:
            if verb == "transform" and arg not in transforms.TRANSFORMS:
                errors.append(f"{where}.transform: unknown transform '{arg}' (expected one of: "
                              f"{', '.join(sorted(transforms.TRANSFORMS))})")
            elif verb == "table" and arg not in tables:
                errors.append(f"{where}.table: unknown table '{arg}' (expected one of: "
                              f"{', '.join(sorted(tables)) or 'no tables defined'})")
            elif verb == "characteristic" and not isinstance(getattr(conventions, str(arg), None), tuple):
                errors.append(f"{where}.characteristic: '{arg}' is not a characteristic code of "
                              "gateway/fhir/conventions.py (expected e.g. AGE, SEX, HEALTHY_VOLUNTEERS)")
        if rule.ref is not None and rule.ref not in names:
            errors.append(f"{where}.ref: '{rule.ref}' is not a resource defined above this one (expected one "
                          f"of: {', '.join(names) or 'none yet'})")

    for i, res in enumerate(top["resources"]):
        where = f"resources[{i}]"
        try:
            r = ResourceSchema().load(res)
        except ValidationError as exc:
            errors.extend(field_errors(exc.messages, where))
            continue
        used.update(k for k in res if k in RESOURCE_VERBS)
        if r["name"] in names:
            errors.append(f"{where}.name: '{r['name']}' is used twice")
        key_raw = r["key"]
        key_rule = None
        if "any_of" not in key_raw:
            if not isinstance(key_raw.get("system"), str):
                errors.append(f"{where}.key.system: expected the identifier system (a URI), or use "
                              "any_of: [systems]")
            key_rule = _rule({k: v for k, v in key_raw.items() if k != "system"}, f"{where}.key", errors)
            check_rule(key_rule, f"{where}.key", key_raw)
        else:
            try:
                AnyOfKeySchema().load(key_raw)
            except ValidationError as exc:
                errors.extend(field_errors(exc.messages, f"{where}.key"))
        key = Key(system=key_raw.get("system"), rule=key_rule, any_of=list(key_raw.get("any_of") or []))
        flds: dict[str, list[Rule]] = {}
        for target, raw_rules in r["fields_"].items():
            rules = raw_rules if isinstance(raw_rules, list) else [raw_rules]
            if len(rules) > 1 and not target.endswith("[]"):
                errors.append(f"{where}.fields.{target}: several rules need a list target ('{target}[]')")
            out = []
            for j, rr in enumerate(rules):
                w = f"{where}.fields.{target}" + (f"[{j}]" if isinstance(raw_rules, list) else "")
                rule = _rule(rr, w, errors)
                check_rule(rule, w, rr if isinstance(rr, dict) else {})
                if rule is not None:
                    out.append(rule)
            flds[target] = out
        if key.any_of and "identifier[]" not in flds and "identifier" not in flds:
            errors.append(f"{where}.key.any_of: needs an 'identifier' field to take the identifiers from")
        specs.append(ResourceSpec(r["name"], r["type"], key, flds, r.get("each"), r.get("when"),
                                  r.get("mode", "upsert")))
        names.append(r["name"])
    hierarchy = None
    if "hierarchy" in top:
        hierarchy = _rule(top["hierarchy"], "hierarchy", errors)
        check_rule(hierarchy, "hierarchy", top["hierarchy"])
    if declared is not None:
        undeclared = sorted(used - declared)
        if undeclared:
            errors.append(f"(header): verbs used but not listed in the header comment: {', '.join(undeclared)} "
                          f"(the header lists: {', '.join(sorted(declared))})")
    if errors:
        raise MappingFileError("\n".join(f"{label}: {e}" for e in errors))
    sid = top["source_id"]
    return Mapping(top["name"], top["description"], top["reader"], [sid] if isinstance(sid, str) else sid,
                   specs, tables, settings, hierarchy, path, frozenset(used))


__all__ = ["Mapping", "MappingFileError", "ResourceSpec", "Rule", "Key", "load_mapping"]
