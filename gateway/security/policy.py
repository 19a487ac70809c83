"""Who may touch what: the one authorization policy every endpoint goes through.

``Access(caller, store)`` is built once per request. Views call ``check`` before an interaction,
``prepare_write`` on content they are about to store, ``can_see``/``filter`` on everything they are about
to return (search, _include, history, transaction entries, operation results), and the store runs
``write_hook`` inside each write transaction to check the version being replaced and the references
of the new content. A denial raises ``Forbidden`` (403) or, for a resource the caller may not know
of, ``NotFound`` (404).

Ownership: every resource a hospital or sponsor writes carries ``meta.tag`` {system TENANT_TAG, code =
its tenant (ODS code or sponsor organisation identifier)}; the gateway stamps it and replaces any tag
the caller sent. A person's data is whatever references their Patient resources (all Patients with
the NHS number the patient app's token carries).
"""

from __future__ import annotations

import contextvars
import re
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import orjson
from sqlalchemy import select

from gateway.fhir.conventions import NHS_NUMBER, TENANT_TAG
from gateway.fhir.errors import FhirError, Forbidden, InvalidResource, NotFound
from gateway.fhir.interaction import Interaction
from gateway.fhir.search import SearchQuery, parse_search
from gateway.fhir.search_params import normalise_reference, params_for
from gateway.security.principal import Caller
from gateway.security.scopes import allows
from gateway.store import schema
from gateway.store.repo import Store, Stored, Tx, WriteResult

# interaction -> SMART permission letter
PERMISSION = {"read": "r", "vread": "r", "history-instance": "r", "search": "s", "history-type": "s",
              "create": "c", "update": "u", "delete": "d", "operation": "r"}

STUDY_TYPES = frozenset({"ResearchStudy", "Group", "Location", "PlanDefinition"})
# Reference data any authenticated caller may read; written by administrators (and, for Organization,
# by the organisation itself).
SHARED_TYPES = frozenset({"CodeSystem", "ConceptMap", "ValueSet", "NamingSystem", "Organization", "Medication",
                          "SearchParameter", "StructureDefinition", "OperationDefinition", "CapabilityStatement",
                          "Substance", "Questionnaire", "Library"})
ADMIN_TYPES = frozenset({"AuditEvent", "Provenance", "Basic", "Parameters", "Binary", "Endpoint"})
PATIENT_APP_WRITES = frozenset({"ResearchSubject", "Consent", "Subscription"})
PRIVATE_STUDY_STATUSES = frozenset({"in-review", "disapproved", "withdrawn"})

# Operations: (type or None, name) -> roles that may invoke them (administrators always may).
# Unknown operations are for administrators only until listed here.
OPERATION_ROLES: dict[tuple[str | None, str], frozenset[str]] = {
    ("ResearchStudy", "match"): frozenset({"hospital", "patient-app", "research-team"}),
    ("ResearchStudy", "candidates"): frozenset({"research-team"}),
    ("ConceptMap", "translate"): frozenset({"sponsor", "hospital", "research-team", "patient-app"}),
    ("CodeSystem", "subsumes"): frozenset({"sponsor", "hospital", "research-team", "patient-app"}),
    ("CodeSystem", "lookup"): frozenset({"sponsor", "hospital", "research-team", "patient-app"}),
    ("CodeSystem", "validate-code"): frozenset({"sponsor", "hospital", "research-team", "patient-app"}),
    ("ValueSet", "expand"): frozenset({"sponsor", "hospital", "research-team", "patient-app"}),
    ("Subscription", "status"): frozenset({"sponsor", "hospital", "research-team", "patient-app"}),
}

_ID = r"[A-Za-z0-9\-.]{1,64}"
_PATIENT_IN_TEXT = re.compile(rf"(?:^|[=,/?&\s])Patient/({_ID})(?![A-Za-z0-9\-.])")

PEOPLE_CACHE_SECONDS = 30.0
# store -> NHS number -> (expires, people); weak keys so a closed store's entries go with it.
_PEOPLE_CACHE: weakref.WeakKeyDictionary[Store, dict[str, tuple[float, frozenset[str]]]] = \
    weakref.WeakKeyDictionary()

