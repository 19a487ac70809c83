"""Rows derived from resources in the writing transaction (matching's study rows and people's profiles): the
catch-up cursor each keeps in ``counters`` and the check for changes the rows may not hold yet.

>>> if not gap(conn, cursor(conn, "matching:studies-seq"), tx.first_seq, ("ResearchStudy",)):
...     advance_cursor(conn, "matching:studies-seq", tx.last_seq)
"""

from __future__ import annotations

from sqlalchemy import insert, select, update

from gateway.store import schema as s


def cursor(conn, name: str) -> int:
    """Every change up to this sequence number is in the rows named ``name`` (0: none yet)."""
    return int(conn.execute(select(s.counters.c.value).where(s.counters.c.name == name)).scalar() or 0)


def advance_cursor(conn, name: str, seq: int) -> None:
    """Every change up to ``seq`` is in the rows named ``name`` (never moves backwards)."""
    c = s.counters
    done = conn.execute(update(c).where(c.c.name == name, c.c.value < seq).values(value=seq)).rowcount
    if not done and conn.execute(select(c.c.value).where(c.c.name == name)).scalar() is None:
        conn.execute(insert(c).values(name=name, value=seq))


def gap(conn, after: int, before: int, types: tuple[str, ...]) -> bool:
    """Is there a change of ``types`` with ``after`` < seq < ``before`` (one the rows may not hold yet)?"""
    ch = s.changes
    return conn.execute(select(ch.c.seq).where(ch.c.type.in_(types), ch.c.seq > after, ch.c.seq < before)
                        .limit(1)).first() is not None


def changes_after(conn, seq: int, limit: int, types: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """(seq, type, id) of the committed changes of ``types`` after ``seq``, in order (in the caller's transaction)."""
    ch = s.changes
    return [tuple(r) for r in conn.execute(select(ch.c.seq, ch.c.type, ch.c.id).where(
        ch.c.type.in_(types), ch.c.seq > seq).order_by(ch.c.seq).limit(limit))]
