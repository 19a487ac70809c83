"""ingest(): many records per database transaction, each record still all-or-nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from gateway.fhir import conventions as cv
from gateway.fhir.search import parse_search
from gateway.ingest import ingest
from gateway.mapping import PayloadError, map_payload, pipeline
from gateway.mapping.ingest import prevalidate
from gateway.mapping.registry import default_registry
from tests.store.helpers import table_counts

DATA = Path(__file__).resolve().parents[1] / "data" / "ctgov"
STUDY = json.loads((DATA / "get_nct02576665_20260811.json").read_text())  # 3 sites
MESH = json.loads((DATA / "NCT02513394.json").read_text())["derivedSection"]  # carries MeSH terms


def _variant(nct: str, title: str | None = None, isrctn: str | None = None) -> dict:
    s = copy.deepcopy(STUDY)
    ident = s["protocolSection"]["identificationModule"]
    ident["nctId"] = nct
    ident.pop("secondaryIdInfos", None)
    if title:
        ident["briefTitle"] = title
    if isrctn:
        ident["secondaryIdInfos"] = [{"id": isrctn, "type": "REGISTRY", "domain": "ISRCTN"}]
    return s


MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def _study_files(folder: Path, ncts: list[str]) -> list[Path]:
    """One ClinicalTrials.gov record per file, named 0.json, 1.json...: the study with each NCT id."""
    files = [folder / f"{i}.json" for i in range(len(ncts))]
    for path, nct in zip(files, ncts, strict=True):
        path.write_text(json.dumps(_variant(nct)))
    return files


def _records(studies: list[dict]):
    reg = default_registry()
    return [rec for s in studies for rec in map_payload(reg.get("ctgov-v2"), s, conceptmaps=reg.conceptmaps)]


def _studies(store, system: str, value: str) -> list:
    return store.search(parse_search("ResearchStudy", [("identifier", f"{system}|{value}")]))[1]


def _assert_references_resolve(store) -> None:
    """Every study's site and enrollment references name a stored resource: a record stored again after its
    shared transaction failed was stored from its own data, not with ids from the failed attempt."""
    _, studies = store.search(parse_search("ResearchStudy", [("_count", "100")]))
    for study in studies:
        r = study.resource()
        for ref in [s["reference"] for s in r.get("site", [])] + [g["reference"] for g in r.get("enrollment", [])]:
            rtype, rid = ref.split("/")
            assert store.read(rtype, rid).resource()["resourceType"] == rtype


def test_a_failing_record_mid_transaction_stores_nothing_and_the_others_are_kept(service, store):
    # Two stored studies, one under each identifier the bad record carries: the record is ambiguous (412).
    service.create({"resourceType": "ResearchStudy", "status": "active",
                    "identifier": [{"system": cv.CTGOV, "value": "NCT90000002"}]})
    service.create({"resourceType": "ResearchStudy", "status": "active",
                    "identifier": [{"system": cv.ISRCTN, "value": "ISRCTN12345678"}]})
    before = table_counts(store)
    studies = [_variant("NCT90000001"), _variant("NCT90000002", isrctn="ISRCTN12345678"), _variant("NCT90000003")]
    results = ingest(service, _records(studies), per_transaction=10)
    assert [r.outcome for r in results] == ["created", "rejected", "created"]
    assert results[1].status == 412 and "name 2 different ResearchStudy" in results[1].reasons[0]
    after = table_counts(store)
    # two good records, each a study, its Group and 3 Locations; nothing of the bad one (not even its sites)
    assert after["resources"] == before["resources"] + 2 * 5
    assert after["changes"] == before["changes"] + 2 * 5
    assert store.count("Location") == 6
    assert len(_studies(store, cv.CTGOV, "NCT90000001")) == 1 and len(_studies(store, cv.CTGOV, "NCT90000003")) == 1


def test_the_same_study_twice_in_one_transaction_is_one_study_with_two_versions(service, store):
    studies = [_variant("NCT90000010", "First title"), _variant("NCT90000010", "Second title")]
    results = ingest(service, _records(studies), per_transaction=10)
    assert [r.outcome for r in results] == ["created", "updated"]
    [study] = _studies(store, cv.CTGOV, "NCT90000010")
    assert study.version == 2 and study.resource()["title"] == "Second title"
    assert store.count("Location") == 3 and store.count("Group") == 1


def test_a_study_met_again_under_another_identifier_in_the_same_transaction_is_merged(service, store):
    studies = [_variant("NCT90000020"), _variant("NCT90000020", "Now with its ISRCTN", isrctn="ISRCTN87654321")]
    results = ingest(service, _records(studies), per_transaction=10)
    assert [r.outcome for r in results] == ["created", "updated"]
    [study] = _studies(store, cv.ISRCTN, "ISRCTN87654321")
    assert [st.id for st in _studies(store, cv.CTGOV, "NCT90000020")] == [study.id]
    assert store.count("ResearchStudy") == 1


def test_results_and_hierarchy_are_reported_once_the_records_are_committed(service, store):
    seen: list[tuple[str, bool]] = []

    def committed(rec, result) -> None:
        # read through another connection: only committed rows are visible there
        sid = result.locations[-1].split("/")[1]
        with store.engine.connect() as conn:
            visible = conn.exec_driver_sql("SELECT count(*) FROM resources WHERE id = ?"
                                           if store.engine.dialect.name == "sqlite" else
                                           "SELECT count(*) FROM resources WHERE id = %s", (sid,)).scalar()
        seen.append((result.outcome, visible == 1))

    hierarchy: list = []
    studies = [{**_variant(f"NCT9000003{i}"), "derivedSection": MESH} for i in range(2)]
    ingest(service, _records(studies), hierarchy_sink=hierarchy.append, per_transaction=10, on_result=committed)
    assert seen == [("created", True), ("created", True)]
    assert len(hierarchy) == 2 and all(hierarchy)


def test_a_failed_shared_transaction_is_retried_one_record_per_transaction(service, store):
    calls = {"n": 0}

    def flaky(tx, result, resource) -> None:
        if result.stored.type == "ResearchStudy":
            calls["n"] += 1
            if calls["n"] == 2:  # the second study of the shared transaction: the whole transaction fails
                raise OperationalError("UPDATE ...", {}, Exception("database is locked"))

    service.hooks.append(flaky)
    try:
        results = ingest(service, _records([_variant(f"NCT9000004{i}") for i in range(3)]), per_transaction=10)
    finally:
        service.hooks.remove(flaky)
    assert [r.outcome for r in results] == ["created"] * 3
    assert store.count("ResearchStudy") == 3 and store.count("Location") == 9
    assert calls["n"] == 2 + 3  # two in the failed transaction, then one per record
    _assert_references_resolve(store)


@pytest.mark.parametrize("per_transaction", [1, 2, 100])
def test_the_answer_does_not_depend_on_records_per_transaction(service, store, per_transaction):
    studies = [_variant(f"NCT9000005{i}", f"Title {i}") for i in range(4)] + [_variant("NCT90000051", "Changed")]
    results = ingest(service, _records(studies), per_transaction=per_transaction)
    assert [r.outcome for r in results] == ["created"] * 4 + ["updated"]
    assert store.count("ResearchStudy") == 4 and store.count("Location") == 12
    [changed] = _studies(store, cv.CTGOV, "NCT90000051")
    assert changed.version == 2 and changed.resource()["title"] == "Changed"


def test_prevalidated_resources_are_stored_and_an_invalid_one_is_still_rejected_by_the_store(service, store):
    good, bad = _records([_variant("NCT90000060"), _variant("NCT90000061")])
    bad.bundle["entry"][0]["resource"]["status"] = "not-a-status"  # the first Location
    prevalidate(good)
    prevalidate(bad)
    assert good.validated == set(range(len(good.bundle["entry"])))
    assert 0 not in bad.validated and bad.validated  # the others passed
    results = ingest(service, [good, bad], per_transaction=10)
    assert [r.outcome for r in results] == ["created", "rejected"]
    assert results[1].status == 422 and "Bundle.entry[0].resource.status" in results[1].operation_outcome["issue"][0][
        "expression"]
    assert store.count("ResearchStudy") == 1 and store.count("Location") == 3


def _shape(recs):
    """Mapped records as comparable data: fullUrls are fresh uuids each time, so references count by position."""
    out = []
    for r in recs:
        text = json.dumps([(e["request"], e["resource"]) for e in r.bundle["entry"]])
        for i, e in enumerate(r.bundle["entry"]):
            text = text.replace(e["fullUrl"], f"entry-{i}")
        out.append((r.source_id, r.validated, text))
    return out


@pytest.mark.parametrize(("method", "window", "ahead"), [("default", 32, 16), ("spawn", 32, 16), ("default", 1, 2)])
def test_worker_processes_prepare_the_same_records_as_this_process(tmp_path, monkeypatch, method, window, ahead):
    if method != "default":
        monkeypatch.setattr(pipeline, "START_METHOD", method)
    monkeypatch.setattr(pipeline, "WINDOW", window)
    monkeypatch.setattr(pipeline, "AHEAD", ahead)
    spools = tmp_path / "spools"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    files = _study_files(tmp_path, [f"NCT9000007{i}" for i in range(3)])
    (tmp_path / "bad.json").write_text("{not json")
    files.insert(1, tmp_path / "bad.json")
    here = list(pipeline.prepared_files(MAPPINGS, "ctgov-v2", files, workers=0))
    there = list(pipeline.prepared_files(MAPPINGS, "ctgov-v2", files, workers=2))
    assert [p for p, _ in there] == files
    assert isinstance(there[1][1], PayloadError) and str(there[1][1]) == str(here[1][1])

    for (_, a), (_, b) in zip(here, there, strict=True):
        if not isinstance(a, PayloadError):
            assert _shape(a) == _shape(b) and all(r.validated for r in b)
    assert list(spools.iterdir()) == []  # the workers' result files are gone with the import


def test_when_the_workers_are_behind_this_process_prepares_windows_itself(tmp_path, monkeypatch):
    """A slow worker: the storing process claims queued windows rather than wait, each window is prepared once,
    by one side, and the records still come back complete and in file order."""
    monkeypatch.setattr(pipeline, "START_METHOD", "fork")  # the worker inherits the slowed prepare_file
    monkeypatch.setattr(pipeline, "WINDOW", 1)
    monkeypatch.setattr(pipeline, "AHEAD", 4)
    parent, prepared_here = os.getpid(), []
    real = pipeline.prepare_file

    marks = tmp_path / "prepared-by-workers"
    marks.mkdir()

    def slow_in_workers(mapping, conceptmaps, path):
        if os.getpid() == parent:
            prepared_here.append(path)
        else:
            time.sleep(0.3)
            (marks / path.name).touch()
        return real(mapping, conceptmaps, path)

    monkeypatch.setattr(pipeline, "prepare_file", slow_in_workers)
    files = _study_files(tmp_path, [f"NCT9000008{i}" for i in range(8)])
    out = list(pipeline.prepared_files(MAPPINGS, "ctgov-v2", files, workers=1))
    assert [p for p, _ in out] == files
    assert [recs[0].source_id for _, recs in out] == [f"NCT9000008{i}" for i in range(8)]
    assert all(r.validated for _, recs in out for r in recs)
    by_workers = {p.name for p in marks.iterdir()}
    assert prepared_here and len(set(prepared_here)) == len(prepared_here)
    assert sorted(by_workers | {p.name for p in prepared_here}) == sorted(p.name for p in files)
    assert not by_workers & {p.name for p in prepared_here}  # each window prepared once
    reference = {p: _shape(recs) for p, recs in pipeline.prepared_files(MAPPINGS, "ctgov-v2", files, workers=0)}
    assert all(_shape(recs) == reference[p] for p, recs in out)


def test_a_worker_that_dies_does_not_stop_the_import(tmp_path, monkeypatch, caplog):
    """A worker killed mid-window (out of memory, say): the storing process prepares that window and the rest
    itself, and says so; nothing hangs and no record is lost."""
    monkeypatch.setattr(pipeline, "START_METHOD", "fork")
    monkeypatch.setattr(pipeline, "WINDOW", 1)
    monkeypatch.setattr(pipeline, "AHEAD", 3)
    parent, real = os.getpid(), pipeline.prepare_file

    def dies_on_the_third(mapping, conceptmaps, path):
        if os.getpid() != parent and path.name == "2.json":
            os._exit(9)
        return real(mapping, conceptmaps, path)

    monkeypatch.setattr(pipeline, "prepare_file", dies_on_the_third)
    real_claim = pipeline._claim  # this process never steals a window: the worker must reach the third file
    monkeypatch.setattr(pipeline, "_claim", lambda spool, n: os.getpid() != parent and real_claim(spool, n))
    files = _study_files(tmp_path, [f"NCT9000009{i}" for i in range(6)])
    with caplog.at_level("WARNING", logger="gateway.mapping.pipeline"):
        out = list(pipeline.prepared_files(MAPPINGS, "ctgov-v2", files, workers=1))
    assert [p for p, _ in out] == files
    assert [recs[0].source_id for _, recs in out] == [f"NCT9000009{i}" for i in range(6)]
    assert all(r.ok and r.validated for _, recs in out for r in recs)
    assert "a worker process died" in caplog.text



def test_stopping_early_does_not_wait_for_the_windows_queued_ahead(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "WINDOW", 1)
    files = _study_files(tmp_path, [f"NCT900001{i:02d}" for i in range(40)])
    started = time.monotonic()
    gen = pipeline.prepared_files(MAPPINGS, "ctgov-v2", files, workers=1)
    path, recs = next(gen)
    gen.close()
    assert path == files[0] and recs[0].source_id == "NCT90000100"
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("method", ["default", "spawn"])
def test_a_large_file_is_split_into_parts_that_several_processes_prepare(tmp_path, monkeypatch, method):
    """One JSON array of 30 studies (one not an object) above the size limit: its records come back in parts,
    in order, with their indexes in the file, the same as when one process maps the whole file; an unreadable
    large file is still reported once, as a whole."""
    if method != "default":
        monkeypatch.setattr(pipeline, "START_METHOD", method)
    studies: list = [_variant(f"NCT900002{i:02d}") for i in range(30)]
    studies[7] = "not a study"
    big = tmp_path / "page.json"
    big.write_text(json.dumps(studies))
    bad = tmp_path / "broken.json"
    bad.write_text("[" + json.dumps(studies[0]) * 40)  # large, and not JSON
    small = tmp_path / "one.json"
    small.write_text(json.dumps(_variant("NCT90000300")))
    monkeypatch.setattr(pipeline, "WINDOW_BYTES", big.stat().st_size // 3)
    monkeypatch.setattr(pipeline, "SLICE_BYTES", big.stat().st_size // 6)
    files = [big, bad, small]
    out = list(pipeline.prepared_files(MAPPINGS, "ctgov-v2", files, workers=1))
    whole = dict(pipeline.prepared_files(MAPPINGS, "ctgov-v2", files, workers=0))
    parts = [recs for path, recs in out if path == big]
    assert len(parts) >= 5 and [p for p, _ in out] == [big] * len(parts) + [bad, small]
    records = [r for recs in parts for r in recs]
    assert [r.index for r in records] == list(range(30))
    assert records[7].unreadable and not records[7].ok
    assert [r.source_id for r in records if r.ok] == [f"NCT900002{i:02d}" for i in range(30) if i != 7]
    assert _shape([r for r in records if r.ok]) == _shape([r for r in whole[big] if r.ok])
    assert isinstance(out[-2][1], PayloadError) and str(out[-2][1]) == str(whole[bad])
    assert out[-1][1][0].source_id == "NCT90000300"


def test_concurrent_imports_of_the_same_studies_in_opposite_orders_store_each_once(service, store):
    """Two importers share studies but take them in opposite orders: on PostgreSQL their transactions lock the
    same keys in different orders and may deadlock; the loser's records are retried one by one. Either way
    every study is stored once, and no record is lost or rejected."""
    studies = [_variant(f"NCT900001{i:02d}", f"Study {i}") for i in range(12)]
    orders = [_records(studies), _records(list(reversed(studies)))]
    barrier = threading.Barrier(2)
    outcomes: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = [r.outcome for r in ingest(service, orders[i], per_transaction=4)]
        except BaseException as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(len(o) == 12 and "rejected" not in o for o in outcomes)
    assert sorted(outcomes[0] + outcomes[1]).count("created") == 12  # each study created by exactly one of them
    assert store.count("ResearchStudy") == 12 and store.count("Group") == 12 and store.count("Location") == 36
    _assert_references_resolve(store)
