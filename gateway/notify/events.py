"""Subscription state and numbered events, kept in the store.

Event numbers are per subscription, start at 1 and never repeat: ``emit`` bumps
``events_since_start`` with a row lock inside the caller's transaction, so numbering follows
commit order even with many workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, insert, select, update

from gateway.notify.subscriptions import Event
from gateway.store import bulk
from gateway.store import schema as s
from gateway.store.clock import now_iso

st = s.subscription_state
ev = s.subscription_events


@dataclass(frozen=True)
class State:
    subscription_id: str
    topic: str
    status: str
    events_since_start: int
    consecutive_failures: int
    last_error: str | None


def ensure(conn: Connection, subscription_id: str, topic: str, status: str = "requested") -> State:
    """Create the state row if missing; return the current state."""
    row = conn.execute(select(st).where(st.c.subscription_id == subscription_id)).mappings().first()
    if row is None:
        conn.execute(insert(st).values(subscription_id=subscription_id, topic=topic, status=status,
                                       events_since_start=0, consecutive_failures=0, updated_at=now_iso()))
        return State(subscription_id, topic, status, 0, 0, None)
    return _state(row)


def get(conn: Connection, subscription_id: str) -> State | None:
    row = conn.execute(select(st).where(st.c.subscription_id == subscription_id)).mappings().first()
    return _state(row) if row else None


def set_status(conn: Connection, subscription_id: str, status: str, error: str | None = None) -> None:
    values: dict = {"status": status, "updated_at": now_iso()}
    if status == "active":
        values.update(consecutive_failures=0, last_error=None)
    if error is not None:
        values["last_error"] = error[:2000]
    conn.execute(update(st).where(st.c.subscription_id == subscription_id).values(**values))


def record_failure(conn: Connection, subscription_id: str, error: str, error_after: int) -> State:
    """Count a failed delivery; after ``error_after`` in a row the subscription goes to ``error``."""
    conn.execute(update(st).where(st.c.subscription_id == subscription_id).values(
        consecutive_failures=st.c.consecutive_failures + 1, last_error=error[:2000], updated_at=now_iso()))
    state = get(conn, subscription_id)
    assert state is not None
    if state.consecutive_failures >= error_after and state.status != "error":
        set_status(conn, subscription_id, "error")
        state = get(conn, subscription_id)
        assert state is not None
    return state


def record_success(conn: Connection, subscription_id: str) -> None:
    conn.execute(update(st).where(st.c.subscription_id == subscription_id).values(
        consecutive_failures=0, updated_at=now_iso()))


def emit(conn: Connection, subscription_id: str, topic: str, focus: str) -> Event:
    """Number and store one event for a subscription (inside the caller's transaction)."""
    number = conn.execute(update(st).where(st.c.subscription_id == subscription_id)
                          .values(events_since_start=st.c.events_since_start + 1)
                          .returning(st.c.events_since_start)).scalar_one()
    at = now_iso()
    conn.execute(insert(ev).values(subscription_id=subscription_id, event_number=number, topic=topic,
                                   focus=focus, occurred_at=at, cancelled=False))
    return Event(number, at, focus)


def emit_many(conn: Connection, items: list[tuple[str, str, str]]) -> list[Event]:
    """``emit`` for many (subscription id, topic, focus) at once, in a few statements whatever their number: the
    subscriptions' event counters advanced together (store.bulk.increment; more than one event for a
    subscription: numbered in ``items`` order) and one INSERT of the events. Returns the events in the order of
    ``items``."""
    if not items:
        return []
    per: dict[str, int] = {}
    for sid, _, _ in items:
        per[sid] = per.get(sid, 0) + 1
    last = bulk.increment(conn, st, "subscription_id", "events_since_start", per)
    missing = sorted(set(per) - last.keys())
    if missing:  # as ``emit``: a subscription without its state row is an error of the caller
        raise LookupError(f"no subscription state for {len(missing)} subscription(s), e.g. {missing[0]}")
    at = now_iso()
    nxt = {sid: n - per[sid] + 1 for sid, n in last.items()}
    out, rows = [], []
    for sid, topic, focus in items:
        number = nxt[sid]
        nxt[sid] += 1
        rows.append({"subscription_id": sid, "event_number": number, "topic": topic, "focus": focus,
                     "occurred_at": at, "cancelled": False})
        out.append(Event(number, at, focus))
    bulk.insert_rows(conn, ev, rows)
    return out


def events(conn: Connection, subscription_id: str, since: int | None = None, until: int | None = None
           ) -> list[Event]:
    """Stored events, inclusive bounds, in event-number order (cancelled ones are left out)."""
    conds = [ev.c.subscription_id == subscription_id, ev.c.cancelled.is_(False)]
    if since is not None:
        conds.append(ev.c.event_number >= since)
    if until is not None:
        conds.append(ev.c.event_number <= until)
    rows = conn.execute(select(ev).where(and_(*conds)).order_by(ev.c.event_number)).mappings()
    return [Event(r["event_number"], r["occurred_at"], r["focus"]) for r in rows]


def cancel_for_focus(conn: Connection, focus: str) -> int:
    """Cancel events about ``focus`` (e.g. a study that stopped recruiting); returns how many."""
    stmt = update(ev).where(ev.c.focus == focus, ev.c.cancelled.is_(False))
    return conn.execute(stmt.values(cancelled=True)).rowcount or 0


def _state(row) -> State:
    return State(row["subscription_id"], row["topic"], row["status"], int(row["events_since_start"]),
                 int(row["consecutive_failures"]), row["last_error"])
