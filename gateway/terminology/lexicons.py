"""Lexicons for eligibility criteria (mappings/lexicons/*.yaml): analytes, genes, drugs and classes, stages, context
(and the check of diagnoses.yaml, which gateway/mapping/eligibility/diagnoses.py reads).

Loaded once, checked with marshmallow (a broken file raises LexiconError naming the file and the field). The
terminology layer sits below mapping and matching, so both read these: the extractor to recognise words, the
matcher to judge a patient's product-level drug code against an ingredient or class criterion.

>>> lx = default_lexicons()
>>> lx.drug_classes("1873980")            # ribociclib Oral Product -> its ingredient's classes
{'cdk4-6-inhibitor'}
>>> lx.is_member("1601374", "cdk4-6-inhibitor")
True
>>> lx.ingredients("1946827")
{'1946825'}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from gateway.datafiles import BUNDLED_MAPPINGS, field_errors

DEFAULT_PATH = BUNDLED_MAPPINGS / "lexicons"  # package data (gateway/datafiles.py)
CONTEXT_CATEGORIES = ("NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HYPOTHETICAL", "HISTORICAL", "FAMILY",
                      "CONDITIONAL", "EXCEPTION", "PROHIBITION", "TERMINATE")
CONTEXT_DIRECTIONS = ("FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO")


class LexiconError(ValueError):
    """A lexicon file that cannot be used; the message names the file, the field and what was expected."""


# -- schemas -------------------------------------------------------------------------------------
class _Strict(Schema):
    class Meta:
        unknown = RAISE


class AnalyteSchema(_Strict):
    names = fields.List(fields.String(validate=validate.Length(min=1)), required=True, validate=validate.Length(min=1))
    loinc = fields.List(fields.String(validate=validate.Regexp(r"^\d{1,7}-\d$")), required=True,
                        validate=validate.Length(min=1))
    display = fields.String(required=True)
    unit = fields.String(required=True)
    accepts = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    molar_mass = fields.Float(validate=validate.Range(min=0, min_inclusive=False))  # g/mol: mg/dL <-> umol/L
    checked = fields.String(required=True)


class AnalytesFileSchema(_Strict):
    analytes = fields.Dict(keys=fields.String(), values=fields.Nested(AnalyteSchema), required=True)
    units = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class VariantSchema(_Strict):
    name = fields.String(required=True)
    pattern = fields.String(required=True)


class GeneSchema(_Strict):
    hgnc = fields.String(required=True, validate=validate.Regexp(r"^HGNC:\d+$"))
    names = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    variants = fields.List(fields.Nested(VariantSchema), required=True)
    checked = fields.String(required=True)


class GenesFileSchema(_Strict):
    genes = fields.Dict(keys=fields.String(validate=validate.Regexp(r"^[A-Z0-9-]+$")), values=fields.Nested(GeneSchema),
                        required=True)


class DrugClassSchema(_Strict):
    display = fields.String(required=True)
    names = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    parent = fields.String()




class StageSchema(_Strict):
    snomed = fields.String(allow_none=True, required=True, validate=validate.Regexp(r"^\d{6,18}$"))
    parent = fields.String(allow_none=True, required=True)


class StagesFileSchema(_Strict):
    stages = fields.Dict(keys=fields.String(validate=validate.Regexp(r"^(0|I{1,3}|IV)[A-C]?$")),
                         values=fields.Nested(StageSchema), required=True)


class ContextRuleSchema(Schema):
    class Meta:
        unknown = RAISE

    literal = fields.String(required=True, validate=validate.Length(min=1))
    category = fields.String(required=True, validate=validate.OneOf(CONTEXT_CATEGORIES))
    direction = fields.String(required=True, validate=validate.OneOf(CONTEXT_DIRECTIONS))
    pattern = fields.Raw(allow_none=True)  # medSpaCy token patterns: we use the literal only
    allowed_types = fields.Raw(allow_none=True)
    excluded_types = fields.Raw(allow_none=True)
    max_scope = fields.Raw(allow_none=True)
    max_targets = fields.Raw(allow_none=True)
    terminated_by = fields.Raw(allow_none=True)
    metadata = fields.Raw(allow_none=True)


class ContextFileSchema(_Strict):
    disabled = fields.List(fields.String(), load_default=list)
    rules = fields.List(fields.Nested(ContextRuleSchema), required=True)


class MedspacyContextFileSchema(Schema):
    context_rules = fields.List(fields.Nested(ContextRuleSchema), required=True)


# SNOMED CT identifiers: the last digit is a Verhoeff check digit over the others, the two before it the partition
# ('00' a concept id, '10' a concept id in an extension's namespace). A wrong check digit proves a mistyped id.
_VERHOEFF_D = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
               (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
               (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
               (9, 8, 7, 6, 5, 4, 3, 2, 1, 0))
_VERHOEFF_P = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 2, 4, 1),
               (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
               (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8))


def is_sctid(code: str) -> bool:
    """True if ``code`` is shaped as a SNOMED CT concept id: 6 to 18 digits, no leading zero, concept partition,
    valid Verhoeff check digit.

    >>> is_sctid("13645005"), is_sctid("13645006"), is_sctid("1064811000000103")
    (True, False, True)
    """
    if not re.fullmatch(r"[1-9]\d{5,17}", code or "") or code[-3:-1] not in ("00", "10"):
        return False
    c = 0
    for i, digit in enumerate(reversed(code)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][int(digit)]]
    return c == 0


class _SctidValidator(validate.Validator):
    error = "not a SNOMED CT concept id (6-18 digits, concept partition, Verhoeff check digit)"

    def __call__(self, value: str) -> str:
        if not is_sctid(value):
            raise ValidationError(self.error)
        return value


_SCTID = _SctidValidator()


class DrugSchema(_Strict):
    """One drug of drugs.yaml: an RxNorm ingredient, its classes, the RxNorm product codes EHRs send, and its NHS
    dm+d ids (``dmd`` the VTM, ``dmd_products`` VMPs), which are SNOMED CT identifiers (Verhoeff-checked)."""

    rxnorm = fields.String(required=True, validate=validate.Regexp(r"^\d+$"))
    names = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    classes = fields.List(fields.String(), required=True)
    products = fields.List(fields.String(validate=validate.Regexp(r"^\d+$")), required=True)
    dmd = fields.String(allow_none=True, required=True, validate=_SCTID)
    dmd_products = fields.List(fields.String(validate=_SCTID), load_default=list)
    checked = fields.String(required=True)


class DrugsFileSchema(_Strict):
    classes = fields.Dict(keys=fields.String(validate=validate.Regexp(r"^[a-z0-9-]+$")),
                          values=fields.Nested(DrugClassSchema), required=True)
    drugs = fields.Dict(keys=fields.String(), values=fields.Nested(DrugSchema), required=True)
    compounds = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), load_default=dict)


class DiagnosisSchema(_Strict):
    """One general diagnosis of diagnoses.yaml (read by gateway/mapping/eligibility/diagnoses.py)."""

    display = fields.String(required=True, validate=validate.Length(min=1))
    snomed = fields.String(required=True, validate=_SCTID)
    includes = fields.List(fields.String(validate=_SCTID), required=True)
    names = fields.List(fields.String(validate=validate.Length(min=1)), required=True, validate=validate.Length(min=1))
    caps = fields.List(fields.String(validate=validate.Length(min=1)))
    patterns = fields.List(fields.String(validate=validate.Length(min=1)))
    checked = fields.String(required=True, validate=validate.Length(min=1))


class DiagnosesFileSchema(_Strict):
    diagnoses = fields.Dict(keys=fields.String(validate=validate.Regexp(r"^[a-z0-9-]+$")),
                            values=fields.Nested(DiagnosisSchema), required=True)


# -- loaded data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Analyte:
    key: str
    names: tuple[str, ...]
    loinc: tuple[str, ...]
    display: str
    unit: str
    accepts: tuple[str, ...] = ()  # UCUM units a threshold for this analyte may be written in ('{ULN}' included)
    molar_mass: float | None = None  # g/mol, to compare a mass concentration with an amount-of-substance one


@dataclass(frozen=True)
class Gene:
    symbol: str
    hgnc: str
    names: tuple[str, ...]
    variants: tuple[tuple[str, re.Pattern], ...]


@dataclass(frozen=True)
class Drug:
    key: str
    rxnorm: str
    names: tuple[str, ...]
    classes: tuple[str, ...]
    products: tuple[str, ...]
    dmd: str | None  # NHS dm+d VTM id (the ingredient level), None where no id was verified
    dmd_products: tuple[str, ...] = ()  # NHS dm+d VMP ids (products) of this drug


@dataclass(frozen=True)
class DrugClass:
    code: str
    display: str
    names: tuple[str, ...]
    parent: str | None


@dataclass(frozen=True)
class ContextRule:
    literal: str
    category: str
    direction: str


@dataclass
class Lexicons:
    """Every lexicon, with the indexes the extractor and the matcher look things up in."""

    analytes: dict[str, Analyte] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)  # written form (normalised) -> UCUM code
    genes: dict[str, Gene] = field(default_factory=dict)
    drugs: dict[str, Drug] = field(default_factory=dict)
    classes: dict[str, DrugClass] = field(default_factory=dict)
    stages: dict[str, dict] = field(default_factory=dict)
    compounds: dict[str, tuple[str, ...]] = field(default_factory=dict)  # 'pd-1/pd-l1' -> (anti-pd-1, anti-pd-l1)
    context: list[ContextRule] = field(default_factory=list)
    _by_code: dict[str, Drug] = field(default_factory=dict)  # ingredient or product RxNorm -> drug
    _by_dmd: dict[str, Drug] = field(default_factory=dict)  # NHS dm+d VTM or VMP id -> drug

    # -- drugs (the matching side's API) ---------------------------------------------------------
    def ingredients(self, code: str) -> set[str]:
        """RxNorm ingredient codes of a drug code (an ingredient itself, or a product we list); {} if unknown."""
        drug = self._by_code.get(str(code))
        return {drug.rxnorm} if drug else set()

    def drug_classes(self, code: str) -> set[str]:
        """Our drug-class codes (with their parent classes) of an RxNorm ingredient or product code."""
        drug = self._by_code.get(str(code))
        out: set[str] = set()
        for c in drug.classes if drug else ():
            while c and c not in out:
                out.add(c)
                c = self.classes[c].parent if c in self.classes else None
        return out

    def is_member(self, drug_code: str, class_code: str) -> bool:
        """True if the RxNorm code (ingredient or product) is the class's drug or a member of the class
        (ingredient code as class_code: the same ingredient)."""
        if class_code in self.classes:
            return class_code in self.drug_classes(drug_code)
        return str(class_code) in self.ingredients(drug_code)

    def class_members(self, class_code: str) -> set[str]:
        """Every RxNorm ingredient and product code in the class (and its subclasses)."""
        out: set[str] = set()
        for code, drug in self._by_code.items():
            if class_code in self.drug_classes(drug.rxnorm):
                out.add(code)
        return out

    def drug(self, code: str) -> Drug | None:
        return self._by_code.get(str(code))

    def dmd_drug(self, code: str) -> Drug | None:
        """The drug an NHS dm+d id (a VTM or a VMP we list) stands for; None if the lexicon does not list it."""
        return self._by_dmd.get(str(code).strip())

    def stage_ancestors(self, stage: str) -> list[str]:
        """'IIIB' -> ['IIIB', 'III']."""
        out = []
        s: str | None = stage
        while s and s in self.stages and s not in out:
            out.append(s)
            s = self.stages[s].get("parent")
        return out


def normalise_unit(written: str) -> str:
    """'x 10³/µL' -> 'x10^3/ul' (the key the units table uses)."""
    s = written.strip().lower().replace("µ", "u").replace("μ", "u").replace(" ", "")
    s = s.replace("³", "^3").replace("⁹", "^9").replace("²", "^2").replace("×", "x")
    return s


def _load_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise LexiconError(f"{path}: cannot be read as YAML: {exc}") from None


def _check(path: Path, schema: Schema, data: object) -> dict:
    try:
        return schema.load(data if isinstance(data, dict) else {"": data})
    except ValidationError as exc:
        lines = [f"{path}: {m}" for m in field_errors(exc.messages)]
        raise LexiconError("\n".join(lines)) from None


def load_lexicons(folder: Path = DEFAULT_PATH) -> Lexicons:
    """Load and check every lexicon under ``folder``; raises LexiconError naming the file and the field."""
    lx = Lexicons()
    path = folder / "analytes.yaml"
    data = _check(path, AnalytesFileSchema(), _load_yaml(path))
    for key, a in data["analytes"].items():
        lx.analytes[key] = Analyte(key, tuple(n.lower() for n in a["names"]), tuple(a["loinc"]), a["display"],
                                   a["unit"], tuple(a["accepts"]), a.get("molar_mass"))
    lx.units = {normalise_unit(k): v for k, v in data["units"].items()}

    path = folder / "genes.yaml"
    data = _check(path, GenesFileSchema(), _load_yaml(path))
    for symbol, g in data["genes"].items():
        variants = []
        for i, v in enumerate(g["variants"]):
            try:
                variants.append((v["name"], re.compile(v["pattern"], re.IGNORECASE)))
            except re.error as exc:
                raise LexiconError(f"{path}: genes.{symbol}.variants.{i}.pattern: not a regular expression "
                                   f"({exc})") from None
        lx.genes[symbol] = Gene(symbol, g["hgnc"], tuple(n.lower() for n in g["names"]), tuple(variants))

    path = folder / "drugs.yaml"
    data = _check(path, DrugsFileSchema(), _load_yaml(path))
    for code, c in data["classes"].items():
        lx.classes[code] = DrugClass(code, c["display"], tuple(n.lower() for n in c["names"]), c.get("parent"))
    for code, c in lx.classes.items():
        if c.parent and c.parent not in lx.classes:
            raise LexiconError(f"{path}: classes.{code}.parent: unknown class '{c.parent}'")
    for phrase, codes in data["compounds"].items():
        for cls in codes:
            if cls not in lx.classes:
                raise LexiconError(f"{path}: compounds.{phrase}: unknown class '{cls}'")
        lx.compounds[phrase.lower()] = tuple(codes)
    for key, d in data["drugs"].items():
        for cls in d["classes"]:
            if cls not in lx.classes:
                raise LexiconError(f"{path}: drugs.{key}.classes: unknown class '{cls}' (expected one of: "
                                   f"{', '.join(sorted(lx.classes))})")
        drug = Drug(key, d["rxnorm"], tuple(n.lower() for n in d["names"]), tuple(d["classes"]),
                    tuple(d["products"]), d["dmd"], tuple(d["dmd_products"]))
        lx.drugs[key] = drug
        for code in (drug.rxnorm, *drug.products):
            if code in lx._by_code:
                raise LexiconError(f"{path}: drugs.{key}: RxNorm code {code} is also listed for "
                                   f"'{lx._by_code[code].key}'")
            lx._by_code[code] = drug
        for name, code in [("dmd", drug.dmd), *(("dmd_products", c) for c in drug.dmd_products)]:
            if code is None:
                continue
            if code in lx._by_dmd:
                raise LexiconError(f"{path}: drugs.{key}.{name}: NHS dm+d id {code} is also listed for "
                                   f"'{lx._by_dmd[code].key}'")
            lx._by_dmd[code] = drug

    path = folder / "stages.yaml"
    data = _check(path, StagesFileSchema(), _load_yaml(path))
    lx.stages = data["stages"]
    for s, v in lx.stages.items():
        if v["parent"] is not None and v["parent"] not in lx.stages:
            raise LexiconError(f"{path}: stages.{s}.parent: unknown stage '{v['parent']}'")

    path = folder / "medspacy_context_rules.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LexiconError(f"{path}: cannot be read as JSON: {exc}") from None
    data = _check(path, MedspacyContextFileSchema(), raw)
    rules = [ContextRule(r["literal"].lower(), r["category"], r["direction"]) for r in data["context_rules"]]
    path = folder / "context.yaml"
    data = _check(path, ContextFileSchema(), _load_yaml(path))
    disabled = {d.lower() for d in data["disabled"]}
    unknown = disabled - {r.literal for r in rules}
    if unknown:
        raise LexiconError(f"{path}: disabled: not a medSpaCy rule literal: {', '.join(sorted(unknown))}")
    rules = [r for r in rules if r.literal not in disabled]
    rules += [ContextRule(r["literal"].lower(), r["category"], r["direction"]) for r in data["rules"]]
    lx.context = rules
    return lx


def read_diagnoses(path: Path) -> dict[str, dict]:
    """diagnoses.yaml checked (schema, patterns that compile, no name or capitals-only name given to two diagnoses):
    {key: entry}, each entry's ``patterns`` compiled. Raises LexiconError naming the file and the field."""
    data = _check(path, DiagnosesFileSchema(), _load_yaml(path))
    seen: dict[str, str] = {}
    for key, d in data["diagnoses"].items():
        compiled = []
        for i, p in enumerate(d.get("patterns") or []):
            try:
                compiled.append(re.compile(p, re.IGNORECASE))
            except re.error as exc:
                raise LexiconError(f"{path}: diagnoses.{key}.patterns.{i}: not a regular expression ({exc})") from None
        d["patterns"] = compiled
        for field_name in ("names", "caps"):
            for n in (x.lower() for x in d.get(field_name) or ()):
                if n in seen:
                    raise LexiconError(f"{path}: diagnoses.{key}.{field_name}: '{n}' is also a name of '{seen[n]}'")
                seen[n] = key
    return data["diagnoses"]


