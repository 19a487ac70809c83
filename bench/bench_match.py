"""Matching benchmark: $match (patient -> studies) and $candidates (study -> patients), indexed vs brute force.

Prints the machine, its load, the sizes, and median / p95 figures. Two parts in one run:

1. Scale, in-process: --studies recruiting studies (default 70,000, the ClinicalTrials.gov recruiting count)
   built from FHIR JSON through study_criteria() into a StudyIndex, and --patients people (default
   1,000,000) generated straight into a PatientIndex (loading millions of resources through REST would take
   hours). Times $match for --probes patients (target p95 <= 50 ms) as the API answers it (every
   candidate screened, Bundle.total counted, the first --page results explained), $candidates for a
   rare-cancer study (target <= 1 s) and a broad study ('any malignant neoplasm'), and the brute-force
   scan of the same queries in the same run, as a ratio; the answers are asserted equal.
2. End to end, over HTTP on SQLite: --e2e-studies studies and --e2e-patients patients POSTed as
   batch Bundles to a real gateway server (werkzeug, loopback), then GET $match over HTTP (target p95
   <= 100 ms; one in ten people has no active condition) and $candidates; the answers (ids, order,
   scores, every explanation, Bundle.total) are compared with full in-process evaluation of the very same
   JSON, to show the two paths agree. --e2e-db keeps the loaded SQLite file for a later run.

With --extracted (issue #12) every study also carries the characteristics an eligibility extractor writes
(criterion-source with confidence, look-back windows: labs in UCUM units, x ULN, prior-therapy classes,
pregnancy, HIV, brain metastases, other malignancy within 3 years, a gene variant, a stage) and 5-25 criteria
left as text (unstructured-criterion); people get the matching data (labs in other units with reference ranges,
medications by product code, pregnancy status, genomic results, stage) at random.

    .venv/bin/python bench/bench_match.py [--studies 70000] [--patients 1000000] [--probes 300]
        [--e2e-studies 70000] [--e2e-patients 10000] [--e2e-db FILE] [--page 20] [--seed 7] [--extracted]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.fhir import conventions as cv  # noqa: E402
from gateway.matching import geo  # noqa: E402
from gateway.matching.criteria import study_criteria  # noqa: E402
from gateway.matching.drugs import expand  # noqa: E402
from gateway.matching.index import MatchQuery, PatientIndex, StudyIndex  # noqa: E402
from gateway.matching.profile import (  # noqa: E402
    ConditionFact,
    ObservationFact,
    PatientProfile,
    TherapyFact,
    VariantFact,
    build_profile,
)
from gateway.terminology import default_terminology  # noqa: E402

TODAY = date(2026, 11, 23)
OTHER = "https://bench.example.org/non-oncology-condition"  # the ~2/3 of trials that are not about cancer
RARE = (cv.SNOMED, "11471000224106")  # diffuse intrinsic pontine glioma
BROAD = (cv.SNOMED, "363346000")  # malignant neoplastic disease: 'any cancer'
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
PLT, ANC, BILI = (cv.LOINC, "777-3"), (cv.LOINC, "751-8"), (cv.LOINC, "1975-2")
CLASSES = ["cdk4-6-inhibitor", "egfr-tki", "anti-pd-1", "platinum", "taxane", "anthracycline"]
PRODUCTS = [("1873980", "ribociclib"), ("56946", "paclitaxel"), ("1547545", "pembrolizumab"), ("40048", "carboplatin")]
UNSTRUCTURED = ["Life expectancy of at least 12 weeks", "Measurable disease per RECIST 1.1",
                "Able to understand and willing to sign a written informed consent document",
                "Adequate contraception during the study", "Able to swallow oral medication",
                "Uncontrolled intercurrent illness", "Major surgery within 4 weeks", "Known hypersensitivity to any "
                "component of the study drug", "QTc > 470 ms", "Active infection requiring systemic therapy"]


def _src(text: str, section: str, confidence: str = "high") -> dict:
    return {"url": cv.EXT_CRITERION_SOURCE, "extension": [
        {"url": "text", "valueString": text}, {"url": "section", "valueCode": section},
        {"url": "rule", "valueString": "bench"}, {"url": "confidence", "valueCode": confidence}]}


def extracted_characteristics(r: random.Random) -> tuple[list[dict], list[dict]]:
    """(characteristics, unstructured-criterion extensions) as an eligibility extractor writes them."""
    def cc(key):
        return {"coding": [{"system": key[0], "code": key[1]}]}

    conf = "medium" if r.random() < 0.2 else "high"
    chars: list[dict] = []
    if r.random() < 0.6:
        chars.append({"code": cc(PLT), "valueQuantity": {"value": 100000, "comparator": ">=", "code": "/mm3"},
                      "extension": [_src("Platelets >= 100,000/mm3", "inclusion", conf),
                                    {"url": cv.EXT_CRITERION_LOOKBACK, "valueDuration": {"value": 4, "code": "wk"}}]})
    if r.random() < 0.5:
        chars.append({"code": cc(ANC), "valueQuantity": {"value": 1.5, "comparator": ">=", "code": "10*9/L"},
                      "extension": [_src("ANC >= 1.5 x 10^9/L", "inclusion")]})
    if r.random() < 0.5:
        chars.append({"code": cc(BILI), "valueQuantity": {"value": 1.5, "comparator": "<=", "code": cv.UNIT_ULN},
                      "extension": [_src("Total bilirubin <= 1.5 x ULN", "inclusion")]})
    if r.random() < 0.4:
        chars.append({"code": cc(cv.PRIOR_THERAPY), "exclude": True,
                      "valueCodeableConcept": cc((cv.DRUG_CLASS_CS, r.choice(CLASSES))),
                      "extension": [_src("No prior therapy of this class", "exclusion", conf)]})
    if r.random() < 0.5:
        chars.append({"code": cc(cv.PREGNANCY), "valueBoolean": True, "exclude": True,
                      "extension": [_src("Pregnant or breastfeeding", "exclusion")]})
    if r.random() < 0.4:
        chars.append({"code": cc(cv.DIAGNOSIS), "valueCodeableConcept": cc(cv.HIV_INFECTION), "exclude": True,
                      "extension": [_src("Known HIV infection", "exclusion")]})
    if r.random() < 0.3:
        chars.append({"code": cc(cv.DIAGNOSIS), "valueCodeableConcept": cc(cv.CNS_METASTASES), "exclude": True,
                      "extension": [_src("Untreated brain metastases", "exclusion"),
                                    {"url": cv.EXT_CHARACTERISTIC_QUALIFIER, "valueCode": "untreated"}]})
    if r.random() < 0.3:
        chars.append({"code": cc(cv.OTHER_MALIGNANCY), "valueCodeableConcept": cc(cv.MALIGNANCY), "exclude": True,
                      "extension": [_src("Other malignancy within 3 years", "exclusion"),
                                    {"url": cv.EXT_CRITERION_LOOKBACK, "valueDuration": {"value": 3, "code": "a"}}]})
    if r.random() < 0.1:
        chars.append({"code": cc(cv.GENETIC_VARIANT), "valueCodeableConcept": cc(cv.VARIANT_PRESENT),
                      "extension": [_src("EGFR L858R", "inclusion"),
                                    {"url": cv.EXT_CHARACTERISTIC_GENE, "valueCodeableConcept": cc((cv.HGNC,
                                                                                                    "HGNC:3236"))},
                                    {"url": cv.EXT_CHARACTERISTIC_VARIANT, "valueString": "L858R"}]})
    if r.random() < 0.1:
        stage = cc((cv.AJCC_STAGE_CS, r.choice(["III", "IV"])))
        chars.append({"code": cc(cv.STAGE_GROUP), "valueCodeableConcept": stage,
                      "extension": [_src("Stage III or IV", "inclusion")]})
    texts = r.sample(UNSTRUCTURED, r.randint(5, min(10, len(UNSTRUCTURED))))
    texts += [f"Criterion text {k}" for k in range(r.randint(0, 15))]
    unstructured = [{"url": cv.EXT_UNSTRUCTURED_CRITERION, "extension": [
        {"url": "text", "valueString": t}, {"url": "section", "valueCode": "inclusion"},
        {"url": "reason", "valueCode": "not-recognised"}]} for t in texts]
    return chars, unstructured


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def fmt(values: list[float]) -> str:
    return f"median {statistics.median(values):8.2f} ms   p95 {pct(values, 95):8.2f} ms   (n={len(values)})"


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}; load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (the machine is shared)")


class Generator:
    """Synthetic but terminology-grounded studies and patients (real codes from mappings/terminology)."""

    def __init__(self, term, seed: int, extracted: bool = False):
        self.term = term
        self.extracted = extracted
        self.rng = random.Random(seed)
        concepts = term.concepts()
        self.onco = [k for k in concepts if k[0] in (cv.SNOMED, cv.MESH, cv.ONCOTREE, cv.ICD10, cv.ICD10CM)]
        self.patient_codes = [k for k in self.onco if k[0] in (cv.SNOMED, cv.ICD10, cv.ICD10CM, cv.ONCOTREE)
                              and k != BROAD]
        self.positions = list(geo.load_centroids().values())

    def _cc(self, key: tuple[str, str]) -> dict:
        return {"coding": [{"system": key[0], "code": key[1]}]}

    def _char(self, code, **value) -> dict:
        return {"code": self._cc(code), **value, "exclude": value.pop("exclude", False)}

    def study(self, i: int) -> list[dict]:
        """ResearchStudy + Group + 1-4 Locations as FHIR JSON (ids fixed)."""
        r = self.rng
        sid = f"bs{i}"
        cond = r.choice(self.onco) if r.random() < 0.35 else (OTHER, f"X{r.randrange(20000)}")
        # a few studies name no condition: the element is left out (FHIR JSON has no empty arrays; the gateway
        # refuses ``"condition": []``)
        conditions = [] if r.random() < 0.002 else [self._cc(cond)]
        lo = r.choice([0, 12, 18, 18, 18, 40])
        chars = [{"code": self._cc(cv.AGE), "valueRange": {"low": {"value": lo, "system": cv.UCUM, "code": "a"},
                                                             "high": {"value": r.choice([65, 75, 99, 120]),
                                                                      "system": cv.UCUM, "code": "a"}},
                  "exclude": False}]
        if r.random() < 0.1:
            chars.append({"code": self._cc(cv.SEX), "valueCodeableConcept": self._cc(
                (cv.ADMIN_GENDER, r.choice(["male", "female"]))), "exclude": False})
        if r.random() < 0.5:
            chars.append({"code": self._cc(cv.ECOG), "valueRange": {"low": {"value": 0},
                                                                     "high": {"value": r.choice([1, 2, 2, 3])}},
                          "exclude": False})
        if r.random() < 0.3:
            chars.append({"code": self._cc(cv.DIAGNOSIS), "valueCodeableConcept": self._cc(r.choice(self.onco)),
                          "exclude": True})
        if r.random() < 0.15:  # accepts healthy volunteers: open to people with no active condition
            chars.append({"code": self._cc(cv.HEALTHY_VOLUNTEERS), "valueBoolean": True, "exclude": False})
        locs = []
        for j in range(r.randint(1, 4)):
            lat, lon = r.choice(self.positions)
            locs.append({"resourceType": "Location", "id": f"{sid}-l{j}", "name": f"Site {j} of {sid}",
                         "position": {"latitude": lat, "longitude": lon}})
        study = {"resourceType": "ResearchStudy", "id": sid, "status": "active", "title": f"Benchmark study {i}",
                 **({"condition": conditions} if conditions else {}), "enrollment": [{"reference": f"Group/{sid}-g"}],
                 "site": [{"reference": f"Location/{loc['id']}"} for loc in locs]}
        group = {"resourceType": "Group", "id": f"{sid}-g", "type": "person", "actual": False,
                 "characteristic": chars}
        if self.extracted:
            more, texts = extracted_characteristics(r)
            chars += more
            group["extension"] = texts
        return [study, group, *locs]

    def patient_json(self, i: int) -> list[dict]:
        """Patient + 0-2 Conditions (one in ten none, as in the scale part) + maybe ECOG, as FHIR JSON."""
        r = self.rng
        pid = f"bp{i}"
        lat, lon = r.choice(self.positions)
        p = {"resourceType": "Patient", "id": pid, "identifier": [{"system": cv.NHS_NUMBER, "value": f"9{i:09d}"}],
             "gender": r.choice(["male", "female"]), "birthDate": f"{r.randint(1930, 2020)}-{r.randint(1, 12):02d}-15",
             "address": [{"extension": [{"url": geo.GEOLOCATION_EXT, "extension": [
                 {"url": "latitude", "valueDecimal": lat}, {"url": "longitude", "valueDecimal": lon}]}]}]}
        out = [p]
        for j in range(r.choice([0, 1, 1, 1, 1, 1, 1, 1, 2, 2])):  # one in ten has no active condition
            code = r.choice(self.patient_codes) if r.random() < 0.7 else (OTHER, f"X{r.randrange(20000)}")
            out.append({"resourceType": "Condition", "id": f"{pid}-c{j}", "subject": {"reference": f"Patient/{pid}"},
                        "clinicalStatus": self._cc((cv.CONDITION_CLINICAL, "active")),
                        "verificationStatus": self._cc((cv.CONDITION_VER_STATUS, "confirmed")),
                        "code": self._cc(code)})
        if r.random() < 0.6:
            out.append({"resourceType": "Observation", "id": f"{pid}-ecog", "status": "final",
                        "code": self._cc(cv.ECOG), "subject": {"reference": f"Patient/{pid}"},
                        "effectiveDateTime": "2026-10-01", "valueInteger": r.randint(0, 4)})
        return out


class ProfileFactory:
    """PatientProfiles generated straight into memory, sharing immutable parts (1M people fit in RAM)."""

    def __init__(self, gen: Generator):
        self.gen = gen
        self._cond: dict = {}
        self._anc: dict = {}
        self._ecog = {v: [ObservationFact(float(v), (), None, None, "2026-10-01", "ECOG")] for v in range(5)}

    def _condition(self, key):
        c = self._cond.get(key)
        if c is None:
            t = self.gen.term
            c = self._cond[key] = ConditionFact((key,), "", f"'{t.display(*key) or key[1]}' ({key[1]})",
                                                t.ancestors(*key), t.is_secondary(*key))
        return c

    def _ancestors(self, keys: tuple):
        a = self._anc.get(keys)
        if a is None:
            acc = frozenset()
            for k in keys:
                acc |= self.gen.term.ancestors(*k)
            a = self._anc[keys] = acc
        return a

    def make(self, i: int) -> PatientProfile:
        r = self.gen.rng
        n = r.choice([0, 1, 1, 1, 1, 1, 1, 1, 2, 2])  # one in ten has no active condition on record
        keys = tuple(sorted({r.choice(self.gen.patient_codes) if r.random() < 0.7 else
                             (OTHER, f"X{r.randrange(20000)}") for _ in range(n)}))
        p = PatientProfile(key=f"nhs:9{i:09d}", patient_ids=(f"bp{i}",), nhs_number=f"9{i:09d}",
                           birth_date=date(r.randint(1930, 2020), r.randint(1, 12), 15),
                           sex=r.choice(["male", "female"]), position=r.choice(self.gen.positions),
                           position_source="address geolocation")
        p.conditions = [self._condition(k) for k in keys]
        if r.random() < 0.6:
            p.observations = {cv.ECOG: self._ecog[r.randint(0, 4)]}
        if self.gen.extracted:
            self._extracted_data(p, r)
        p.ancestors = self._ancestors(keys)
        return p

    def _extracted_data(self, p: PatientProfile, r: random.Random) -> None:
        """Labs in other units (with reference ranges), medications by product code, pregnancy, genomics, stage."""
        obs = dict(p.observations)
        if r.random() < 0.5:
            obs[PLT] = [ObservationFact(float(r.choice([60, 150, 250])), (), None, "10*3/uL", "2026-11-10", "PLT")]
        if r.random() < 0.5:
            obs[ANC] = [ObservationFact(float(r.choice([900, 2500])), (), None, "/uL", "2026-11-10", "ANC")]
        if r.random() < 0.4:
            obs[BILI] = [ObservationFact(float(r.choice([10, 40])), (), None, "umol/L", "2026-11-10", "BILI", 21.0,
                                         "umol/L")]
        if r.random() < 0.2:
            obs[cv.STAGE_OBSERVATION_CODES[0]] = [ObservationFact(None, (), None, None, "2026-06-01", "Stage", None,
                                                                  None, r.choice(["Stage IIB", "Stage IV"]))]
        p.observations = obs
        if r.random() < 0.3:
            code, name = r.choice(PRODUCTS)
            p.therapies = [TherapyFact(expand(((cv.RXNORM, code),)), f"'{name}'", "2026-01-01")]
        if r.random() < 0.1:
            p.variants = [VariantFact(frozenset({"egfr", "hgnc:3236"}), frozenset({r.choice(["l858r", "t790m"])}),
                                      True, "2026-03-01", "Genetic variant assessment")]


def _time(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args)
    return (time.perf_counter() - t) * 1000, out


def scale_part(term, args) -> None:
    gen = Generator(term, args.seed, args.extracted)
    print(f"\n== 1. scale, in-process: {args.studies:,} recruiting studies, {args.patients:,} patients"
          f"{', extracted criteria' if args.extracted else ''} ==")
    t = time.perf_counter()
    si = StudyIndex(term)
    for i in range(args.studies):
        study, group, *locs = gen.study(i)
        si.add(study_criteria(study, group, {loc["id"]: loc for loc in locs}, term))
    print(f"study index built from FHIR JSON in {time.perf_counter() - t:.1f} s "
          f"({len(si.by_code):,} codes, {len(si.open)} studies open to anyone, {len(si.healthy):,} accepting "
          "healthy volunteers)")
    t = time.perf_counter()
    factory = ProfileFactory(gen)
    pi = PatientIndex(term)
    for i in range(args.patients):
        pi.add(factory.make(i))
    print(f"patient index of {len(pi):,} built in {time.perf_counter() - t:.1f} s ({len(pi.by_code):,} codes)")

    q = MatchQuery(today=TODAY)
    page = args.page
    probes = random.Random(args.seed + 1).sample(list(pi.profiles.values()), args.probes)
    idx_ms, n_found, sick_ms, healthy_ms = [], [], [], []
    for p in probes:
        ms, res = _time(si.page, p, q, page)
        idx_ms.append(ms)
        (sick_ms if p.conditions else healthy_ms).append(ms)
        n_found.append(res.total)
    print(f"$match (page of {page}, as the API) {fmt(idx_ms)}; matches per patient median "
          f"{statistics.median(n_found):.0f}, max {max(n_found):,}")
    print(f"  of which people with a condition       {fmt(sick_ms)}")
    if healthy_ms:
        print(f"  of which people with no condition      {fmt(healthy_ms)} (every healthy-volunteer study is "
              "a candidate)")
    full_ms = {True: [], False: []}
    for p in probes[:args.full_probes]:
        ms, (matches, _) = _time(si.match, p, q)
        full_ms[bool(p.conditions)].append(ms)
        res = si.page(p, q, page)
        assert res.total == len(matches), "page total and full evaluation disagree"
        assert [(r.study_id, r.score, r.distance_km, r.findings) for r in res.matches] == \
            [(r.study_id, r.score, r.distance_km, r.findings) for r in matches[:page]], "page and match disagree"
    print(f"$match explaining every match (StudyIndex.match), people with a condition {fmt(full_ms[True])}")
    if full_ms[False]:
        print(f"  people with no condition {fmt(full_ms[False])}")
    bf_ms = []
    # brute force on people with and without a condition alike (the probes are a random sample)
    for p in probes[:args.brute_probes]:
        ms, (matches, _) = _time(si.brute_force, p, q)
        bf_ms.append(ms)
        res = si.page(p, q, page)
        assert res.total == len(matches), "index and brute force disagree (total)"
        assert [(r.study_id, r.score, r.findings) for r in res.matches] == \
            [(r.study_id, r.score, r.findings) for r in matches[:page]], "index and brute force disagree"
    print(f"$match brute force {fmt(bf_ms)}; ratio brute/indexed at the median "
          f"{statistics.median(bf_ms) / statistics.median(idx_ms[:args.brute_probes]):.0f}x (same patients; "
          "totals, ids, scores and explanations asserted equal)")
    near_q = MatchQuery(today=TODAY, near_misses=True)
    near_ms, near_healthy = [], []
    for p in probes[:50] + [p for p in probes[50:] if not p.conditions][:10]:
        ms, _ = _time(si.page, p, near_q, page)
        (near_ms if p.conditions else near_healthy).append(ms)
    print(f"$match with includeNearMisses, people with a condition {fmt(near_ms)}")
    if near_healthy:
        print(f"  people with no condition {fmt(near_healthy)}")

    for label, code in (("rare (DIPG)", RARE), ("broad (any malignant neoplasm)", BROAD)):
        sc = study_criteria({"resourceType": "ResearchStudy", "id": f"q-{code[1]}", "status": "active",
                             "condition": [{"coding": [{"system": code[0], "code": code[1]}]}]},
                            {"characteristic": [{"code": {"coding": [{"system": cv.AGE[0], "code": cv.AGE[1]}]},
                                                 "valueRange": {"low": {"value": 18, "code": "a"}}}]}, {}, term)
        runs = [_time(pi.page, sc, q, None, page) for _ in range(3)]
        ms = [r[0] for r in runs]
        found = runs[0][1]
        full, full_found = _time(pi.match, sc, q)
        bf, bf_found = _time(pi.brute_force, sc, q)
        assert found.total == len(bf_found) == len(full_found), "candidates disagree (total)"
        assert [(r.patient_key, r.score, r.findings) for r in found.matches] == \
            [(r.patient_key, r.score, r.findings) for r in bf_found[:page]], "candidates disagree"
        assert [r.patient_key for r in full_found] == [r.patient_key for r in bf_found], "candidates disagree"
        print(f"$candidates {label}: {found.total:,} candidates; indexed (page of {page}) {fmt(ms)}; every "
              f"match explained {full:,.0f} ms; brute force {bf:,.0f} ms; ratio {bf / statistics.median(ms):.0f}x")
    del pi, si


def _serve(app):
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/fhir"


def _post_all(session, url, resources: list[dict], batch: int = 500) -> float:
    t = time.perf_counter()
    for i in range(0, len(resources), batch):
        entries = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                   for r in resources[i:i + batch]]
        resp = session.post(url, json={"resourceType": "Bundle", "type": "batch", "entry": entries},
                            headers=FHIR_JSON, timeout=600)
        resp.raise_for_status()
    return time.perf_counter() - t


def _explained(entry: dict) -> tuple:
    """A $match / $candidates Bundle entry -> (id, score, ((criterion, result, text), ...))."""
    found = []
    for ext in entry["search"].get("extension") or []:
        if ext["url"] == cv.EXT_MATCH_EXPLANATION:
            parts = {e["url"]: e.get("valueString", e.get("valueCode")) for e in ext["extension"]}
            found.append((parts["criterion"], parts["result"], parts["text"]))
    return entry["resource"]["id"], entry["search"]["score"], tuple(found)


def _e2e_load(s, base, studies, flat, n_people, db: Path, marker: Path, args) -> None:
    """POST everything, or reuse a database an earlier run loaded with the same sizes and seed."""
    key = {"studies": args.e2e_studies, "patients": args.e2e_patients, "seed": args.seed}
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved["key"] == key and db.exists():
            print(f"reusing {db} loaded by an earlier run ({saved['when']}, load average then {saved['load']}):")
            for line in saved["lines"]:
                print(f"  {line}")
            return
    lines = []
    secs = _post_all(s, base, studies)
    lines.append(f"stored {len(studies):,} study resources (ResearchStudy+Group+Location) in {secs:.0f} s")
    print(lines[-1], flush=True)
    secs = _post_all(s, base, flat)
    lines.append(f"stored {len(flat):,} patient resources ({n_people:,} patients) in {secs:.0f} s")
    print(lines[-1], flush=True)
    marker.write_text(json.dumps({"key": key, "lines": lines, "when": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                   time.gmtime()),
                                  "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}))


def e2e_part(term, args) -> None:
    from gateway.api.app import create_app
    from gateway.config import Settings, StoreSettings

    print(f"\n== 2. end to end over HTTP on SQLite: {args.e2e_studies:,} studies, {args.e2e_patients:,} patients ==")
    gen = Generator(term, args.seed + 100)
    studies = [r for i in range(args.e2e_studies) for r in gen.study(i)]
    people = [gen.patient_json(i) for i in range(args.e2e_patients)]
    flat = [r for p in people for r in p]
    no_condition = sum(1 for p in people if not any(r["resourceType"] == "Condition" for r in p))
    print(f"people with no active condition: {no_condition:,} of {len(people):,}")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.e2e_db) if args.e2e_db else Path(tmp) / "bench.sqlite3"
        db.parent.mkdir(parents=True, exist_ok=True)
        settings = Settings(store=StoreSettings(f"sqlite:///{db}"), instance_path=db.parent,
                            mappings_path=ROOT / "mappings", max_bundle_entries=1000)
        app = create_app(settings)
        server, base = _serve(app)
        s = requests.Session()
        try:
            _e2e_load(s, base, studies, flat, len(people), db, Path(f"{db}.loaded.json"), args)
            ms, r = _time(s.get, f"{base}/ResearchStudy/$match?patient-id=bp0", )
            r.raise_for_status()
            print(f"first $match (builds the indexes from the change feed): {ms / 1000:.1f} s", flush=True)
            # in-process reference from the same JSON, evaluated in full (every match explained)
            si = StudyIndex(term)
            for i in range(0, len(studies), 1):
                if studies[i]["resourceType"] == "ResearchStudy":
                    st = studies[i]
                    grp = studies[i + 1]
                    locs = {x["id"]: x for x in studies[i + 2:i + 6] if x["resourceType"] == "Location"
                            and x["id"].startswith(st["id"] + "-")}
                    si.add(study_criteria(st, grp, locs, term))
            rng = random.Random(args.seed)
            sample = rng.sample(range(len(people)), min(args.probes, len(people)))
            page_ms, sick_ms, healthy_ms, full_ms, agree = [], [], [], [], 0
            for i in sample:
                # what a client gets by default: the first page (GATEWAY_DEFAULT_COUNT = 20), Bundle.total all
                ms, r = _time(s.get, f"{base}/ResearchStudy/$match?patient-id=bp{i}")
                r.raise_for_status()
                page_ms.append(ms)
                profile = build_profile(people[i], term)
                (sick_ms if profile.conditions else healthy_ms).append(ms)
                # the largest page (1000): ids, order, scores and every explanation compared in-process
                ms, r2 = _time(s.get, f"{base}/ResearchStudy/$match?patient-id=bp{i}&_count=1000")
                r2.raise_for_status()
                full_ms.append(ms)
                want, _ = si.match(profile, MatchQuery(today=date.today()))
                want_rows = [(x.study_id, x.score, tuple((f.criterion, f.result, f.text) for f in x.findings))
                             for x in want]
                got = [_explained(e) for e in r2.json().get("entry", [])]
                first = [_explained(e) for e in r.json().get("entry", [])]
                agree += (got == want_rows[:1000] and first == want_rows[:20]
                          and r.json()["total"] == r2.json()["total"] == len(want))
            print(f"$match over HTTP, default page   {fmt(page_ms)}")
            print(f"  of which people with a condition       {fmt(sick_ms)}")
            if healthy_ms:
                print(f"  of which people with no condition      {fmt(healthy_ms)}")
            print(f"$match over HTTP, _count=1000    {fmt(full_ms)}")
            print(f"same answer as in-process full evaluation (ids, order, scores, every explanation, total): "
                  f"{agree}/{len(sample)}")
            pi = PatientIndex(term)
            for p in people:
                pi.add(build_profile(p, term))
            s.put(f"{base}/ResearchStudy/rare", headers=FHIR_JSON, json={
                "resourceType": "ResearchStudy", "id": "rare", "status": "active",
                "condition": [{"coding": [{"system": RARE[0], "code": RARE[1]}]}]}).raise_for_status()
            cms = []
            for _ in range(5):
                ms, r = _time(s.get, f"{base}/ResearchStudy/rare/$candidates?consent=any&_count=1000")
                r.raise_for_status()
                cms.append(ms)
            sc = study_criteria({"resourceType": "ResearchStudy", "id": "rare", "status": "active",
                                 "condition": [{"coding": [{"system": RARE[0], "code": RARE[1]}]}]}, None, {}, term)
            want = [x.patient_key for x in pi.match(sc, MatchQuery(frozenset({"active"}), today=date.today()))]
            got = [e["resource"]["id"] for e in r.json().get("entry", [])]
            same = [f"nhs:9{int(g[2:]):09d}" for g in got] == want
            print(f"$candidates rare over HTTP {fmt(cms)}; {len(got)} candidates; same as in-process: {same}")
        finally:
            server.shutdown()
            app.extensions["gateway.store"].engine.dispose()


# -- 3. the patient side in the database (PostgreSQL), as the gateway now serves it -------------------------------
def _consents(i: int, pid: str, research_every: int, alerts_every: int) -> list[dict]:
    out = []
    for kind, every, offset, purpose in (("r", research_every, 0, cv.PURPOSE_RESEARCH),
                                         ("a", alerts_every, 1, cv.PURPOSE_TRIAL_ALERTS)):
        if every and i % every == offset % every:
            out.append({"resourceType": "Consent", "id": f"{pid}-{kind}", "status": "active",
                        "dateTime": "2026-01-01T00:00:00Z",
                        "scope": {"coding": [{"system": cv.CONSENT_SCOPE, "code": "research"}]},
                        "patient": {"reference": f"Patient/{pid}"},
                        "provision": {"type": "permit", "purpose": [{"system": purpose[0], "code": purpose[1]}]}})
    return out


def _analyze(store) -> None:
    """PostgreSQL: refresh the planner's statistics. Autovacuum lags a bulk load, and with the statistics of a
    small table the lookups of the matching write hook (``id IN (...)`` of 500 ids) were planned as a scan of
    every row of the type: the load slowed down as the database grew (a cause of 122 -> 45 people/s at 100,000)."""
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")


def _store_range(store, have: int, want: int, batch: int, unit: str, records) -> float | None:
    """Items ``have`` .. ``want`` - 1 stored (``records(i)``: the resources of item i, created under their ids, the
    path of POSTed Bundle entries), ``batch`` a transaction, with a progress bar on a terminal and ANALYZE
    (PostgreSQL) whenever the count has doubled: the write hooks look resources up by id. Returns items/s (None:
    nothing to store)."""
    from tqdm import tqdm

    t = time.perf_counter()
    analyzed = max(have, 1000)  # stored at the last ANALYZE
    with tqdm(total=max(0, want - have), unit=unit, desc=unit, disable=None) as bar:
        for start in range(have, want, batch):
            end = min(start + batch, want)
            with store.write() as tx:
                for i in range(start, end):
                    for res in records(i):
                        tx.create(res, res["id"])  # ids unique by construction
            bar.update(end - start)
            if end >= 2 * analyzed:
                _analyze(store)
                analyzed = end
    if want <= have:
        return None
    _analyze(store)
    return (want - have) / (time.perf_counter() - t)


def db_load(store, term, args) -> dict:
    """Store --db-studies studies (500 a transaction) and --db-patients people (``args.batch``, default 500, a
    transaction) through the store's bulk write path (Store.write + create, what POSTed Bundle entries use, without
    FHIR validation), continuing a database an earlier run began. The write hooks build each study's and person's
    rows in the same transaction. Returns what it stored: {"studies": n, "people": n, "studies_per_s": ..,
    "people_per_s": ..} (rates None when nothing was stored)."""
    import gc

    from sqlalchemy import func, select

    from gateway.store import schema

    r = schema.resources
    with store.engine.connect() as conn:  # the generated studies only (ids bs<i>), not probes a bench added
        have_studies = conn.execute(select(func.count()).select_from(r).where(
            r.c.type == "ResearchStudy", r.c.id.like("bs%"))).scalar_one()
        have_people = conn.execute(select(func.count()).select_from(schema.match_people)).scalar_one()
    gen = Generator(term, args.seed + have_studies + have_people, args.extracted)
    batch = getattr(args, "batch", 500)

    def person(i: int) -> list[dict]:
        recs = gen.patient_json(i)
        return recs + _consents(i, recs[0]["id"], args.research_every, args.alerts_every)

    # the terminology and the process's other long-lived objects are left out of the collector's full passes,
    # which ran every few thousand allocations and cost ~10% of the load
    gc.freeze()
    try:
        t = time.perf_counter()
        study_rate = _store_range(store, have_studies, args.db_studies, 500, "studies", gen.study)
        if study_rate:
            print(f"stored {args.db_studies - have_studies:,} studies (+ Groups, Locations) in "
                  f"{time.perf_counter() - t:.0f} s ({study_rate:,.0f} studies/s)", flush=True)
        t = time.perf_counter()
        rate = _store_range(store, have_people, args.db_patients, batch, "people", person)
        if rate:
            print(f"stored {args.db_patients - have_people:,} people in {time.perf_counter() - t:.0f} s "
                  f"({rate:,.0f} people/s, {batch} a transaction, rows built in the same transactions)", flush=True)
    finally:
        gc.unfreeze()
    return {"studies": max(0, args.db_studies - have_studies), "people": max(0, args.db_patients - have_people),
            "studies_per_s": round(study_rate, 1) if study_rate else None,
            "people_per_s": round(rate, 1) if rate else None}


def rss_mb() -> tuple[float, float]:
    """(resident, peak resident) memory of this process in MB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def db_measure(term_loader, args, started: float) -> dict:
    """A fresh process: first $match, memory, $match, $candidates first and next pages. Returns the figures."""
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from gateway.matching.consent import ConsentGate
    from gateway.matching.state import matching_state
    from gateway.store import profiles as pdb
    from gateway.store import schema
    from gateway.store.engine import make_engine
    from gateway.store.repo import Store

    term = term_loader()
    store = Store(make_engine(args.db_url))
    state = matching_state(store, term)
    state.refresh()
    q = MatchQuery(today=TODAY)
    with store.engine.connect() as conn:
        n_people = conn.execute(select(func.count()).select_from(schema.match_people)).scalar_one()
        keys = conn.execute(select(schema.match_patients.c.patient_id).order_by(func.random()).limit(args.probes)
                            ).scalars().all()
    first_key = state.person_for_patient(keys[0])
    state.studies.page(state.patients.get(first_key), q, args.page)
    first = time.time() - started  # from the launch of the process: interpreter, imports, terminology, studies
    rss_first = rss_mb()
    out = {"patients": n_people, "studies": len(state.studies.studies), "first_match_after_start_s": round(first, 3)}
    print(f"fresh process: {n_people:,} people in the database, {len(state.studies.studies):,} studies indexed; "
          f"first $match answered {first:.2f} s after the process started (imports, terminology, study index "
          f"from the change feed); RSS {rss_first[0]:.0f} MB", flush=True)
    match_ms = []
    for pid in keys:
        t = time.perf_counter()
        state.studies.page(state.patients.get(state.person_for_patient(pid)), q, args.page)
        match_ms.append((time.perf_counter() - t) * 1000)
    print(f"$match for {len(keys)} stored people (profile read from the database, every candidate screened, the "
          f"first {args.page} explained): {fmt(match_ms)}")
    out["match_p50_ms"], out["match_p95_ms"] = round(statistics.median(match_ms), 2), round(pct(match_ms, 95), 2)
    gate = ConsentGate()
    now = datetime.now(UTC)
    for name, code in (("rare", RARE), ("broad", BROAD)):
        study = {"resourceType": "ResearchStudy", "id": f"probe-{name}", "status": "active",
                 "condition": [{"coding": [{"system": code[0], "code": code[1]}]}]}
        group = {"characteristic": [{"code": {"coding": [{"system": cv.AGE[0], "code": cv.AGE[1]}]},
                                     "valueRange": {"low": {"value": 18, "code": "a"}}}]}
        sc = study_criteria(study, group, {}, term)
        for mode, rows, allowed in (
                ("consent", pdb.Filter(research=True),
                 lambda p, study=study: gate.may_propose(study, p.consents, p.nhs_number, now).allowed),
                ("any", pdb.Filter(any_consent=True), lambda p: True)):
            firsts, nexts, total = [], [], 0
            for _ in range(args.candidate_runs):
                t = time.perf_counter()
                page, total, cursor = state.patients.page(sc, q, rows, allowed, args.page)
                firsts.append((time.perf_counter() - t) * 1000)
                if cursor is not None:
                    t = time.perf_counter()
                    state.patients.page(sc, q, rows, allowed, args.page, cursor)
                    nexts.append((time.perf_counter() - t) * 1000)
            # a page gives no total when counting would screen more than the page (_total=accurate counts)
            total = state.patients.page(sc, q, rows, allowed, args.page, count=True)[1]
            print(f"$candidates {name} study, consent={'required' if mode == 'consent' else 'any'}: {total:,} fit; "
                  f"first page {fmt(firsts)}; next page {fmt(nexts) if nexts else '(one page)'}", flush=True)
            if mode == "consent":
                out[f"candidates_{name}_first_page_ms"] = round(statistics.median(firsts), 1)
                out[f"candidates_{name}_next_page_ms"] = round(statistics.median(nexts), 1) if nexts else None
                out[f"candidates_{name}_fit"] = total
            else:
                out[f"candidates_{name}_any_first_page_ms"] = round(statistics.median(firsts), 1)
                out[f"candidates_{name}_any_fit"] = total
        if store.engine.dialect.name == "postgresql":
            explain(store, sc, name, args)
    rss = rss_mb()
    out["process_rss_mb"], out["process_peak_rss_mb"] = round(rss[0]), round(rss[1])
    print(f"process memory at the end: RSS {rss[0]:.0f} MB, peak {rss[1]:.0f} MB")
    if store.engine.dialect.name == "postgresql":
        out["table_sizes_mb"] = table_sizes(store)
    return out


