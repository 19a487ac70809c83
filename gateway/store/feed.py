"""Following the change feed: a named cursor per worker, advanced only after its work commits.

>>> for change in follow(store, "rematch"):  # yields changes after the cursor, in commit order
...     handle(change)
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, insert, select, update

from gateway.store import schema as s
from gateway.store.clock import now_iso
from gateway.store.repo import Store


def cursor(store: Store, name: str) -> int:
    """The last change-feed seq the worker ``name`` has processed (0 if it never ran)."""
    with store.engine.connect() as conn:
        seq = conn.execute(select(s.feed_cursors.c.seq).where(s.feed_cursors.c.name == name)).scalar()
    return int(seq or 0)


def latest(store: Store, types: tuple[str, ...]) -> int:
    """The newest change-feed seq of a resource of ``types`` (0: none); ``ix_changes_type_seq`` answers it."""
    c = s.changes
    with store.engine.connect() as conn:
        seq = conn.execute(select(func.max(c.c.seq)).where(c.c.type.in_(types))).scalar()
    return int(seq or 0)


def advance(store: Store, name: str, seq: int) -> None:
    """Record that ``name`` has processed everything up to ``seq`` (never moves backwards)."""
    with store.write() as tx:
        cur = tx.conn.execute(select(s.feed_cursors.c.seq).where(s.feed_cursors.c.name == name)).scalar()
        if cur is None:
            tx.conn.execute(insert(s.feed_cursors).values(name=name, seq=seq, updated_at=now_iso()))
        elif seq > cur:
            tx.conn.execute(update(s.feed_cursors).where(s.feed_cursors.c.name == name)
                            .values(seq=seq, updated_at=now_iso()))


def follow(store: Store, name: str, types: tuple[str, ...] = (), batch: int = 1000) -> Iterator[list[dict]]:
    """Batches of unprocessed changes for ``name``; the cursor advances after each batch is consumed."""
    seq = cursor(store, name)
    while True:
        changes = store.changes_since(seq, limit=batch, types=types)
        if not changes:
            return
        yield changes
        seq = changes[-1]["seq"]
        advance(store, name, seq)
