"""ResearchStudy/$match (patient -> studies) and ResearchStudy/{id}/$candidates (study -> patients): thin views."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import Flask, Response, current_app, g

from gateway.api import operations
from gateway.api.http import base_url, fhir_response, prefer_strict
from gateway.api.params import boolean, first, number, operation_params, whole
from gateway.fhir.errors import Forbidden, InvalidResource, Issue, NotFound, NotSupported, operation_outcome
from gateway.fhir.validate import validate_resource
from gateway.fhir.valuesets import check_code
from gateway.matching import consent as consent_rules
from gateway.matching.consent import ConsentGate
from gateway.matching.engine import MET, NOT_MET, Finding
from gateway.matching.explain import near_miss_outcome, search_element
from gateway.matching.index import DEFAULT_STATUSES, MatchQuery
from gateway.matching.profile import PatientProfile, build_profile, group_by_person, subject_ref
from gateway.matching.state import MatchingState
from gateway.matching.state import matching_state as build_state
from gateway.matching.terms import default_terminology
from gateway.store.clock import now_iso
from gateway.store.interactions import new_id
from gateway.store.profiles import Filter

_EXT_KEY = "gateway.matching"
_BIRTHDATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_INIT_LOCK = threading.Lock()


def init_app(app: Flask) -> None:
    """Register the operations; the study index is built on first use (then refreshed from the change feed). The
    studies' and people's rows are kept by the store's write hooks (gateway.matching.hooks, installed by the
    composition root)."""
    app.extensions[_EXT_KEY] = None


def matching_state() -> MatchingState:
    """The process's indexes (built on first use), brought up to date with the change feed."""
    state = current_app.extensions.get(_EXT_KEY)
    if state is None:
        with _INIT_LOCK:
            state = current_app.extensions.get(_EXT_KEY)
            if state is None:
                state = build_state(current_app.extensions["gateway.store"], default_terminology())
                current_app.extensions[_EXT_KEY] = state
    state.refresh()
    return state


# -- parameters ------------------------------------------------------------------------------------
def _query(params: dict[str, list[object]], default_count: int) -> tuple[MatchQuery, int]:
    statuses = frozenset(str(s) for s in params.get("status") or []) or DEFAULT_STATUSES
    phases = frozenset(str(s) for s in params.get("phase") or [])
    dist = first(params, "maxDistanceKm")
    near = first(params, "includeNearMisses")
    count = first(params, "_count")
    q = MatchQuery(statuses, phases, number(dist, "maxDistanceKm") if dist is not None else None,
                   boolean(near, "includeNearMisses") if near is not None else False,
                   datetime.now(UTC).date())
    limit = min(whole(count, "_count"), current_app.config["SETTINGS"].max_count) if count is not None \
        else default_count
    return q, limit


def _profile_from_bundle(bundle: object, state: MatchingState) -> PatientProfile:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidResource("Parameter bundle must be a Bundle resource", "Parameters.parameter.resource")
    bundle = validate_resource(bundle, "Bundle")
    resources = []
    for e in bundle.get("entry") or []:
        res = e.get("resource")
        if isinstance(res, dict):
            resources.append({**res, "_fullUrl": e["fullUrl"]} if e.get("fullUrl") else res)
    people = group_by_person(resources)
    if len(people) != 1:
        raise InvalidResource(f"The bundle must hold the records of exactly one patient; it holds {len(people)}",
                              "Bundle.entry")
    (key, records), = people.items()
    # Entries with no subject at all are taken to be about the bundle's one patient; entries about
    # someone else (a reference to another Patient) are not.
    records += [r for r in resources if r.get("resourceType") != "Patient" and subject_ref(r) is None]
    return build_profile(records, state.term, key=key)


def _profile_from_patient(ref: object, state: MatchingState) -> PatientProfile:
    text = ref.get("reference") if isinstance(ref, dict) else ref
    if not isinstance(text, str) or not text:
        raise InvalidResource("Parameter patient must reference a stored Patient ('Patient/<id>')", "patient")
    pid = text.rsplit("Patient/", 1)[1].split("/")[0] if "Patient/" in text else text
    key = state.person_for_patient(pid)
    profile = state.patients.get(key) if key is not None else None
    if profile is None:
        current_app.extensions["gateway.store"].read("Patient", pid)  # NotFound / Gone with the right message
        raise NotFound(f"Patient/{pid} is not known to matching", "patient")
    return profile


def _bundle(entries: list[dict], total: int, self_url: str) -> dict:
    return {"resourceType": "Bundle", "id": new_id(), "meta": {"lastUpdated": now_iso()}, "type": "searchset",
            "total": total, "link": [{"relation": "self", "url": self_url}], "entry": entries}