def explain(store, sc, name: str, args) -> None:
    """EXPLAIN ANALYZE of the first chunk of the candidate query (consent required), printed for docs/scale.md."""
    from dataclasses import replace

    from sqlalchemy import select

    from gateway.matching.people import column_filter
    from gateway.store import profiles as pdb

    f = replace(column_filter(sc, TODAY), research=True)
    stmt = select(pdb.P.c.person, pdb.P.c.nhs_number, pdb.P.c.doc).where(pdb.P.c.person > "", *pdb._where(f)) \
        .order_by(pdb.P.c.person).limit(2000)
    sql = str(stmt.compile(store.engine, compile_kwargs={"literal_binds": True}))
    with store.engine.connect() as conn:
        plan = [r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql)]
    print(f"\nEXPLAIN ANALYZE, candidate query ({name} study, consent required, first chunk):")
    for line in plan:
        print(f"    {line}")


def table_sizes(store) -> dict:
    from sqlalchemy import text

    with store.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid), reltuples::bigint "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
            "AND relkind = 'r' AND (relname LIKE 'match_%' OR relname IN ('resources', 'resource_versions', "
            "'idx_token', 'idx_reference', 'changes')) ORDER BY 2 DESC")).all()
    print("\ntable sizes (with indexes / heap only / rows):")
    out = {}
    for name, total, heap, n in rows:
        print(f"    {name:20s} {total / 2**20:9.1f} MB  {heap / 2**20:9.1f} MB  {n:>12,}")
        out[name] = round(total / 2**20, 1)
    return out


