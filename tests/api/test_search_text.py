"""ResearchStudy?_text / _content / condition:text / condition:below / condition and keyword as words (issue #14),
on both backends, with the refusal cases."""

from __future__ import annotations

import pytest

from tests.conftest import FHIR_JSON, ROOT

DEMO = ROOT / "fixtures" / "demo"


def _study(title: str, conditions: list[str], status: str = "active", description: str = "",
           keywords: list[str] = ()) -> dict:
    out = {"resourceType": "ResearchStudy", "status": status, "title": title,
           "condition": [{"text": c} for c in conditions], "description": description or title}
    if keywords:  # FHIR JSON has no empty arrays (refused with 400 by validate_resource)
        out["keyword"] = [{"text": k} for k in keywords]
    return out


OTHERS = [
    _study("Venetoclax for children with acute leukaemia", ["Acute Lymphoblastic Leukemia"]),
    _study("Daratumumab maintenance in myeloma", ["Multiple Myeloma"]),
    _study("Radiotherapy dose in Hodgkin lymphoma", ["Hodgkin Lymphoma"]),
    _study("Chemoradiotherapy for oesophageal cancer", ["Esophageal Cancer"]),
    _study("Proton therapy for medulloblastoma", ["Medulloblastoma"]),
    _study("ONC201 in diffuse intrinsic pontine glioma", ["Diffuse Intrinsic Pontine Glioma"], keywords=["DIPG"]),
    _study("Exercise after breast cancer", ["Breast Cancer"]),
]


@pytest.fixture
def studies(fhir) -> dict[str, str]:
    """The demo glioblastoma and brain-metastases studies plus OTHERS: title -> id."""
    for name in ("01-sponsor-glioblastoma-study.json", "02-sponsor-brain-metastases-study.json"):
        assert fhir.post("/fhir", data=(DEMO / name).read_bytes()).status_code == 200
    for s in OTHERS:
        assert fhir.post("/fhir/ResearchStudy", json=s).status_code == 201
    bundle = fhir.get("/fhir/ResearchStudy?_count=100").get_json()
    return {e["resource"]["title"]: e["resource"]["id"] for e in bundle["entry"]}


def _titles(fhir, query: str) -> list[str]:
    resp = fhir.get(f"/fhir/ResearchStudy?{query}")
    assert resp.status_code == 200, resp.get_json()
    return [e["resource"]["title"] for e in resp.get_json().get("entry", []) if e["search"]["mode"] == "match"]


def _glio(titles: list[str]) -> bool:
    return any(t.startswith("ReGlio") for t in titles)


def _mets(titles: list[str]) -> bool:
    return any(t.startswith("SRS-Plus") for t in titles)


@pytest.mark.parametrize("words", ["brain tumour", "brain tumor", "GBM", "glioblastoma", "gliobastoma",
                                   "glioblastomma", "Brain Tumours"])
def test_text_finds_the_glioblastoma_study_and_not_brain_metastases(fhir, studies, words):
    titles = _titles(fhir, f"_text={words}")
    assert _glio(titles) and not _mets(titles)


def test_brain_tumour_finds_every_primary_brain_tumour_by_hierarchy(fhir, studies):
    titles = _titles(fhir, "_text=brain tumour")
    assert {"Proton therapy for medulloblastoma", "ONC201 in diffuse intrinsic pontine glioma"} <= set(titles)
    assert "Exercise after breast cancer" not in titles


def test_blood_cancer_finds_leukaemia_lymphoma_and_myeloma(fhir, studies):
    titles = set(_titles(fhir, "_text=blood cancer"))
    assert titles == {"Venetoclax for children with acute leukaemia", "Daratumumab maintenance in myeloma",
                      "Radiotherapy dose in Hodgkin lymphoma"}


@pytest.mark.parametrize("words", ["oesophageal cancer", "esophageal cancer", "leukaemia", "leukemia", "lukaemia"])
def test_uk_us_spellings_and_misspellings(fhir, studies, words):
    titles = _titles(fhir, f"_text={words}")
    assert titles and all(("oesophag" in t) == ("sophag" in words) for t in titles)


