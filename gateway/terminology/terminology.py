"""Code systems with hierarchy, cross-system bridges and a precomputed is-a closure.

>>> t = default_terminology()
>>> t.is_a(SNOMED, "393563007", MESH, "D000005910")  # glioblastoma is a kind of MeSH Glioma
True
>>> t.subsumes(ONCOTREE, "DIFG", "GB")
'subsumes'
"""

from __future__ import annotations

import csv
import difflib
import logging
import re
import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import orjson

from gateway.datafiles import BUNDLED_MAPPINGS
from gateway.fhir.conventions import ICD10, ICD10CM, MESH, ONCOTREE, SNOMED
from gateway.terminology.conceptmap import ConceptMapIndex, load_conceptmaps
from gateway.terminology.systems import (
    canonical_system,
    icd_structural_parent,
    normalise_coding,
)
from gateway.terminology.systems import (
    system_name as _system_name,
)
from gateway.terminology.text import loose_key, normalise_text, strip_modifiers

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (canonical system, normalised code)

DEFAULT_PATH = BUNDLED_MAPPINGS / "terminology"  # package data (gateway/datafiles.py)

# Short system names used in the synonym table (mappings/terminology/synonyms.tsv).
SHORT_SYSTEMS = {"sct": SNOMED, "icd10": ICD10, "icd10cm": ICD10CM, "mesh": MESH, "oncotree": ONCOTREE}

# How a bridging ConceptMap's equivalence turns into is-a edges (R4 ConceptMapEquivalence):
# 'up' = source is a kind of target; 'down' = target is a kind of source; 'both' = same concept.
_BRIDGE_DIRECTION = {"equivalent": "both", "equal": "both", "wider": "up", "subsumes": "up",
                     "narrower": "down", "specializes": "down"}

# Codes with structural parents (C71.9 -> C71) even when the loaded table does not list them.
_STRUCTURAL = (ICD10, ICD10CM)
# Fuzzy matching of free text only above this similarity (difflib ratio): catches 'metastasases'
# for 'metastases' but not 'breast' for 'brain'.
_FUZZY_CUTOFF = 0.9
# ancestors() remembered for at most this many codes the terminology does not know.
_OTHERS_MAX = 200_000