def db_part(args) -> None:
    """Load (in this process), then measure in a fresh process (a gateway process that just started)."""
    import subprocess

    from gateway.matching.state import matching_state
    from gateway.store import schema
    from gateway.store.engine import make_engine
    from gateway.store.repo import Store

    print(f"\n== 3. the patient side in the database: {args.db_patients:,} people, {args.db_studies:,} studies, "
          f"{args.db_url.split('://')[0]} ==", flush=True)
    engine = make_engine(args.db_url)
    schema.migrate(engine)
    store = Store(engine)
    term = default_terminology()
    matching_state(store, term)  # installs the write hook
    db_load(store, term, args)
    engine.dispose()
    cmd = [sys.executable, __file__, "--db-url", args.db_url, "--db-measure", "--probes", str(args.probes),
           "--page", str(args.page), "--candidate-runs", str(args.candidate_runs), "--seed", str(args.seed),
           "--started", str(time.time())]
    if args.json:
        cmd += ["--json", args.json]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"(the measuring process ran {time.perf_counter() - t:.1f} s in all)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=70_000)
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--probes", type=int, default=300)
    ap.add_argument("--brute-probes", type=int, default=20)
    ap.add_argument("--full-probes", type=int, default=100, help="probes also timed explaining every match")
    ap.add_argument("--page", type=int, default=20, help="_count: results explained (GATEWAY_DEFAULT_COUNT)")
    ap.add_argument("--e2e-studies", type=int, default=70_000)
    ap.add_argument("--e2e-patients", type=int, default=10_000)
    ap.add_argument("--e2e-db", help="SQLite file for the end-to-end part; kept, and reused by a later run "
                                     "with the same sizes and seed (skips loading)")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--extracted", action="store_true", help="studies carry extracted criteria (issue #12)")
    ap.add_argument("--db-url", help="part 3: the people stored in this database (PostgreSQL for the figures)")
    ap.add_argument("--db-patients", type=int, default=100_000)
    ap.add_argument("--db-studies", type=int, default=70_000)
    ap.add_argument("--research-every", type=int, default=10, help="one person in N consents to HRESCH")
    ap.add_argument("--alerts-every", type=int, default=10, help="one person in N consents to trial alerts")
    ap.add_argument("--candidate-runs", type=int, default=5)
    ap.add_argument("--db-measure", action="store_true", help=argparse.SUPPRESS)  # the fresh measuring process
    ap.add_argument("--started", type=float, default=0.0, help=argparse.SUPPRESS)  # when it was launched
    ap.add_argument("--json", help="write part 3's figures to this file")
    args = ap.parse_args()
    if args.db_measure:
        figures = db_measure(default_terminology, args, args.started)
        figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))
        return
    print(f"machine: {machine()}")
    if args.db_url:
        db_part(args)
        return
    term = default_terminology()
    if not args.skip_scale:
        scale_part(term, args)
    if not args.skip_e2e:
        e2e_part(term, args)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