def check_lexicons(folder: Path = DEFAULT_PATH) -> list[str]:
    """Problems with the lexicons under ``folder`` (one line each), diagnoses.yaml included; [] if they load."""
    problems: list[str] = []
    for load in (load_lexicons, lambda f: read_diagnoses(f / "diagnoses.yaml")):
        try:
            load(folder)
        except LexiconError as exc:
            problems += str(exc).splitlines()
    return problems


@lru_cache(maxsize=4)
def _cached(folder: str) -> Lexicons:
    return load_lexicons(Path(folder))


def lexicons_for(folder: Path) -> Lexicons:
    """The lexicons under ``folder``, loaded once per process."""
    return _cached(str(Path(folder).resolve()))


def default_lexicons() -> Lexicons:
    """The project's lexicons (mappings/lexicons), loaded once per process."""
    return lexicons_for(DEFAULT_PATH)


def drug_classes(code: str) -> set[str]:
    """Our drug classes of an RxNorm ingredient or product code (project lexicons)."""
    return default_lexicons().drug_classes(code)


def is_member(drug_code: str, class_code: str) -> bool:
    """True if the RxNorm code belongs to the drug class (or is that ingredient), per the project lexicons."""
    return default_lexicons().is_member(drug_code, class_code)


__all__ = ["Analyte", "ContextRule", "Drug", "DrugClass", "Gene", "LexiconError", "Lexicons", "check_lexicons",
           "default_lexicons", "drug_classes", "is_member", "is_sctid", "lexicons_for", "load_lexicons",
           "normalise_unit", "read_diagnoses"]