class Terminology:
    """Every loaded concept, its parents (within and across systems), synonyms and closure.

    Thread-safe for readers; ``add_hierarchy`` takes a lock and refreshes the affected closures.
    """

    def __init__(self) -> None:
        self._display: dict[Key, str] = {}
        self._parents: dict[Key, set[Key]] = defaultdict(set)
        self._secondary: set[Key] = set()
        self._closure: dict[Key, frozenset[Key]] = {}
        # ancestors() of codes outside the closure (unknown codes: just themselves), by the key as asked; emptied
        # whenever a concept, edge or display is added (an ICD code's structural parent depends on what is loaded)
        self._others: dict[tuple[str, str], frozenset[Key]] = {}
        self._generation = 0
        self._terms: dict[str, list[Key]] = defaultdict(list)  # normalised text -> concepts
        self._loose: dict[str, list[Key]] = defaultdict(list)  # loose_key -> concepts
        self._bag: dict[str, list[Key]] = defaultdict(list)  # loose words sorted: word order ignored
        self._lock = threading.Lock()
        # (text, key) given by add_term, indexed for resolve_text when a text is first resolved: a process that only
        # matches coded records never pays for normalising every display and synonym
        self._pending_terms: list[tuple[str, Key]] = []
        self._terms_lock = threading.Lock()
        self._resolved: dict[str, list[Key]] = {}  # resolve_text answers (fuzzy matching is ~10 ms)
        self.conceptmaps = ConceptMapIndex()
        self.codesystems: dict[str, dict] = {}  # canonical url -> CodeSystem metadata (no concepts)

    # -- building --------------------------------------------------------------------------------

    def key(self, system: str, code: str) -> Key:
        """(system, code) in canonical form: MeSH aliases -> one URI, D000005910 -> D005910."""
        return normalise_coding(system, code)

    def add_concept(self, system: str, code: str, display: str | None = None, parents: Iterable[str] = (),
                    *, secondary: bool = False, synonyms: Iterable[str] = ()) -> Key:
        """Add (or extend) one concept; parents are codes in the same system."""
        k = self.key(system, code)
        self._changed()
        if display and k not in self._display:
            self._display[k] = display
        for p in parents:
            pk = self.key(k[0], p)
            if pk != k:
                self._parents[k].add(pk)
        if secondary:
            self._secondary.add(k)
        for term in ([display] if display else []) + list(synonyms):
            self.add_term(term, k[0], k[1])
        return k

    def add_term(self, text: str, system: str, code: str) -> None:
        """Make free text ``text`` resolve to (system, code)."""
        k = self.key(system, code)
        with self._terms_lock:
            self._pending_terms.append((text, k))
            self._resolved.clear()

    def _index_terms(self) -> None:
        """Index the texts add_term was given since the last call (in the order given)."""
        with self._terms_lock:
            pending, self._pending_terms = self._pending_terms, []
            for text, k in pending:
                loose = loose_key(text)
                for index, tkey in ((self._terms, normalise_text(text)), (self._loose, loose),
                                    (self._bag, _bag(loose))):
                    if tkey and k not in index[tkey]:
                        index[tkey].append(k)

    def _changed(self) -> None:
        """The hierarchy (or what is loaded) changed: forget the remembered ancestors of unknown codes."""
        self._generation += 1
        self._others = {}

    def add_edge(self, child: Key, parent: Key) -> None:
        self._changed()
        if child != parent:
            self._parents[child].add(parent)

    def add_codesystem(self, cs: dict) -> int:
        """Load a FHIR CodeSystem (nested ``concept`` and/or ``parent`` properties); returns concepts added.

        Properties read: ``parent`` (code, repeatable: polyhierarchy), ``secondary`` (boolean: a
        metastatic/secondary neoplasm). ``designation`` values are synonyms for text resolution.
        """
        system = canonical_system(cs["url"])
        self.codesystems[system] = {k: v for k, v in cs.items() if k != "concept"}
        count = 0
        stack: list[tuple[dict, str | None]] = [(c, None) for c in cs.get("concept") or []]
        while stack:
            concept, nested_parent = stack.pop()
            props = concept.get("property") or []
            parents = [p["valueCode"] for p in props if p.get("code") == "parent" and "valueCode" in p]
            if nested_parent:
                parents.append(nested_parent)
            secondary = any(p.get("code") == "secondary" and p.get("valueBoolean") for p in props)
            synonyms = [d["value"] for d in concept.get("designation") or [] if d.get("value")]
            self.add_concept(system, concept["code"], concept.get("display"), parents,
                             secondary=secondary, synonyms=synonyms)
            count += 1
            stack.extend((c, concept["code"]) for c in concept.get("concept") or [])
        return count

    def add_conceptmap(self, cm: dict) -> int:
        """Index a bridging ConceptMap for translation and turn its equivalences into is-a edges."""
        self.conceptmaps.add(cm)
        self._changed()
        edges = 0
        for group in cm.get("group") or []:
            src_sys, tgt_sys = group.get("source"), group.get("target")
            if not (src_sys and tgt_sys):
                continue
            for element in group.get("element") or []:
                src = self.key(src_sys, element["code"])
                if element.get("display"):
                    self._display.setdefault(src, element["display"])
                for target in element.get("target") or []:
                    direction = _BRIDGE_DIRECTION.get(target.get("equivalence", "equivalent"))
                    if not direction or not target.get("code"):
                        continue  # relatedto / inexact / unmatched / disjoint: no is-a claim
                    tgt = self.key(tgt_sys, target["code"])
                    if target.get("display"):
                        self._display.setdefault(tgt, target["display"])
                    if direction in ("up", "both"):
                        self.add_edge(src, tgt)
                    if direction in ("down", "both"):
                        self.add_edge(tgt, src)
                    edges += 1
        self._changed()
        return edges

    def add_hierarchy(self, system: str, code: str, display: str | None, parents: list[str]) -> None:
        """Add a concept learnt at run time, e.g. MeSH ancestors on a ClinicalTrials.gov record.

        ``parents`` are codes in the same system: the direct parents, or all the ancestors (the
        closure is the same). Unknown parents become concepts without a display.
        >>> t.add_hierarchy(MESH, "D000005909", "Glioblastoma", ["D000001254", "D000005910"])
        """
        with self._lock:
            k = self.key(system, code)
            before = set(self._parents.get(k, ()))
            self.add_concept(system, code, display, parents)
            after = self._parents.get(k, set())
            missing = [p for p in after if p not in self._closure]
            if after == before and k in self._closure and not missing:
                return  # the usual case once a registry's terms have been seen: nothing to do
            closure = dict(self._closure)  # copy-on-write: readers never see a half-updated map
            for p in missing:
                closure[p] = self._walk(p)
            new = closure[k] = self._walk(k)
            if after != before:
                # New edges from k add ancestors to everything below k, and nothing else.
                for node, anc in closure.items():
                    if k in anc and not new <= anc:
                        closure[node] = anc | new
            self._closure = closure
            self._changed()

    def add_registry_hierarchy(self, entries: Iterable[dict]) -> int:
        """Add the MeSH hierarchy a ClinicalTrials.gov record carries; returns the terms given parents.

        ``entries`` as the ``ctgov-mesh-hierarchy`` mapping transform emits them:
        ``[{'system', 'code', 'display', 'ancestors': [codes]}]``, the record's terms with ``ancestors``
        and the ancestors themselves with ``[]``. ClinicalTrials.gov lists the ancestors of all the
        record's terms together, so when a record has several terms the list is only trusted for terms
        the terminology does not know yet: 'Neoplasm Metastasis' on a brain-metastases record must not
        become a kind of 'Central Nervous System Neoplasms' (an ancestor of the other term, 'Brain
        Neoplasms'). With a single term the ancestors are exactly its own.
        """
        entries = [e for e in entries if isinstance(e, dict) and e.get("system") and e.get("code")]
        terms = [e for e in entries if e.get("ancestors")]
        ambiguous = len(terms) > 1
        added = 0
        for e in entries:
            ancestors = list(e.get("ancestors") or [])
            if ancestors and ambiguous and self.knows(e["system"], e["code"]):
                ancestors = []
            self.add_hierarchy(e["system"], e["code"], e.get("display"), ancestors)
            added += bool(ancestors)
        return added

    def finish(self) -> Terminology:
        """Precompute the closure of every known concept (call once after loading)."""
        self._compute_closure()
        return self

    def _walk(self, start: Key) -> frozenset[Key]:
        seen = {start}
        stack = [start]
        while stack:
            node = stack.pop()
            parents = self._parents.get(node)
            if not parents and node[0] in _STRUCTURAL:
                parents = self._structural_parent(node)
            for p in parents or ():
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return frozenset(seen)

    def _structural_parent(self, node: Key) -> set[Key] | None:
        """The nearest loaded code above an unlisted ICD code by its shape: C71.8 -> C71; Z99.9 -> None."""
        system, code = node
        while (code := icd_structural_parent(code)) is not None:
            if (system, code) in self._display or (system, code) in self._parents:
                return {(system, code)}
        return None

    def _compute_closure(self) -> None:
        nodes = set(self._display) | set(self._parents)
        for ps in list(self._parents.values()):
            nodes |= ps
        closure = {n: self._walk(n) for n in nodes}
        self._closure = closure
        self._changed()

    # -- queries ---------------------------------------------------------------------------------

    def ancestors(self, system: str, code: str) -> frozenset[Key]:
        """Every (system, code) this concept is a kind of, itself included, across all systems.

        Unknown codes -> {(system, code)} (ICD codes also get their structural parents: C71.8 -> C71).
        """
        asked = (system, code)
        found = self._closure.get(asked)  # fast path: callers mostly pass canonical keys
        if found is not None:
            return found
        found = self._others.get(asked)
        if found is not None:
            return found
        generation, others = self._generation, self._others
        k = self.key(system, code)
        found = self._closure.get(k)
        if found is None:
            # nothing above a code with no parents (and no ICD shape to place it by): itself
            found = self._walk(k) if k in self._parents or k[0] in _STRUCTURAL else frozenset((k,))
            if len(found) > 1:
                self._closure[k] = found  # an unlisted ICD code placed by its shape: cache it
            elif generation == self._generation:  # not taught anything meanwhile (another thread)
                if len(others) >= _OTHERS_MAX:  # codes from requests: bounded
                    others.clear()
                others[asked] = found
        return found

    def is_a(self, system: str, code: str, ancestor_system: str, ancestor_code: str) -> bool:
        """True if (system, code) is the ancestor or a descendant of it, within or across systems."""
        anc = self.ancestors(system, code)
        return (ancestor_system, ancestor_code) in anc or self.key(ancestor_system, ancestor_code) in anc

    def is_a_path(self, system: str, code: str, ancestor_system: str, ancestor_code: str) -> list[Key]:
        """The shortest chain of parents from a concept to its ancestor ([] if not a kind of it), for
        explanations: SNOMED 393563007 -> MeSH D005909 -> D001254 -> D005910 ('via MeSH Glioblastoma')."""
        start, goal = self.key(system, code), self.key(ancestor_system, ancestor_code)
        if goal not in self.ancestors(*start):
            return []
        previous: dict[Key, Key | None] = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if node == goal:
                path = []
                while node is not None:
                    path.append(node)
                    node = previous[node]
                return path[::-1]
            parents = self._parents.get(node) or (self._structural_parent(node) if node[0] in _STRUCTURAL else None)
            for p in parents or ():
                if p not in previous:
                    previous[p] = node
                    queue.append(p)
        return []

    def subsumes(self, system: str, code_a: str, code_b: str) -> str:
        """CodeSystem/$subsumes outcome of A against B: 'equivalent' | 'subsumes' | 'subsumed-by' |
        'not-subsumed'. Codes of one system; concepts bridged as equivalent count as equivalent."""
        a_is_b = self.is_a(system, code_a, system, code_b)
        b_is_a = self.is_a(system, code_b, system, code_a)
        if a_is_b and b_is_a:
            return "equivalent"
        if b_is_a:
            return "subsumes"
        if a_is_b:
            return "subsumed-by"
        return "not-subsumed"

    def knows(self, system: str, code: str) -> bool:
        """True if the concept was loaded (or its ICD-10 structural parent was)."""
        k = self.key(system, code)
        return k in self._closure or len(self.ancestors(*k)) > 1

    def display(self, system: str, code: str) -> str | None:
        return self._display.get(self.key(system, code))

    def system_name(self, system: str) -> str:
        return _system_name(system)

    def is_secondary(self, system: str, code: str) -> bool:
        """True for metastatic/secondary neoplasms, and for anything a kind of one."""
        return any(a in self._secondary for a in self.ancestors(system, code))

    def parents(self, system: str, code: str) -> frozenset[Key]:
        """Direct parents (within and across systems)."""
        return frozenset(self._parents.get(self.key(system, code), ()))

    def descendants(self, system: str, code: str) -> frozenset[Key]:
        """Every loaded concept that is a kind of (system, code), itself included (a scan: not hot-path)."""
        k = self.key(system, code)
        return frozenset(n for n, anc in self._closure.items() if k in anc) | {k}

    def concepts(self, system: str | None = None) -> list[Key]:
        """Loaded concepts (of one system)."""
        system = canonical_system(system) if system else None
        return sorted(k for k in self._closure if system is None or k[0] == system)

    # -- free text -------------------------------------------------------------------------------

    def normalise_text(self, text: str) -> str:
        return normalise_text(text)

    def resolve_text(self, text: str, *, fuzzy: bool = True) -> list[Key]:
        """Free text -> codes, best first ([] if unresolved).

        Tries the normalised text, then a looser key (American spelling, singular, no 'of'), then the
        same words in any order ('Lung Cancer, Non-Small Cell'), then without course words ('Recurrent
        Glioblastoma'), then the longest known term inside the text ('Stage IV Non-small Cell Lung Cancer
        AJCC v8'), then a close spelling match (difflib, >= 0.9) on the looser keys (not with
        ``fuzzy=False``: the search index resolves every stored condition text, ~10 ms each when unknown).
        'Glioblastoma Multiforme' -> [(SNOMED, '393563007'), (MeSH, 'D005909'), (OncoTree, 'GB')]
        """
        norm = normalise_text(text)
        if not norm:
            return []
        if self._pending_terms:
            self._index_terms()
        cached = self._resolved.get(norm)
        if cached is not None:
            return list(cached)
        hits = self._terms.get(norm)
        if not hits:
            loose = loose_key(text)
            hits = self._loose.get(loose) or self._bag.get(_bag(loose))
            core = strip_modifiers(loose)
            if not hits and core and core != loose:
                hits = self._loose.get(core) or self._bag.get(_bag(core))
            if not hits:
                hits = self._contained(loose)
            if not hits and not fuzzy:
                return []  # not cached: a fuzzy call may still find a close spelling
            if not hits and len(loose) >= 5:
                close = difflib.get_close_matches(loose, self._loose_keys(), n=1, cutoff=_FUZZY_CUTOFF)
                hits = self._loose.get(close[0]) if close else None
        found = _rank(hits or [])
        if len(self._resolved) < 100_000:
            self._resolved[norm] = found
        return list(found)

    def _contained(self, loose: str) -> list[Key]:
        """Concepts of the longest known terms inside ``loose`` (several if tied).

        Single words count only if specific (>= 4 letters, not 'cancer', 'tumor'...): short
        abbreviations such as ALL or CAP are too ambiguous inside running text. A text that names
        metastases ('brain metastases from ...') must resolve to a secondary concept, or not at all.
        """
        words = loose.split()
        hits: list[Key] = []
        for n in range(min(len(words), 8), 0, -1):
            for i in range(len(words) - n + 1):
                gram = " ".join(words[i:i + n])
                if n == 1 and (len(gram) < 4 or gram in _GENERIC_WORDS):
                    continue
                hits.extend(self._loose.get(gram) or (self._bag.get(_bag(gram), []) if n > 1 else []))
            if hits:
                break
        if hits and _SECONDARY_WORD.search(loose) and not any(k in self._secondary or self.is_secondary(*k)
                                                               for k in hits):
            return []
        return hits

    def resolve_texts(self, texts: Iterable[str]) -> tuple[dict[str, list[Key]], list[str]]:
        """Resolve many texts: ({text: codes} for those resolved, [texts not resolved])."""
        resolved, unresolved = {}, []
        for text in texts:
            codes = self.resolve_text(text)
            if codes:
                resolved[text] = codes
            else:
                unresolved.append(text)
        return resolved, unresolved

    def _loose_keys(self) -> list[str]:
        if self._pending_terms:
            self._index_terms()
        keys = getattr(self, "_loose_key_list", None)
        if keys is None or len(keys) != len(self._loose):
            keys = self._loose_key_list = list(self._loose)
        return keys

    def __len__(self) -> int:
        return len(self._closure)