def test_brain_metastases_is_found_as_such(fhir, studies):
    titles = _titles(fhir, "_text=brain metastases")
    assert _mets(titles) and not _glio(titles)


def test_score_on_each_entry_best_first_and_content_is_the_same(fhir, studies):
    body = fhir.get("/fhir/ResearchStudy?_text=glioblastoma").get_json()
    scores = [e["search"]["score"] for e in body["entry"]]
    assert scores and all(0 < s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    assert _titles(fhir, "_content=glioblastoma") == [e["resource"]["title"] for e in body["entry"]]
    assert "_text=glioblastoma" in body["link"][0]["url"]


def test_text_combines_with_other_parameters(fhir, studies):
    assert _glio(_titles(fhir, "_text=brain tumour&status=active"))
    assert _titles(fhir, "_text=brain tumour&status=completed") == []
    assert _titles(fhir, "_text=brain tumour&_text=breast") == []  # repeated: ANDed
    paged = fhir.get("/fhir/ResearchStudy?_text=brain tumour&_count=1").get_json()
    assert paged["total"] >= 3 and len(paged["entry"]) == 1
    nxt = [lk["url"] for lk in paged["link"] if lk["relation"] == "next"][0]
    second = fhir.get(nxt.replace("http://localhost", "")).get_json()
    assert second["entry"][0]["resource"]["id"] != paged["entry"][0]["resource"]["id"]


def test_condition_and_keyword_given_as_words(fhir, studies):
    assert _glio(_titles(fhir, "condition=glioblastoma"))
    titles = _titles(fhir, "keyword=brain tumour")
    assert _glio(titles) and not _mets(titles)
    assert _titles(fhir, "keyword=DIPG") == ["ONC201 in diffuse intrinsic pontine glioma"]


def test_condition_text_modifier(fhir, studies):
    titles = _titles(fhir, "condition:text=brain tumour")
    assert _glio(titles) and "Proton therapy for medulloblastoma" in titles and not _mets(titles)
    # words only in the description or title do not count for condition:text
    assert _titles(fhir, "condition:text=exercise") == []


def test_condition_below_is_subsumption(fhir, studies):
    titles = _titles(fhir, "condition:below=http://snomed.info/sct|126952004")  # neoplasm of brain
    assert _glio(titles) and not _mets(titles)
    assert _glio(_titles(fhir, "condition:below=http://snomed.info/sct|393563007"))


@pytest.mark.parametrize("query, status, words", [
    ("_text=", 400, "needs words"),
    ("_text=the trial", 400, "no words"),
    ("condition:below=126952004", 400, "system|code"),
    ("condition:below=http://snomed.info/sct|999999999999", 400, "not known"),
    ("condition:text=", 400, "no value"),
])
def test_refusals(fhir, studies, query, status, words):
    resp = fhir.get(f"/fhir/ResearchStudy?{query}")
    assert resp.status_code == status
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome" and words in body["issue"][0]["diagnostics"]


def test_index_follows_updates_and_deletes(fhir, studies):
    sid = studies["Exercise after breast cancer"]
    study = fhir.get(f"/fhir/ResearchStudy/{sid}").get_json()
    study["condition"] = [{"text": "Mesothelioma"}]
    study["title"] = study["description"] = "Exercise after mesothelioma"
    assert fhir.put(f"/fhir/ResearchStudy/{sid}", json=study).status_code == 200
    assert _titles(fhir, "_text=mesothelioma") == ["Exercise after mesothelioma"]
    assert _titles(fhir, "_text=breast") == []
    assert fhir.delete(f"/fhir/ResearchStudy/{sid}").status_code == 204
    assert _titles(fhir, "_text=mesothelioma") == []


def test_eligibility_text_of_the_group_is_searched(fhir):
    group = {"resourceType": "Group", "type": "person", "actual": False, "extension": [{
        "url": "https://trialgateway.org/fhir/StructureDefinition/eligibility-criteria-text",
        "valueMarkdown": "Inclusion: histologically confirmed chordoma of the skull base."}]}
    gid = fhir.post("/fhir/Group", json=group).get_json()["id"]
    study = {**_study("A study of a rare bone tumour", ["Bone Neoplasm"]), "enrollment": [
        {"reference": f"Group/{gid}"}]}
    assert fhir.post("/fhir/ResearchStudy", json=study, headers=FHIR_JSON).status_code == 201
    assert _titles(fhir, "_text=chordoma") == ["A study of a rare bone tumour"]


def _group(words: str) -> dict:
    return {"resourceType": "Group", "type": "person", "actual": False, "extension": [{
        "url": "https://trialgateway.org/fhir/StructureDefinition/eligibility-criteria-text",
        "valueMarkdown": f"Inclusion: {words}."}]}


def test_one_text_row_per_study_holds_its_groups_eligibility_text(fhir, store):
    """A study's search row holds the text of the Groups it enrols (one engine match per study); Groups have none."""
    from sqlalchemy import text

    gid = fhir.post("/fhir/Group", json=_group("histologically confirmed chordoma")).get_json()["id"]
    sid = fhir.post("/fhir/ResearchStudy", json={**_study("A rare bone tumour study", ["Bone Neoplasm"]),
                                                 "enrollment": [{"reference": f"Group/{gid}"}]}).get_json()["id"]
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT rtype, ref, eligibility FROM search_text")).all()
    assert [(r.rtype, r.ref) for r in rows] == [("ResearchStudy", f"ResearchStudy/{sid}")]
    assert "chordoma" in rows[0].eligibility


def test_the_study_row_follows_its_group(fhir):
    """The write path: a Group written after its study (created, updated, deleted) rewrites the study's row."""
    fhir.put("/fhir/Group/elig-1", json={**_group("histologically confirmed chordoma"), "id": "elig-1"})
    study = {**_study("A rare bone tumour study", ["Bone Neoplasm"]), "enrollment": [{"reference": "Group/elig-1"},
                                                                                    {"reference": "Group/elig-2"}]}
    assert fhir.post("/fhir/ResearchStudy", json=study).status_code == 201
    assert _titles(fhir, "_text=chordoma") == ["A rare bone tumour study"]
    assert _titles(fhir, "_text=ependymoma") == []
    # the second Group is created after the study that names it
    assert fhir.put("/fhir/Group/elig-2", json={**_group("ependymoma in remission"), "id": "elig-2"}
                    ).status_code == 201
    assert _titles(fhir, "_text=ependymoma") == ["A rare bone tumour study"]
    assert _titles(fhir, "_text=chordoma") == ["A rare bone tumour study"]
    # updated: the old words go, the new come
    assert fhir.put("/fhir/Group/elig-1", json={**_group("confirmed chondrosarcoma"), "id": "elig-1"}
                    ).status_code == 200
    assert _titles(fhir, "_text=chordoma") == []
    assert _titles(fhir, "_text=chondrosarcoma") == ["A rare bone tumour study"]
    # deleted
    assert fhir.delete("/fhir/Group/elig-2").status_code == 204
    assert _titles(fhir, "_text=ependymoma") == []
    assert _titles(fhir, "_text=chondrosarcoma") == ["A rare bone tumour study"]


def test_a_transaction_writing_group_and_study_together(fhir):
    """Group and study in one transaction Bundle (the study naming the Group by its fullUrl), in either order."""
    for first in ("Group", "ResearchStudy"):
        group = {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{len(first) % 10}",
                 "resource": _group(f"eligibility words {first.lower()}zz"),
                 "request": {"method": "POST", "url": "Group"}}
        study = {"resource": {**_study(f"Study written with its group ({first} first)", ["Bone Neoplasm"]),
                              "enrollment": [{"reference": group["fullUrl"]}]},
                 "request": {"method": "POST", "url": "ResearchStudy"}}
        entries = [group, study] if first == "Group" else [study, group]
        resp = fhir.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
        assert resp.status_code == 200, resp.get_json()
        assert _titles(fhir, f"_text={first.lower()}zz") == [f"Study written with its group ({first} first)"]


def test_migration_10_moves_the_groups_text_into_their_studies_rows(fhir, store):
    """A database of the old layout (a row per Group, the study's row without eligibility text) after migration 10:
    one row per study, found by its Group's words; the engine's index follows later writes again."""
    from sqlalchemy import text

    from gateway.store import fulltext

    gid = fhir.post("/fhir/Group", json=_group("histologically confirmed chordoma")).get_json()["id"]
    sid = fhir.post("/fhir/ResearchStudy", json={**_study("A rare quokka study", ["Bone Neoplasm"]),
                                                 "enrollment": [{"reference": f"Group/{gid}"}]}).get_json()["id"]
    with store.engine.begin() as conn:  # the layout of migration 6
        group_pk = conn.execute(text("SELECT pk FROM resources WHERE type = 'Group'")).scalar_one()
        conn.execute(text("UPDATE search_text SET eligibility = NULL"))
        conn.execute(text("INSERT INTO search_text (res_pk, rtype, ref, eligibility) VALUES "
                          "(:pk, 'Group', :ref, 'Inclusion: histologically confirmed chordoma.')"),
                     {"pk": group_pk, "ref": f"Group/{gid}"})
    assert fulltext.merge_study_rows(store.engine) == 1
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT rtype FROM search_text")).scalars().all() == ["ResearchStudy"]
    assert _titles(fhir, "_text=chordoma") == ["A rare quokka study"]
    study = fhir.get(f"/fhir/ResearchStudy/{sid}").get_json()
    study["title"] = study["description"] = "A rare wombat study"
    assert fhir.put(f"/fhir/ResearchStudy/{sid}", json=study).status_code == 200
    assert _titles(fhir, "_text=chordoma") == ["A rare wombat study"]
    assert _titles(fhir, "_text=quokka") == []


def test_migration_backfill_indexes_what_is_stored(fhir, studies, store):
    """Migration 6 back-fills stored resources: empty the index, run the back-fill, and the search works again."""
    from sqlalchemy import text

    from gateway.store import fulltext

    with store.engine.begin() as conn:
        for table in ("search_text", "search_geo", "search_words"):
            conn.execute(text(f"DELETE FROM {table}"))
    assert _titles(fhir, "_text=medulloblastoma") == []
    assert fulltext.backfill(store.engine) >= len(OTHERS) + 2
    assert _titles(fhir, "_text=medulloblastoma") == ["Proton therapy for medulloblastoma"]
    assert _glio(_titles(fhir, "_text=gliobastoma"))  # the vocabulary for misspellings is back too


@pytest.mark.parametrize("words", ["brain tumour", "brain tumor", "gliobastoma"])
def test_the_demo_story_brain_tumour_near_ls6(fhir, studies, words):
    """The issue's browser story at the API: words near LS6 3HE find the glioblastoma study, nearest site in Leeds."""
    body = fhir.get(f"/fhir/ResearchStudy?_text={words}&postcode=LS6 3HE").get_json()
    titles = [e["resource"]["title"] for e in body["entry"] if e["search"]["mode"] == "match"]
    assert _glio(titles) and not _mets(titles)
    ext = body["entry"][0]["search"]["extension"][0]["extension"]
    assert "Leeds" in ext[0]["valueReference"]["display"] or "St James" in ext[0]["valueReference"]["display"]
    assert ext[1]["valueQuantity"]["value"] < 10


def test_capability_statement_lists_the_search_parameters(fhir):
    cs = fhir.get("/fhir/metadata").get_json()
    by_type = {r["type"]: {p["name"]: p for p in r.get("searchParam", [])} for r in cs["rest"][0]["resource"]}
    assert {"_text", "_content", "postcode", "distance", "near", "condition"} <= set(by_type["ResearchStudy"])
    assert by_type["Location"]["near"]["type"] == "special"