# -- $match ------------------------------------------------------------------------------------------
def match_view(_rtype: str | None, _rid: str | None) -> Response:
    """Parameters (patient | bundle, maxDistanceKm, status, phase, _count, includeNearMisses) -> searchset."""
    state = matching_state()
    with state.lock:
        return _match(state)


def _match(state: MatchingState) -> Response:
    params = operation_params("$match", lists=("status", "phase"), drop_empty=True)
    q, limit = _query(params, current_app.config["SETTINGS"].default_count)
    params, warnings = _applied(params, prefer_strict())
    if params.get("bundle"):
        profile = _profile_from_bundle(params["bundle"][0], state)
    elif params.get("patient-identifier"):  # pulled from the patient's hospital now (gateway.outbound)
        from gateway.api.contact import pulled_bundle

        profile = _profile_from_bundle(pulled_bundle(params), state)
    elif params.get("patient") or params.get("patient-id"):
        profile = _profile_from_patient((params.get("patient") or params.get("patient-id"))[0], state)
    elif any(params.get(name) for name in ANONYMOUS_PARAMS):
        profile = _anonymous_profile(params, state)
    else:
        raise InvalidResource("$match needs a patient (reference), a bundle, patient-id, or an anonymous profile "
                              f"({', '.join(ANONYMOUS_PARAMS)})", "patient")
    offset = _offset(params)
    # every candidate is screened; only the page returned is explained (StudyIndex.page)
    page = state.studies.page(profile, q, offset + limit)
    base = base_url()
    entries = [{"fullUrl": f"{base}/ResearchStudy/{r.study_id}",
                "resource": state.raw["ResearchStudy"][r.study_id],
                "search": search_element(r)} for r in page.matches[offset:]]
    if q.near_misses:
        entries.append({"resource": near_miss_outcome(page.near), "search": {"mode": "outcome"}})
    if warnings:
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    bundle = _bundle(entries, page.total, "")
    bundle["link"] = _page_links(f"{base}/ResearchStudy/$match", params, ("status", "phase", "maxDistanceKm",
                                 "includeNearMisses"), limit, offset, page.total)
    return fhir_response(bundle)


def _applied(params: dict[str, list[object]], strict: bool, known: frozenset[str] | None = None,
             what: str = "$match") -> tuple[dict[str, list[object]], list[Issue]]:
    """What $match applies, as search does it (issue #14): a parameter $match does not know, or a status that is
    not an R4 ResearchStudy.status code, is never dropped silently. Lenient: a warning (saying what to use
    instead: status=active) and it stays out of the links; ``Prefer: handling=strict``: 400. A status that no
    study can have is still applied (it matches nothing), so leaving it out of the query never widens the
    result. -> (the parameters the links may carry, the warnings)."""
    known = MATCH_PARAMS if known is None else known
    kept, warnings = dict(params), []
    for name in params:
        if name not in known:
            msg = (f"Parameter '{name}' is not a {what} parameter and was not applied (known: "
                   f"{', '.join(sorted(known))})")
            if strict:
                raise NotSupported(msg, name)
            warnings.append(Issue("not-supported", msg, [name], severity="warning"))
            del kept[name]
    statuses = [str(s) for s in params.get("status") or []]
    problems = [m for m in (check_code("ResearchStudy", "status", s) for s in statuses) if m]
    if problems:
        if strict:
            raise InvalidResource("; ".join(problems), "status",
                                  issues=[Issue("code-invalid", m, ["status"]) for m in problems])
        warnings += [Issue("code-invalid", m, ["status"], severity="warning") for m in problems]
        kept["status"] = [s for s in statuses if check_code("ResearchStudy", "status", s) is None]
        if not kept["status"]:
            warnings.append(Issue("code-invalid", "status matches no ResearchStudy; no results are returned for it",
                                  ["status"], severity="warning"))
    return kept, warnings


# -- anonymous profile and paging ------------------------------------------------------------------------
# $match for someone whose record the gateway does not hold: nothing is stored, nothing is echoed into links.
ANONYMOUS_PARAMS = ("age", "birthdate", "gender", "postcode", "condition-text")
MATCH_PARAMS = frozenset({"patient", "patient-id", "patient-identifier", "hospital", "bundle", "status", "phase",
                          "maxDistanceKm", "includeNearMisses", "_count", "_offset", *ANONYMOUS_PARAMS})
_GENDERS = frozenset({"male", "female", "other", "unknown"})