def _bag(loose: str) -> str:
    return " ".join(sorted(loose.split()))


# Words too general to identify a condition on their own inside a longer text.
_GENERIC_WORDS = frozenset({"cancer", "tumor", "neoplasm", "neoplasia", "malignancy", "malignant", "carcinoma",
                            "metastasis", "metastatic", "secondary", "primary", "lesion", "mass", "disease",
                            "adenocarcinoma", "stage", "grade", "solid", "advanced", "recurrent"})
# A noun naming metastases (not the adjective 'metastatic', which qualifies a primary cancer).
_SECONDARY_WORD = re.compile(r"\b(metasta(?!tic)\w*|secondar\w*|mets)\b")

_RANK = {SNOMED: 0, ICD10: 1, ICD10CM: 2, MESH: 3, ONCOTREE: 4}


def _rank(keys: list[Key]) -> list[Key]:
    return sorted(dict.fromkeys(keys), key=lambda k: (_RANK.get(k[0], 9), k[1]))


def load_synonyms(terminology: Terminology, path: Path) -> int:
    """Read a synonym table: tab-separated ``text, system (sct|icd10|icd10cm|mesh|oncotree), code, note``;
    lines starting with # are comments."""
    count = 0
    with path.open(encoding="utf-8", newline="") as fh:
        rows = csv.reader((line for line in fh if line.strip() and not line.startswith("#")), delimiter="\t")
        for lineno, row in enumerate(rows, 1):
            if len(row) < 3:
                raise ValueError(f"{path}: row {lineno} needs text, system, code; got {row!r}")
            text, short, code = row[0].strip(), row[1].strip(), row[2].strip()
            if short == "system":
                continue  # header
            if short not in SHORT_SYSTEMS:
                raise ValueError(f"{path}: row {lineno}: system '{short}' is not one of "
                                 f"{sorted(SHORT_SYSTEMS)}")
            terminology.add_term(text, SHORT_SYSTEMS[short], code)
            count += 1
    return count


