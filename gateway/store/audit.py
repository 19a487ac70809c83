"""The audit trail: one AuditEvent per request on patient data and per automatic action.

Shaped like IHE Basic Audit Log Patterns (BALP): ``type`` rest (or our own subtypes), ``subtype`` the
FHIR interaction, ``action`` C/R/U/D/E, ``outcome`` 0/4/8, the client as requesting ``agent``, the
gateway as ``source``, one ``entity`` per Patient involved (role patient) and the request id as an
XrequestId entity. Only ids: never tokens, query strings, NHS numbers or clinical content.
Stored through the store without re-validation (we build it), so administrators search it at
/fhir/AuditEvent?patient=Patient/x&agent=<client id>&date=ge2026-01-01.
It lives beside the store (it needs only the store and the FHIR conventions) so that every layer that acts --
the API's security, the automatic flows in notify -- records through it without importing a layer beside it.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import uuid
from collections.abc import Iterable

from gateway.fhir.conventions import (
    AUDIT_ENTITY_TYPE,
    AUDIT_EVENT_TYPE,
    AUDIT_SUBTYPE,
    BALP_ENTITY_TYPE,
    CLIENT_ID_SYSTEM,
    OBJECT_ROLE,
    RESTFUL_INTERACTION,
)
from gateway.store.clock import now_iso
from gateway.store.repo import Store

log = logging.getLogger("gateway.audit")

ACTIONS = {"create": "C", "read": "R", "vread": "R", "search": "E", "search-type": "E", "history-instance": "R",
           "history-type": "R", "history-system": "R", "update": "U", "delete": "D", "transaction": "E",
           "batch": "E", "operation": "E", "erase": "D", "token": "E"}
MAX_ENTITIES = 200  # a search over many people records the first 200 and says how many there were


def outcome_code(status: int) -> str:
    """HTTP status -> AuditEvent.outcome: 0 success, 4 minor failure (client error), 8 serious failure."""
    return "0" if status < 400 else ("4" if status < 500 else "8")


def audit_event(*, interaction: str, status: int, client_id: str, role: str, request_id: str,
                people: Iterable[str] = (), resources: Iterable[str] = (), automatic: bool = False,
                subtype_system: str | None = None, detail: str | None = None) -> dict:
    """Build one AuditEvent (dict). ``people`` and ``resources`` are 'Type/id' references only."""
    if subtype_system is None:
        subtype_system = RESTFUL_INTERACTION if interaction in _REST else AUDIT_SUBTYPE
    entities: list[dict] = []
    for ref in sorted(set(people))[:MAX_ENTITIES]:
        entities.append({"what": {"reference": ref}, "type": {"system": AUDIT_ENTITY_TYPE, "code": "1"},
                         "role": {"system": OBJECT_ROLE, "code": "1"}})
    for ref in sorted(set(resources) - set(people))[:MAX_ENTITIES]:
        entities.append({"what": {"reference": ref}, "type": {"system": AUDIT_ENTITY_TYPE, "code": "2"}})
    entities.append({"what": {"identifier": {"value": request_id}},
                     "type": {"system": BALP_ENTITY_TYPE, "code": "XrequestId"}})
    event: dict = {
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
        "subtype": [{"system": subtype_system, "code": interaction}],
        "action": ACTIONS.get(interaction, "E"),
        "recorded": now_iso(),
        "outcome": outcome_code(status),
        "agent": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "IRCP" if automatic else "AUT"}]},
            "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id}, "display": role},
            "requestor": not automatic,
        }],
        "source": {"observer": {"display": "trial-matching gateway"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "entity": entities,
    }
    n = len(set(people))
    if n > MAX_ENTITIES or detail:
        event["outcomeDesc"] = "; ".join(x for x in (detail, f"{n} people involved" if n > MAX_ENTITIES else None)
                                         if x)
    return event


_REST = {"read", "vread", "update", "delete", "history-instance", "history-type", "history-system", "create",
         "search-type", "search", "batch", "transaction", "operation"}


def write_audit(store: Store, event: dict | list[dict]) -> None:
    """Store AuditEvents now, in one transaction (used for events that must be on record before answering)."""
    events = event if isinstance(event, list) else [event]
    with store.write() as tx:
        for ev in events:
            tx.create(ev, str(uuid.uuid4()))


class AuditWriter:
    """Writes request AuditEvents in batches from a background thread, off the request's path.

    One transaction per batch (every ``interval`` seconds or ``batch`` events) instead of one commit per
    request: on SQLite a commit costs milliseconds. At most ``interval`` seconds of events are in memory;
    ``close()`` (also at interpreter exit) writes what is left. A failed batch is logged with its size.
    """

    def __init__(self, store: Store, interval: float = 0.2, batch: int = 500):
        self.store, self.interval, self.batch = store, interval, batch
        self._queue: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, event: dict) -> None:
        self._queue.put(event)
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                    self._thread.start()
                    atexit.register(self.close)

    def flush(self) -> int:
        """Write everything queued so far; returns how many events were written."""
        written = 0
        with self._lock:
            while True:
                events = []
                while len(events) < self.batch:
                    try:
                        events.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if not events:
                    return written
                try:
                    write_audit(self.store, events)
                    written += len(events)
                except Exception:  # the operators must see a lost batch; the requests were already answered
                    log.exception("audit batch of %d events could not be written", len(events))

    def close(self) -> None:
        self._stop.set()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


def automatic_event(action: str, *, people: Iterable[str] = (), resources: Iterable[str] = (),
                    actor: str = "gateway", status: int = 200, request_id: str | None = None,
                    detail: str | None = None) -> dict:
    """The AuditEvent of an automatic action (a notification sent, a patient proposed to a research team, ...)."""
    return audit_event(interaction=action, status=status, client_id=actor, role="automatic",
                       request_id=request_id or str(uuid.uuid4()), people=people, resources=resources,
                       automatic=True, subtype_system=AUDIT_SUBTYPE, detail=detail)


def record_automatic(store: Store, action: str, **details) -> dict:
    """Audit an automatic action now (``details``: the keyword arguments of ``automatic_event``).

    record_automatic(store, "notify", people=["Patient/1"], resources=["Subscription/9"]) -> the AuditEvent.
    """
    event = automatic_event(action, **details)
    write_audit(store, event)
    return event


def record_automatic_for(store: Store, action: str, people: list[str], **details) -> int:
    """``record_automatic`` for any number of people: one AuditEvent per MAX_ENTITIES of them, all written in one
    transaction; returns how many events."""
    events = [automatic_event(action, people=people[i:i + MAX_ENTITIES], **details)
              for i in range(0, len(people), MAX_ENTITIES)]
    if events:
        write_audit(store, events)
    return len(events)