# A chained search follows only the targets its caller may read (Access.limit_chains): at most this many
# candidate targets are read and checked per chain; a broader chain is refused (400 too-costly).
CHAIN_SCAN_LIMIT = 5000
_CHAIN_BATCH = 500


class TooCostly(FhirError):
    """A search too broad to authorise target by target (400, issue code too-costly)."""

    code = "too-costly"

current_access: contextvars.ContextVar[Access | None] = contextvars.ContextVar("gateway_access", default=None)


def register_operation(resource_type: str | None, name: str, roles: Iterable[str]) -> None:
    """Let roles other than admin invoke ``[Type/]$name`` (instance checks stay with ``check_operation``)."""
    OPERATION_ROLES[(resource_type, name)] = frozenset(roles)


def tenant_of(resource: dict | None) -> str | None:
    """The tenant tag's code: {'meta': {'tag': [{'system': TENANT_TAG, 'code': 'RR8'}]}} -> 'RR8'."""
    meta = (resource or {}).get("meta")
    if isinstance(meta, dict):
        for tag in meta.get("tag") or []:
            if isinstance(tag, dict) and tag.get("system") == TENANT_TAG:
                return tag.get("code")
    return None


def patient_refs(resource: dict | None) -> set[str]:
    """The people a resource is about: 'Patient/<id>' and 'nhs:<number>' keys.

    A Patient is about itself; other resources about every Patient they reference (by reference or by
    NHS-number identifier); a Subscription also about Patients named in its filter criteria strings.
    """
    if not resource:
        return set()
    out: set[str] = set()
    rtype = resource.get("resourceType")
    if rtype == "Patient" and resource.get("id"):
        out.add(f"Patient/{resource['id']}")
    scan_text = rtype == "Subscription"

    def walk(node: object, key: str | None) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str):
                norm = normalise_reference(ref)
                if norm.startswith("Patient/"):
                    out.add(norm)
            ident = node.get("identifier")
            if isinstance(ident, dict) and ident.get("system") == NHS_NUMBER and key not in (None, "identifier") \
                    and isinstance(ident.get("value"), str):
                out.add(f"nhs:{ident['value']}")
            for k, v in node.items():
                if k not in ("contained", "reference"):
                    walk(v, k)
        elif isinstance(node, list):
            for x in node:
                walk(x, key)
        elif scan_text and isinstance(node, str) and "Patient/" in node:
            out.update(f"Patient/{m}" for m in _PATIENT_IN_TEXT.findall(node))

    for k, v in resource.items():
        if k not in ("contained", "meta", "id", "resourceType"):
            walk(v, k)
    return out


def stamp_tenant(resource: dict, tenant: str | None) -> dict:
    """Replace every tenant tag with ours (or none): callers cannot claim another organisation's data."""
    raw = resource.get("meta")
    if raw is not None and not (isinstance(raw, dict) and isinstance(raw.get("tag", []), list)):
        return resource  # malformed meta: validation refuses the body with 400 before anything is stored
    meta = dict(raw or {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == TENANT_TAG)]
    if tenant:
        tags.append({"system": TENANT_TAG, "code": tenant})
    if tags:
        meta["tag"] = tags
    else:
        meta.pop("tag", None)
    if meta:
        resource["meta"] = meta
    else:
        resource.pop("meta", None)
    return resource


def kind_of(rtype: str, resource: dict | None = None) -> str:
    """study | shared | admin | subscription | patient (everything else: a person's data)."""
    if rtype == "Group" and resource is not None and resource.get("actual") is True:
        return "patient"  # a Group with members lists people
    if rtype in STUDY_TYPES:
        return "study"
    if rtype in SHARED_TYPES:
        return "shared"
    if rtype in ADMIN_TYPES:
        return "admin"
    if rtype == "Subscription":
        return "subscription"
    return "patient"


