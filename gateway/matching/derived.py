"""What the study rows (studies.StudyRows) and the people's profiles (people.People) share: rows derived from
resources of some types, rebuilt in the transaction that writes those resources (a store write hook), with a
catch-up cursor that moves only over changes the rows hold."""

from __future__ import annotations

from types import ModuleType

from gateway.store.repo import Store, Tx


class DerivedRows:
    """Subclasses set ``HOOK`` (the write hook's name), ``TYPES`` (the resource types the rows derive from),
    ``ROWS`` (the store module with ``CURSOR``, ``cursor``, ``advance_cursor``, ``gap`` and ``changes_after``)
    and define ``apply(conn, refs, seq)``."""

    HOOK: str
    TYPES: tuple[str, ...]
    ROWS: ModuleType
    store: Store

    def attach(self) -> None:
        """Rebuild the rows a transaction touches, in that transaction (one hook per store)."""
        self.store.write_hooks[self.HOOK] = self._on_write

    def _on_write(self, tx: Tx, touched: list[tuple[str, str]]) -> None:
        refs = [(t, i) for t, i in touched if t in self.TYPES]
        if not refs:
            return
        self.apply(tx.conn, refs, tx.last_seq)
        # the cursor moves on only over changes the rows hold: none older left to the catch-up
        rows = self.ROWS
        if not rows.gap(tx.conn, rows.cursor(tx.conn), tx.first_seq, self.TYPES):
            rows.advance_cursor(tx.conn, tx.last_seq)

    def catch_up(self, batch: int = 2000) -> int:
        """Apply the changes no write hook applied (a database from before the rows, writes of a process without
        the hook); returns how many changes were read. Cheap when every writer has the hook."""
        rows, done = self.ROWS, 0
        with self.store.engine.connect() as conn:
            if not rows.gap(conn, rows.cursor(conn), 2 ** 62, self.TYPES):
                return 0
        while True:
            with self.store.write() as tx:
                tx.lock(rows.CURSOR)  # one process at a time fills the gap
                changes = rows.changes_after(tx.conn, rows.cursor(tx.conn), batch, self.TYPES)
                if not changes:
                    return done
                last = changes[-1][0]
                self.apply(tx.conn, list(dict.fromkeys((t, i) for _, t, i in changes)), last)
                rows.advance_cursor(tx.conn, last)
                done += len(changes)