def _anonymous_profile(params: dict[str, list[object]], state: MatchingState) -> PatientProfile:
    """age (whole years) or birthdate (YYYY[-MM[-DD]]), gender, postcode (UK, or its district), condition-text
    (repeatable: words, resolved through the terminology) -> a profile of a person nobody stored."""
    from gateway.matching import geo

    patient: dict = {"resourceType": "Patient", "id": "anonymous"}
    age, birth = (params.get("age") or [None])[0], (params.get("birthdate") or [None])[0]
    if age is not None and birth is not None:
        raise InvalidResource("Give age or birthdate, not both", "age")
    today = datetime.now(UTC).date()
    if age is not None:
        years = whole(age, "age")
        if years > 130:
            raise InvalidResource("age must be at most 130 (years)", "age")
        born = today.replace(year=today.year - years, day=28 if (today.month, today.day) == (2, 29) else today.day)
        patient["birthDate"] = born.isoformat()
    elif birth is not None:
        if not isinstance(birth, str) or not _BIRTHDATE.match(birth) or birth[:10] > today.isoformat():
            raise InvalidResource("birthdate must be a past date YYYY, YYYY-MM or YYYY-MM-DD", "birthdate")
        patient["birthDate"] = birth
    gender = (params.get("gender") or [None])[0]
    if gender is not None:
        if gender not in _GENDERS:
            raise InvalidResource("gender must be male, female, other or unknown (administrative-gender)", "gender")
        patient["gender"] = gender
    postcode = (params.get("postcode") or [None])[0]
    if postcode is not None:
        if not isinstance(postcode, str) or geo.postcode_position(postcode) is None:
            raise InvalidResource("postcode is not a known UK postcode or postcode district (e.g. 'LS6 3HE' or "
                                  "'LS6')", "postcode")  # the value is never repeated
        patient["address"] = [{"postalCode": postcode}]
    records: list[dict] = [patient]
    for i, words in enumerate(params.get("condition-text") or []):
        if not isinstance(words, str) or not words.strip():
            raise InvalidResource("condition-text must be words naming a condition", "condition-text")
        records.append({"resourceType": "Condition", "id": f"anonymous-{i}", "subject": {"reference":
                        "Patient/anonymous"}, "code": {"text": words},
                        "clinicalStatus": {"coding": [{"code": "active"}]},
                        "verificationStatus": {"coding": [{"code": "confirmed"}]}})
    return build_profile(records, state.term, key="anonymous")


def _offset(params: dict[str, list[object]]) -> int:
    raw = first(params, "_offset")
    return whole(raw, "_offset") if raw is not None else 0


def _page_links(url: str, params: dict[str, list[object]], keep: tuple[str, ...], count: int, offset: int,
                total: int) -> list[dict]:
    """self (and next / previous) links carrying the parameters that are not about a person, with _count and
    _offset. A POSTed profile is not in them: POST the same Parameters to the next link for the next page."""
    kept = [(k, str(v)) for k in keep for v in params.get(k) or []]

    def link(relation: str, at: int) -> dict:
        return {"relation": relation, "url": f"{url}?{urlencode([*kept, ('_count', count), ('_offset', at)])}"}

    links = [link("self", offset)]
    if count and offset + count < total:
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    return links


# -- $candidates ---------------------------------------------------------------------------------------
CANDIDATES_PARAMS = frozenset({"consent", "maxDistanceKm", "_count", "_offset", "_after", "_total"})
_GATE_KEY = "gateway.consent_gate"


def consent_gate() -> ConsentGate:
    """The deployment's consent gate (legal bases, national data opt-out), the one the automatic flows apply."""
    gate = current_app.extensions.get(_GATE_KEY)
    if gate is None:
        gate = current_app.extensions["gateway.root"].policy()  # the composition root builds the flows' gate too
        current_app.extensions[_GATE_KEY] = gate
    return gate


def _cursor(raw: str | None) -> tuple | None:
    """``_after`` of a next link: score,coverage,distance,rank (no person identifier is ever in a link)."""
    if not raw:
        return None
    parts = raw.split(",")
    try:
        score, coverage, dist, rank = float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3])
    except (ValueError, IndexError):
        raise InvalidResource("_after must be the value of a next link (score,coverage,distance,rank)",
                              "_after") from None
    if len(parts) != 4 or rank < 0:
        raise InvalidResource("_after must be the value of a next link (score,coverage,distance,rank)", "_after")
    return score, coverage, dist, rank


def candidates_view(_rtype: str | None, rid: str | None) -> Response:
    """GET ResearchStudy/{id}/$candidates[?consent=any][&_count=][&maxDistanceKm=][&_after=][&_total=] -> searchset."""
    state = matching_state()
    with state.lock:
        sc = state.studies.studies.get(rid or "")
        study = state.raw["ResearchStudy"].get(rid or "")
    return _candidates(state, rid, sc, study)