def read_concept_table(path: Path) -> dict:
    """A hand-authored code-system subset (TSV) as a FHIR CodeSystem dict.

    Header lines ``# url<TAB>...``, ``# name<TAB>...``, ``# title<TAB>...``, ``# copyright<TAB>...`` (other
    ``#`` lines are comments), then rows: code, display, parents (``|``-separated codes), flags
    (``secondary`` or empty), synonyms (``|``-separated), note (why; source of the fact).
    """
    meta: dict[str, str] = {}
    concepts = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.startswith("#"):
                head, _, value = line[1:].strip().partition("\t")
                if value and head in ("url", "name", "title", "copyright", "description", "version"):
                    meta[head] = value.strip()
                continue
            cols = line.split("\t") + [""] * 5
            code, display, parents, flags, synonyms = (c.strip() for c in cols[:5])
            if code == "code":
                continue  # column header
            if not code or not display:
                raise ValueError(f"{path}:{lineno}: a row needs a code and a display")
            props = [{"code": "parent", "valueCode": p.strip()} for p in parents.split("|") if p.strip()]
            if "secondary" in flags.split(","):
                props.append({"code": "secondary", "valueBoolean": True})
            concept: dict = {"code": code, "display": display, "property": props}
            syns = [x.strip() for x in synonyms.split("|") if x.strip()]
            if syns:
                concept["designation"] = [{"value": x} for x in syns]
            concepts.append(concept)
    if "url" not in meta:
        raise ValueError(f"{path}: missing '# url<TAB>...' header")
    return {"resourceType": "CodeSystem", "id": path.stem, "url": meta["url"], "name": meta.get("name", path.stem),
            "title": meta.get("title"), "copyright": meta.get("copyright"), "content": "fragment",
            "hierarchyMeaning": "is-a", "concept": concepts}


