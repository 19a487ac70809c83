"""Derive the terminology data files in mappings/terminology/ from the source data sets.

Usage: python scripts/build_terminology.py [--shared /work/shared/data] [--out mappings/terminology]

Writes (FHIR R4 JSON, committed; re-run after changing a source):
  codesystems/icd10cm-neoplasms.json   ICD-10-CM FY2021 chapter 2 (C00-D49): chapter, blocks, every code
  codesystems/icd10-neoplasms.json     WHO ICD-10 chapter II (C00-D48): chapter, blocks, categories
  codesystems/oncotree.json            OncoTree 2025_10_03 (CC BY 4.0, MSK)
  conceptmaps/icd10cm-to-icd10.json    the two ICD-10s agree at category level
  conceptmaps/oncotree-history.json    retired/renamed OncoTree codes -> current codes
  conceptmaps/*.json from bridges.tsv  SNOMED CT <-> ICD-10 <-> MeSH <-> OncoTree (curated)
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ONCOTREE = "http://oncotree.mskcc.org"
SNOMED = "http://snomed.info/sct"
MESH = "https://www.nlm.nih.gov/mesh"
BASE = "https://trialgateway.org/fhir"
SHORT = {"sct": SNOMED, "icd10": ICD10, "icd10cm": ICD10CM, "mesh": MESH, "oncotree": ONCOTREE}

PROPERTIES = [
    {"code": "parent", "uri": "http://hl7.org/fhir/concept-properties#parent", "type": "code",
     "description": "A direct parent (is-a); repeated for more than one parent"},
    {"code": "secondary", "uri": f"{BASE}/CodeSystem/concept-properties#secondary", "type": "boolean",
     "description": "A secondary (metastatic) neoplasm: never a kind of a primary neoplasm of its site"},
]

# WHO ICD-10 chapter II blocks (2019 edition): (first, last, title). Ranges are facts of the
# classification; titles are the WHO block titles.
WHO_BLOCKS = [
    ("C00", "C97", "Malignant neoplasms"),
    ("C00", "C75", "Malignant neoplasms, stated or presumed to be primary, of specified sites, except of "
                   "lymphoid, haematopoietic and related tissue"),
    ("C00", "C14", "Malignant neoplasms of lip, oral cavity and pharynx"),
    ("C15", "C26", "Malignant neoplasms of digestive organs"),
    ("C30", "C39", "Malignant neoplasms of respiratory and intrathoracic organs"),
    ("C40", "C41", "Malignant neoplasms of bone and articular cartilage"),
    ("C43", "C44", "Melanoma and other malignant neoplasms of skin"),
    ("C45", "C49", "Malignant neoplasms of mesothelial and soft tissue"),
    ("C50", "C50", "Malignant neoplasm of breast"),
    ("C51", "C58", "Malignant neoplasms of female genital organs"),
    ("C60", "C63", "Malignant neoplasms of male genital organs"),
    ("C64", "C68", "Malignant neoplasms of urinary tract"),
    ("C69", "C72", "Malignant neoplasms of eye, brain and other parts of central nervous system"),
    ("C73", "C75", "Malignant neoplasms of thyroid and other endocrine glands"),
    ("C76", "C80", "Malignant neoplasms of ill-defined, secondary and unspecified sites"),
    ("C81", "C96", "Malignant neoplasms, stated or presumed to be primary, of lymphoid, haematopoietic and "
                   "related tissue"),
    ("C97", "C97", "Malignant neoplasms of independent (primary) multiple sites"),
    ("D00", "D09", "In situ neoplasms"),
    ("D10", "D36", "Benign neoplasms"),
    ("D37", "D48", "Neoplasms of uncertain or unknown behaviour"),
]
WHO_EXTRA_CATEGORIES = {"C97": "Malignant neoplasms of independent (primary) multiple sites"}
# ICD-10-CM categories that WHO ICD-10 does not have (US additions).
CM_ONLY = re.compile(r"^(C4A|C7A|C7B|D3A|D49)")
# Secondary-neoplasm codes (both ICD-10s): C77-C79 and the CM neuroendocrine C7B.
SECONDARY = re.compile(r"^(C77|C78|C79|C7B)")


def block_code(first: str, last: str) -> str:
    """('C50', 'C50') -> 'C50-C50': a block never shares a code with a category."""
    return f"{first}-{last}"


# Where the US alphanumeric categories sit in the numeric order of their chapter (C4A is filed in block
# C43-C44; C7A and C7B are blocks of their own after C75; D3A after D36).
_ALNUM_POSITION = {"C4A": 43.5, "C7A": 75.5, "C7B": 75.6, "D3A": 36.5}


def order(code: str) -> tuple[str, float]:
    """'C71' -> ('C', 71.0); 'C7A' -> ('C', 75.5): a sortable position of a 3-character category."""
    return code[0], _ALNUM_POSITION.get(code) or float(code[1:3])


def _narrowest(ranges: list[tuple[str, str]]) -> tuple[str, str] | None:
    for r in ranges:
        if all(order(o[0]) <= order(r[0]) and order(r[1]) <= order(o[1]) for o in ranges):
            return r
    return None


def innermost(blocks: list[tuple[str, str, str]], first: str, last: str) -> str | None:
    """The narrowest block strictly containing [first, last]."""
    outer = [(f, la) for f, la, _ in blocks
             if (f, la) != (first, last) and order(f) <= order(first) and order(last) <= order(la)]
    best = _narrowest(outer)
    return block_code(*best) if best else None


def block_of(blocks: list[tuple[str, str, str]], category: str) -> str | None:
    """The narrowest block holding a 3-character category."""
    holding = [(f, la) for f, la, _ in blocks if order(f) <= order(category) <= order(la)]
    best = _narrowest(holding)
    return block_code(*best) if best else None


def concept(code: str, display: str, parents: list[str], secondary: bool = False) -> dict:
    c: dict = {"code": code, "display": display}
    props = [{"code": "parent", "valueCode": p} for p in parents]
    if secondary:
        props.append({"code": "secondary", "valueBoolean": True})
    if props:
        c["property"] = props
    return c


def codesystem(cid: str, url: str, name: str, title: str, version: str, description: str, copyright_: str,
               concepts: list[dict]) -> dict:
    return {
        "resourceType": "CodeSystem", "id": cid, "url": url, "version": version, "name": name, "title": title,
        "status": "active", "experimental": False, "description": description, "copyright": copyright_,
        "caseSensitive": True, "hierarchyMeaning": "is-a", "content": "fragment", "count": len(concepts),
        "property": PROPERTIES, "concept": concepts,
    }


def read_icd10cm(shared: Path) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """(blocks from the tabular XML, {code with dot: long title} from the order file)."""
    root = ET.parse(shared / "terminology/icd10cm/icd10cm-tabular-2021-chapter2-neoplasms.xml").getroot()
    blocks = []
    for sec in root.iter("section"):
        sid = sec.get("id")
        first, _, last = sid.partition("-")
        desc = re.sub(r"\s*\([A-Z0-9-]+\)\s*$", "", sec.findtext("desc") or "").strip()
        blocks.append((first, last or first, desc))
    codes = {}
    for line in (shared / "terminology/icd10cm/icd10cm-order-2021-C00-D49.txt").read_text().splitlines():
        raw = line[6:13].strip()
        code = raw if len(raw) <= 3 else f"{raw[:3]}.{raw[3:]}"
        codes[code] = line[77:].strip()
    return blocks, codes


def build_icd10cm(blocks, codes) -> dict:
    concepts = [concept("2", "Neoplasms (C00-D49)", [])]
    for f, la, desc in blocks:
        parent = innermost(blocks, f, la) or "2"
        concepts.append(concept(block_code(f, la), desc, [parent]))
    for code, title in codes.items():
        if "." in code:
            head, tail = code.split(".")
            parent = f"{head}.{tail[:-1]}" if len(tail) > 1 else head
        else:
            parent = block_of(blocks, code)
        concepts.append(concept(code, title, [parent], bool(SECONDARY.match(code))))
    return codesystem(
        "icd10cm-neoplasms", ICD10CM, "ICD10CMNeoplasms", "ICD-10-CM chapter 2: Neoplasms (C00-D49)", "2021",
        "Every ICD-10-CM FY2021 code of chapter 2 with its hierarchy: chapter '2' > block ('C69-C72'; a "
        "one-category block is written 'C50-C50') > category (C71) > subcategory (C71.9). Derived by "
        "scripts/build_terminology.py from the CMS/NCHS release files.",
        "ICD-10-CM is a US Government work (CMS/NCHS), public domain.", concepts)


def build_icd10(blocks_cm, codes_cm) -> dict:
    concepts = [concept("II", "Neoplasms", [])]
    for f, la, title in WHO_BLOCKS:
        parent = innermost(WHO_BLOCKS, f, la) or "II"
        concepts.append(concept(block_code(f, la), title, [parent]))
    categories = {c: t for c, t in codes_cm.items() if "." not in c and not CM_ONLY.match(c) and c <= "D48"}
    categories.update(WHO_EXTRA_CATEGORIES)
    for code, title in sorted(categories.items()):
        concepts.append(concept(code, title, [block_of(WHO_BLOCKS, code)], bool(SECONDARY.match(code))))
    return codesystem(
        "icd10-neoplasms", ICD10, "ICD10Neoplasms", "WHO ICD-10 chapter II: Neoplasms (C00-D48)", "2019",
        "WHO ICD-10 chapter II to category level: chapter 'II' > blocks (C00-C97 > C69-C72) > 3-character "
        "categories (C71). Category titles are taken from ICD-10-CM, which agrees with WHO ICD-10 at "
        "category level; US-only categories (C4A, C7A, C7B, D3A, D49) are left out and C97 added. "
        "4-character codes (C71.9) are not listed: the terminology places them under their category by "
        "their shape. No openly licensed WHO code list was available.",
        "ICD-10 (c) World Health Organization. Block ranges and category codes are used as identifiers; "
        "titles come from the public-domain ICD-10-CM.", concepts)


def build_oncotree(shared: Path) -> tuple[dict, dict]:
    tree = json.loads((shared / "terminology/oncotree/oncotree_2025_10_03.json").read_text())
    old = json.loads((shared / "terminology/oncotree/oncotree_2021_11_02.json").read_text())

    def walk(node):
        yield node
        for child in node["children"].values():
            yield from walk(child)

    nodes = list(walk(tree["TISSUE"]))
    old_names = {n["code"]: n["name"] for n in walk(old["TISSUE"])}
    concepts = [concept(n["code"], n["name"], [n["parent"]] if n.get("parent") else []) for n in nodes]
    cs = codesystem(
        "oncotree", ONCOTREE, "OncoTree", "OncoTree tumour types (2025_10_03)", "oncotree_2025_10_03",
        "The OncoTree cancer classification of Memorial Sloan Kettering Cancer Center, release "
        "oncotree_2025_10_03: tissue > main type > subtypes.",
        "OncoTree by Memorial Sloan Kettering Cancer Center (https://oncotree.mskcc.org), licensed under "
        "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/). Converted to a FHIR CodeSystem; no "
        "content changed.", concepts)
    # history = renamed (same concept); revocations = old code split, the new one is narrower;
    # precursors = old codes merged into the new, wider one.
    elements: dict[str, dict] = {}
    for n in nodes:
        for kind, equivalence in (("history", "equivalent"), ("revocations", "narrower"),
                                  ("precursors", "wider")):
            for oldcode in n[kind]:
                el = elements.setdefault(oldcode, {"code": oldcode, "display": old_names.get(oldcode),
                                                   "target": []})
                el["target"].append({"code": n["code"], "display": n["name"], "equivalence": equivalence})
    for el in elements.values():
        if not el["display"]:
            del el["display"]
    cm = conceptmap(
        "oncotree-history", "OncoTree retired and renamed codes",
        "Maps OncoTree codes retired before oncotree_2025_10_03 to the current codes, from the tree's own "
        "history (renamed: equivalent), revocations (the current code is narrower) and precursors (the "
        "old code is merged into a wider current one), so that studies coded with an old release still "
        "match. OncoTree by MSK, CC BY 4.0.",
        [{"source": ONCOTREE, "target": ONCOTREE, "element": sorted(elements.values(), key=lambda e: e["code"])}])
    return cs, cm


def conceptmap(cid: str, title: str, description: str, groups: list[dict]) -> dict:
    return {
        "resourceType": "ConceptMap", "id": cid, "url": f"{BASE}/ConceptMap/{cid}", "version": "1",
        "name": re.sub(r"[^A-Za-z0-9]", "", title.title()), "title": title, "status": "active",
        "experimental": False, "description": description, "group": groups,
    }


def build_icd_bridge(icd10: dict) -> dict:
    elements = [{"code": c["code"], "display": c["display"],
                 "target": [{"code": c["code"], "display": c["display"], "equivalence": "equivalent"}]}
                for c in icd10["concept"] if re.fullmatch(r"[CD]\d\d", c["code"]) and c["code"] != "C97"]
    return conceptmap(
        "icd10cm-to-icd10", "ICD-10-CM to WHO ICD-10 categories",
        "ICD-10-CM and WHO ICD-10 agree at category level (C71 is C71): each chapter 2 category of ICD-10-CM "
        "is equivalent to the WHO category with the same code, so a study coded in one matches a patient "
        "coded in the other. Subcategories are not mapped (they differ between the two).",
        [{"source": ICD10CM, "target": ICD10, "element": elements}])


def build_bridges(src: Path) -> list[dict]:
    """bridges.tsv rows: map_id, source system, source code, target system, target code, equivalence, note."""
    maps: dict[str, dict] = {}
    headers: dict[str, tuple[str, str]] = {}
    lines = src.read_text(encoding="utf-8").splitlines()
    for line in lines:
        if line.startswith("#map\t"):
            _, mid, title, description = line.split("\t", 3)
            headers[mid] = (title, description)
    for row in csv.reader((ln for ln in lines if ln.strip() and not ln.startswith("#")), delimiter="\t"):
        mid, ssys, scode, tsys, tcode, equivalence = row[:6]
        if mid == "map":
            continue  # column header
        comment = row[6] if len(row) > 6 else ""
        if mid not in maps:
            title, description = headers[mid]
            maps[mid] = conceptmap(mid, title, description, [])
        groups = maps[mid]["group"]
        group = next((g for g in groups if g["source"] == SHORT[ssys] and g["target"] == SHORT[tsys]), None)
        if group is None:
            group = {"source": SHORT[ssys], "target": SHORT[tsys], "element": []}
            groups.append(group)
        element = next((e for e in group["element"] if e["code"] == scode), None)
        if element is None:
            element = {"code": scode, "target": []}
            group["element"].append(element)
        target = {"code": tcode, "equivalence": equivalence}  # display filled in by main()
        if comment:
            target["comment"] = comment
        element["target"].append(target)
    return list(maps.values())


def write_mcode_check(shared: Path, out: Path) -> None:
    """tests/data/terminology/mcode-snomed-subset.tsv: the mCODE value-set rows of our SNOMED CT codes."""
    base = shared / "terminology/mcode-valuesets"
    mcode = {}
    for name, tag in (("primary-or-uncertain-behavior-cancer-disorder", "primary"),
                      ("secondary-cancer-disorder", "secondary")):
        vs = json.loads((base / f"ValueSet-mcode-{name}-vs.json").read_text())
        for c in vs["expansion"]["contains"]:
            if c["system"] == SNOMED:
                mcode[c["code"]] = (c["display"], tag)
    ours = [ln.split("\t")[0] for ln in (out / "codesystems/snomed-oncology.tsv").read_text().splitlines()
            if ln.strip() and not ln.startswith(("#", "code\t"))]
    path = ROOT / "tests/data/terminology/mcode-snomed-subset.tsv"
    lines = ["# SNOMED CT codes of mappings/terminology/codesystems/snomed-oncology.tsv found in the mCODE "
             "cancer-disorder value sets",
             "# columns: code, display (as in mCODE), value set (primary = primary-or-uncertain-behavior, "
             "secondary)"]
    lines += ["\t".join((code, *mcode[code])) for code in ours if code in mcode]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({len(lines) - 2} of {len(ours)} codes found in mCODE)")


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--out", type=Path, default=ROOT / "mappings" / "terminology")
    args = ap.parse_args()
    blocks, codes = read_icd10cm(args.shared)
    write(args.out / "codesystems/icd10cm-neoplasms.json", build_icd10cm(blocks, codes))
    icd10 = build_icd10(blocks, codes)
    write(args.out / "codesystems/icd10-neoplasms.json", icd10)
    write(args.out / "conceptmaps/icd10cm-to-icd10.json", build_icd_bridge(icd10))
    onco, history = build_oncotree(args.shared)
    write(args.out / "codesystems/oncotree.json", onco)
    write(args.out / "conceptmaps/oncotree-history.json", history)
    bridges = ROOT / "scripts" / "terminology" / "bridges.tsv"
    if bridges.exists():
        sys.path.insert(0, str(ROOT))
        from gateway.terminology import load_terminology

        known = load_terminology(args.out)  # for displays of the bridged codes
        for cm in build_bridges(bridges):
            for group in cm["group"]:
                for element in group["element"]:
                    if display := known.display(group["source"], element["code"]):
                        element["display"] = display
                    for target in element["target"]:
                        if display := known.display(group["target"], target["code"]):
                            target["display"] = display
            write(args.out / f"conceptmaps/{cm['id']}.json", cm)
    write_mcode_check(args.shared, args.out)


if __name__ == "__main__":
    main()