def _candidates(state: MatchingState, rid: str | None, sc, study: dict | None) -> Response:
    params, warnings = _applied(operation_params("$candidates"), prefer_strict(), CANDIDATES_PARAMS, "$candidates")
    consent = first(params, "consent")
    consent_mode = "required" if consent is None else consent
    if consent_mode not in ("required", "any"):
        raise InvalidResource("consent must be 'required' (the default) or 'any'", "consent")
    if consent_mode == "any" and not g.caller.is_admin:
        raise Forbidden("consent=any is for administrators only", "consent")
    if sc is None or study is None:
        current_app.extensions["gateway.store"].read("ResearchStudy", rid or "")
        raise NotFound(f"ResearchStudy/{rid} is not known to matching", "ResearchStudy.id")
    dist = first(params, "maxDistanceKm")
    q = MatchQuery(frozenset({sc.status}), frozenset(), number(dist, "maxDistanceKm") if dist else None,
                   False, datetime.now(UTC).date())
    count = first(params, "_count")
    limit = min(whole(count, "_count"), current_app.config["SETTINGS"].max_count) if count \
        else current_app.config["SETTINGS"].default_count
    after = _cursor(first(params, "_after"))
    offset = whole(first(params, "_offset"), "_offset") if first(params, "_offset") and after is None else 0
    # Bundle.total (FHIR _total): exact when the page screened every candidate anyway, otherwise left out (a broad
    # study stops screening after its page); _total=accurate screens them all to count them
    total_mode = str(first(params, "_total") or "estimate")
    if total_mode not in ("none", "estimate", "accurate"):
        raise InvalidResource("_total must be none, estimate or accurate", "_total")
    now = datetime.now(UTC)
    gate = consent_gate()
    decisions: dict[str, consent_rules.Decision] = {}

    def allowed(p: PatientProfile) -> bool:
        # the automatic flows' rule: HRESCH consent, or a legal basis for this study without the opt-out
        d = gate.may_propose(study, p.consents, p.nhs_number, now)
        decisions[p.key] = d
        return d.allowed or consent_mode == "any"

    # the database returns only who may be proposed (consent state, or an NHS number under a legal basis) and
    # whose codes, sex and age the study admits; those are screened, and only the page returned is explained
    rows = Filter(any_consent=True) if consent_mode == "any" else \
        Filter(research=True, nhs=gate.basis_for(study) is not None)
    page, total, cursor = state.patients.page(sc, q, rows, allowed, offset + limit, after,
                                              count=total_mode == "accurate")
    base = base_url()
    store = current_app.extensions["gateway.store"]
    shown = page[offset:]
    patients = {st.id: st.resource() for st in store.read_many([("Patient", p.patient_ids[0]) for _, p in shown])}
    entries = []
    for r, p in shown:
        d = decisions[p.key]
        extra = [Finding("Consent", MET if d.allowed else NOT_MET,
                         d.reason if d.allowed else f"{d.reason} (listed because consent=any)")]
        pid = p.patient_ids[0]
        entries.append({"fullUrl": f"{base}/Patient/{pid}", "resource": patients[pid],
                        "search": search_element(r, extra, audience="team")})
    if warnings:
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    bundle = _bundle(entries, total, "")
    if total is None or total_mode == "none":
        del bundle["total"]
    url = f"{base}/ResearchStudy/{rid}/$candidates"
    kept = [(k, v) for k in ("consent", "maxDistanceKm", "_total") for v in params.get(k) or []]
    self_args = [*kept, ("_count", limit)]
    if after is not None:
        self_args.append(("_after", first(params, "_after")))
    elif offset:
        self_args.append(("_offset", offset))
    bundle["link"] = [{"relation": "self", "url": f"{url}?{urlencode(self_args)}"}]
    if cursor is not None:
        score, coverage, d_km, rank = cursor
        token = f"{score!r},{coverage!r},{d_km!r},{rank}"
        bundle["link"].append({"relation": "next",
                               "url": f"{url}?{urlencode([*kept, ('_count', limit), ('_after', token)])}"})
    return fhir_response(bundle)


operations.register(operations.Operation("match", "ResearchStudy", False, match_view, ("POST", "GET"),
                                         "https://trialgateway.org/fhir/OperationDefinition/ResearchStudy-match"))
operations.register(operations.Operation("candidates", "ResearchStudy", True, candidates_view, ("GET",),
                                         "https://trialgateway.org/fhir/OperationDefinition/ResearchStudy-candidates"))