def load_terminology(path: Path) -> Terminology:
    """Load ``codesystems/*.json`` and ``*.tsv``, ``conceptmaps/*.json`` and ``synonyms*.tsv`` below ``path``."""
    t = Terminology()
    folder = path / "codesystems"
    for cs_path in sorted(folder.iterdir() if folder.is_dir() else ()):
        if cs_path.suffix == ".tsv":
            t.add_codesystem(read_concept_table(cs_path))
            continue
        if cs_path.suffix != ".json":
            continue
        data = orjson.loads(cs_path.read_bytes())
        if data.get("resourceType") != "CodeSystem" or not data.get("url"):
            raise ValueError(f"{cs_path}: expected a FHIR CodeSystem with a url")
        t.add_codesystem(data)
    for cm in load_conceptmaps(path / "conceptmaps"):
        t.add_conceptmap(cm)
    for syn_path in sorted(path.glob("synonyms*.tsv")):
        load_synonyms(t, syn_path)
    return t.finish()


@lru_cache(maxsize=8)
def _cached(path: str) -> Terminology:
    return load_terminology(Path(path))


def terminology_for(path: Path) -> Terminology:
    """The terminology loaded from ``path``, once per process (the same object for the same folder)."""
    return _cached(str(Path(path).resolve()))


def default_terminology() -> Terminology:
    """The terminology shipped in mappings/terminology, loaded once per process (~0.3 s)."""
    return terminology_for(DEFAULT_PATH)
