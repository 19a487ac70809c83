"""What the study rows (studies.StudyRows) and the people's profiles (people.People) share: rows derived from
resources of some types, rebuilt in the transaction that writes those resources (a store write hook), with a
catch-up cursor that moves only over changes the rows hold."""

from __future__ import annotations

from types import ModuleType

from gateway.store.repo import Store, Tx


class DerivedRows:
    """Subclasses set ``HOOK`` (the write hook's name), ``TYPES`` (the resource types the rows derive from),
    ``ROWS`` (the store module with ``cursor``, ``advance_cursor`` and ``gap``) and define ``apply``."""

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