@dataclass
class Access:
    """One caller's view of the store for the length of one request (lookups cached)."""

    caller: Caller
    store: Store
    touched: set[str] = field(default_factory=set)  # 'Type/id' of patient data read or written (for audit)
    people: set[str] = field(default_factory=set)  # 'Patient/id' involved (for audit)
    _own_people: set[str] | None = None
    _owner: dict[str, str | None] = field(default_factory=dict)  # 'Patient/id' -> tenant tag (None: unknown)
    _nhs_owned: dict[str, bool] = field(default_factory=dict)
    _own_studies: set[str] | None = None

    @property
    def role(self) -> str:
        return self.caller.role

    # -- coarse checks -------------------------------------------------------------------------
    def check(self, interaction: str, rtype: str) -> None:
        """Scope and role allow ``interaction`` on ``rtype`` at all? Forbidden otherwise."""
        perm = PERMISSION[interaction]
        if not allows(self.caller.scopes, rtype, perm):
            raise Forbidden(f"The token's scopes do not allow '{perm}' on {rtype} (need e.g. "
                            f"{'patient' if self.role == 'patient-app' else 'system'}/{rtype}.{perm})", rtype)
        if self.caller.is_admin:
            return
        kind = kind_of(rtype)
        writing = perm in "cud"
        ok: bool
        if kind == "admin":
            ok = False
        elif kind == "shared":
            ok = not writing or (rtype == "Organization" and self.role in ("hospital", "sponsor"))
        elif kind == "study":
            ok = not writing or self.role == "sponsor"
        elif kind == "subscription":
            ok = self.role in ("patient-app", "hospital", "research-team", "sponsor")
        else:  # a person's data
            if self.role == "hospital":
                ok = True
            elif self.role == "patient-app":
                ok = not writing or rtype in PATIENT_APP_WRITES
            elif self.role == "research-team":
                ok = rtype == "ResearchSubject" and perm in "rsu"
            else:
                ok = False
        if not ok:
            raise Forbidden(f"A {self.role} client may not {interaction} {rtype}", rtype)

    def check_write(self, interaction: str, url_type: str, resource: object, where: str | None = None) -> str:
        """create/update: the type written is the body's ``resourceType``; it must be the URL's type, and the
        scopes and role are checked against it (one place decides, for REST writes and Bundle entries alike).

        check_write("create", "ResearchStudy", {"resourceType": "Location"}) -> InvalidResource (400).
        A body without a usable resourceType is refused by the view before anything is written.
        """
        written = resource.get("resourceType") if isinstance(resource, dict) else None
        if isinstance(written, str) and written != url_type:
            raise InvalidResource(f"resourceType '{written}' does not match the type '{url_type}' in the URL",
                                  where or f"{url_type}.resourceType")
        self.check(interaction, url_type)
        return url_type

    def check_interaction(self, it: Interaction, body: object = None, where: str | None = None) -> None:
        """A REST interaction (``gateway.fhir.interaction.parse_interaction``) checked for this caller, the same
        whether it comes as a request or as a Bundle entry: a create or update sent with a body by the type it
        writes (``check_write``), history by its own rule, everything else by scope and role. Operations (with
        their parameters, ``check_operation``) and transactions (entry by entry) are checked by their callers.
        """
        if it.name in ("history-system", "history-type"):
            self.check_history(it.rtype)
        elif it.name in ("create", "update") and it.method in ("POST", "PUT") and it.rtype is not None:
            self.check_write(it.name, it.rtype, body, where)
        elif it.name in PERMISSION and it.name != "operation" and it.rtype is not None:
            self.check(it.name, it.rtype)
        else:  # a programming error: an interaction must never pass unchecked
            raise ValueError(f"check_interaction cannot decide {it.name!r} on {it.rtype!r}")

    def check_existing(self, rtype: str, rid: str, current: Stored | None, *, named: bool = True) -> None:
        """Before any version check (If-Match): may the caller change the resource it is about to update or
        delete? One it may not see is NotFound, answered like a missing one; one it sees but does not own is
        Forbidden. ``named``: the caller named the id itself (False for a conditional search's match, whose
        id is then not echoed)."""
        if self.caller.is_admin or current is None or current.deleted or not current.content:
            return
        prior = current.resource()
        if not self.can_see(prior):
            what = f"{rtype}/{rid}" if named else f"The {rtype} this conditional request matched"
            raise NotFound(f"{what} is not known", f"{rtype}.id")
        self.check_prior(prior, rtype, rid if named else "(matched)")

    def check_history(self, rtype: str | None) -> None:
        """System history is for administrators; type history needs search permission on the type."""
        if rtype is None:
            if not self.caller.is_admin:
                raise Forbidden("System-wide history is for administrators", "_history")
            return
        self.check("history-type", rtype)

    def check_operation(self, rtype: str | None, name: str, rid: str | None, referenced: Iterable[str] = ()) -> None:
        """May the caller invoke ``$name`` (on ``rid``), with these Patient references among its parameters?"""
        if not self.caller.is_admin:
            roles = OPERATION_ROLES.get((rtype, name), frozenset())
            if self.role not in roles:
                raise Forbidden(f"A {self.role} client may not invoke ${name}", f"${name}")
            if rtype is not None and not allows(self.caller.scopes, rtype, "r") \
                    and not allows(self.caller.scopes, rtype, "s"):
                raise Forbidden(f"The token's scopes do not allow ${name} on {rtype}", f"${name}")
            if rtype == "ResearchStudy" and name == "candidates" and rid is not None \
                    and rid not in self.own_study_ids():
                raise Forbidden(f"ResearchStudy/{rid} is not one of this research team's studies", f"${name}")
            if rid is not None and rtype is not None:
                st = self._read_or_none(rtype, rid)
                if st is not None and not self.can_see(st.resource()):
                    raise NotFound(f"{rtype}/{rid} is not known", f"{rtype}.id")
        for ref in referenced:
            if not self._may_see_person(ref):
                raise Forbidden(f"The operation's parameters name {_safe(ref)}, whom this client may not act for",
                                f"${name}")
            self.people.add(ref)

    # -- what a caller may see -----------------------------------------------------------------
    def can_see(self, resource: dict | None) -> bool:
        """Visible to this caller? (None, a deleted version, is visible to administrators only.)"""
        if self.caller.is_admin:
            return True
        if not resource:
            return False
        rtype = resource.get("resourceType", "")
        kind = kind_of(rtype, resource)
        if kind == "admin":
            return False
        if kind == "shared":
            return True
        if kind == "study":
            if rtype == "ResearchStudy":
                return (self.caller.tenant is not None and tenant_of(resource) == self.caller.tenant) or \
                    resource.get("status") not in PRIVATE_STUDY_STATUSES
            return True
        if kind == "subscription":
            if self.role == "patient-app":
                return self._about_own_person(resource)
            return self.caller.tenant is not None and tenant_of(resource) == self.caller.tenant
        return self._may_see_person_data(resource)

    def _may_see_person_data(self, resource: dict) -> bool:
        role = self.role
        if role == "hospital":
            if self.caller.tenant is not None and tenant_of(resource) == self.caller.tenant:
                return True
            refs = patient_refs(resource)
            return bool(refs) and all(self._hospital_owns(r) for r in refs)
        if role == "patient-app":
            return self._about_own_person(resource)
        if role == "research-team":
            if resource.get("resourceType") != "ResearchSubject":
                return False
            study = ((resource.get("study") or {}).get("reference") or "")
            return normalise_reference(study).removeprefix("ResearchStudy/") in self.own_study_ids()
        return False

    def _about_own_person(self, resource: dict) -> bool:
        refs = patient_refs(resource)
        own = self.own_people()
        return bool(refs) and refs <= own

    def _may_see_person(self, ref: str) -> bool:
        if self.caller.is_admin:
            return True
        if self.role == "patient-app":
            return ref in self.own_people()
        if self.role == "hospital":
            return self._hospital_owns(ref)
        return False

    def filter(self, rows: Iterable[Stored]) -> list[Stored]:
        """Keep what the caller may see; note the people and patient data returned (for the audit trail)."""
        out = []
        for st in rows:
            res = st.resource() if st.content else None
            if self.can_see(res):
                out.append(st)
                self.note(st.type, st.id, res)
        return out

    def note(self, rtype: str, rid: str, resource: dict | None) -> None:
        if kind_of(rtype, resource) in ("patient", "subscription"):
            self.touched.add(f"{rtype}/{rid}")
            self.people.update(r for r in patient_refs(resource) if r.startswith("Patient/"))

    def exact_totals(self, rtype: str | None) -> bool:
        """Can a search total be shown? Only when the query itself was narrowed to what the caller sees."""
        if self.caller.is_admin or rtype is None:
            return self.caller.is_admin
        kind = kind_of(rtype)
        if kind == "shared" or (kind == "study" and rtype not in ("ResearchStudy", "Group")):
            return True  # a Group may list people (actual=true): its totals would count hidden member lists
        return self.role == "patient-app" and self._narrowable(rtype)

    # -- search narrowing ----------------------------------------------------------------------
    def _narrowable(self, rtype: str) -> bool:
        return rtype == "Patient" or "patient" in params_for(rtype)

    def narrow_search(self, rtype: str, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """A patient app's search is narrowed to its person in the query itself (so totals stay exact)."""
        if self.role != "patient-app" or kind_of(rtype) != "patient" or not self._narrowable(rtype):
            return items
        ids = sorted(r.removeprefix("Patient/") for r in self.own_people() if r.startswith("Patient/"))
        ids = ids or ["-none-"]
        if rtype == "Patient":
            return [*items, ("_id", ",".join(ids))]
        return [*items, ("patient", ",".join(f"Patient/{i}" for i in ids))]

    def _may_hide(self, rtype: str) -> bool:
        """Could ``can_see`` refuse this caller some resource of ``rtype``? (Reference data: never.)"""
        if self.caller.is_admin:
            return False
        kind = kind_of(rtype)
        return not (kind == "shared" or (kind == "study" and rtype not in ("ResearchStudy", "Group")))

    def limit_chains(self, query: SearchQuery) -> None:
        """Make each chained criterion of ``query`` follow only targets this caller may read (``can_see``), in
        place, before the query runs: results and ``total`` are then those of a store without the unreadable
        targets, so a chain (``Observation?subject.identifier=<NHS number>``) cannot probe another tenant's
        records. Refuses (400) a chain whose criterion matches more than CHAIN_SCAN_LIMIT targets."""
        for i, crit in enumerate(query.criteria):
            chain = crit.chain
            if chain is None or crit.match_nothing or chain.allowed is not None:
                continue
            if not any(self._may_hide(t) for t in chain.targets):
                continue
            allowed: list[str] = []
            for t in chain.targets:
                scanned, after = 0, 0
                while True:
                    batch = self.store.chain_targets(t, chain.criterion, _CHAIN_BATCH, after)
                    scanned += len(batch)
                    if scanned > CHAIN_SCAN_LIMIT:
                        raise TooCostly(f"The chained parameter '{crit.name}.{chain.criterion.name}' matches more "
                                        f"than {CHAIN_SCAN_LIMIT} {t} resources; add criteria to narrow it",
                                        crit.name)
                    for st in batch:
                        res = st.resource() if st.content else None
                        if st.type == "Patient" and res is not None:  # its owner is known: no read per Patient
                            self._owner.setdefault(f"Patient/{st.id}", tenant_of(res))
                        if self.can_see(res):
                            allowed.append(f"{st.type}/{st.id}")
                    if len(batch) < _CHAIN_BATCH:
                        break
                    after = batch[-1].pk
            query.criteria[i] = replace(crit, chain=replace(chain, allowed=tuple(allowed)))

    # -- writes --------------------------------------------------------------------------------
    def prepare_write(self, rtype: str, resource: dict) -> dict:
        """Check new content before it is stored and stamp the caller's tenant on it (in place)."""
        if self.caller.is_admin:
            return resource
        if self.role in ("hospital", "sponsor") or self.role == "research-team" and self.caller.tenant:
            stamp_tenant(resource, self.caller.tenant)
        else:
            stamp_tenant(resource, None)
        return resource

    def prepare_body(self, body: object) -> object:
        """The one tenant stamp of a written body: a resource, or each resource of a Bundle's entries (in place)."""
        if not isinstance(body, dict):
            return body
        if body.get("resourceType") == "Bundle":
            for entry in body.get("entry") or []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict) and isinstance(res.get("resourceType"), str):
                    self.prepare_write(res["resourceType"], res)
        elif isinstance(body.get("resourceType"), str):
            self.prepare_write(body["resourceType"], body)
        return body

    def check_new_content(self, resource: dict, lookup: Tx | None = None) -> None:
        """After references are resolved: the content names only people this caller may act for."""
        if self.caller.is_admin:
            return
        rtype = resource.get("resourceType", "")
        kind = kind_of(rtype, resource)
        refs = patient_refs(resource)
        expected_tag = self.caller.tenant if self.role in ("hospital", "sponsor", "research-team") else None
        if tenant_of(resource) != expected_tag and tenant_of(resource) is not None:
            raise Forbidden(f"{rtype} carries another organisation's tenant tag", f"{rtype}.meta.tag")
        if self.role == "patient-app":
            if kind in ("patient", "subscription") and not (refs and refs <= self.own_people()):
                raise Forbidden(f"A patient app may only write {rtype} about its own person", rtype)
        elif self.role == "hospital":
            for r in refs:
                if r == f"Patient/{resource.get('id')}" and rtype == "Patient":
                    continue
                if not self._hospital_owns(r, lookup):
                    raise Forbidden(f"{rtype} names {_safe(r)}, who is not a patient of {self.caller.tenant}", rtype)
        elif self.role == "research-team":
            if rtype == "ResearchSubject" and not self._may_see_person_data(resource):
                raise Forbidden("A research team may only write ResearchSubjects of its own studies", rtype)
        elif refs:
            raise Forbidden(f"A {self.role} client may not write data about people", rtype)
        self.people.update(r for r in refs if r.startswith("Patient/"))

    def check_prior(self, prior: dict | None, rtype: str, rid: str) -> None:
        """The version being replaced or deleted must be the caller's to change."""
        if self.caller.is_admin or prior is None:
            return
        kind = kind_of(rtype, prior)
        own_tag = self.caller.tenant is not None and tenant_of(prior) == self.caller.tenant
        if kind in ("study", "shared"):
            ok = own_tag
        elif kind == "subscription":
            ok = self.can_see(prior)
        elif self.role == "hospital":
            ok = own_tag or (rtype in ("ResearchSubject", "Consent") and self.can_see(prior))
        else:
            ok = self.can_see(prior)
        if not ok:
            raise Forbidden(f"{rtype}/{rid} belongs to another organisation or person", f"{rtype}.id")

    def write_hook(self, tx: Tx, result: WriteResult, resource: dict) -> None:
        if self.caller.is_admin:
            return  # administrators may write anything: no lookups, no early flush of the transaction
        st = result.stored
        prior_version = st.version - 1
        if prior_version >= 1 and result.outcome != "unchanged":
            # The version replaced: written earlier in this transaction (still buffered) or already stored.
            # Looked up without flushing, so the other hooks see the transaction as the store left it.
            buffered = [p for p in tx.pending.versions if p["res_pk"] == st.pk and p["version"] == prior_version]
            if buffered:
                content = buffered[-1]["content"]
            else:
                v = schema.resource_versions
                row = tx.conn.execute(select(v.c.content).where(v.c.res_pk == st.pk, v.c.version == prior_version)
                                      ).first()
                content = row[0] if row else None
            self.check_prior(_loads(content) if content else None, st.type, st.id)
        if resource:
            self.check_new_content({**resource, "id": st.id}, tx)
        self.note(st.type, st.id, {**resource, "id": st.id} if resource else None)

    # -- lookups -------------------------------------------------------------------------------
    def own_people(self) -> set[str]:
        """Patient app: 'Patient/<id>' for every Patient with its NHS number, and 'nhs:<number>'.

        Cached for PEOPLE_CACHE_SECONDS per store and NHS number: a Patient record added meanwhile becomes
        visible to the app a little later (never the other way round: erased records have no content).
        """
        if self._own_people is None:
            own: set[str] = set()
            nhs = self.caller.nhs_number
            if nhs:
                per_store = _PEOPLE_CACHE.setdefault(self.store, {})
                hit = per_store.get(nhs)
                now = time.monotonic()
                if hit is not None and hit[0] > now:
                    own = set(hit[1])
                else:
                    own.add(f"nhs:{nhs}")
                    q = parse_search("Patient", [("identifier", f"{NHS_NUMBER}|{nhs}")], default_count=1000)
                    own.update(f"Patient/{i}" for i in self.store.search_ids(q, limit=1000))
                    if len(per_store) > 10_000:
                        per_store.clear()
                    per_store[nhs] = (now + PEOPLE_CACHE_SECONDS, frozenset(own))
            self._own_people = own
        return self._own_people

    def own_study_ids(self) -> set[str]:
        if self._own_studies is None:
            ids: set[str] = set()
            if self.caller.studies:
                q = parse_search("ResearchStudy", [("identifier", ",".join(sorted(self.caller.studies)))],
                                 default_count=1000)
                ids.update(self.store.search_ids(q, limit=1000))
            self._own_studies = ids
        return self._own_studies

    def _hospital_owns(self, ref: str, tx: Tx | None = None) -> bool:
        tenant = self.caller.tenant
        if tenant is None:
            return False
        if ref.startswith("nhs:"):
            if ref not in self._nhs_owned:
                q = parse_search("Patient", [("identifier", f"{NHS_NUMBER}|{ref[4:]}")], default_count=100)
                ids = self.store.search_ids(q, limit=100)
                self._nhs_owned[ref] = any(self._hospital_owns(f"Patient/{i}", tx) for i in ids)
            return self._nhs_owned[ref]
        if ref not in self._owner or tx is not None:
            rid = ref.removeprefix("Patient/")
            if tx is not None:
                # Inside the write transaction (sees a Patient created earlier in it); no flush, no row lock.
                r = schema.resources
                row = tx.conn.execute(select(r.c.content).where(r.c.type == "Patient", r.c.id == rid,
                                                                r.c.deleted.is_(False))).first()
                content = _loads(row[0]) if row and row[0] else None
            else:
                st = self._read_or_none("Patient", rid)
                content = st.resource() if st else None
            self._owner[ref] = tenant_of(content)
        return self._owner[ref] == tenant

    def _read_or_none(self, rtype: str, rid: str) -> Stored | None:
        rows = self.store.read_many([(rtype, rid)])
        return rows[0] if rows else None


def _loads(text: str) -> dict:
    return orjson.loads(text)


def _safe(ref: str) -> str:
    """Never echo an NHS number back in an error."""
    return "a person identified by NHS number" if ref.startswith("nhs:") else ref


def iter_patient_refs_in_params(args: Iterable[tuple[str, str]], body: object) -> Iterator[str]:
    """Patient references among operation parameters (query string and a Parameters/JSON body)."""
    for key, value in args:
        for v in value.split(","):
            norm = normalise_reference(v.strip())
            if norm.startswith("Patient/"):
                yield norm
            elif key in ("patient", "subject") and v.strip():
                yield f"Patient/{v.strip()}"
    if isinstance(body, dict):
        if body.get("resourceType") == "Parameters":
            for p in body.get("parameter") or []:
                if isinstance(p, dict) and p.get("name") in ("patient", "subject") \
                        and isinstance(p.get("valueString"), str):
                    yield normalise_reference(p["valueString"]) if "/" in p["valueString"] \
                        else f"Patient/{p['valueString']}"
        inline = {f"Patient/{r['id']}" for r in _inline_patients(body)}
        yield from (r for r in patient_refs(body) if r.startswith("Patient/") and r not in inline)


def _inline_patients(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        if node.get("resourceType") == "Patient" and node.get("id"):
            yield node
        for v in node.values():
            yield from _inline_patients(v)
    elif isinstance(node, list):
        for x in node:
            yield from _inline_patients(x)
