"""Extraction results kept with the criteria text they came from, reused while that text is unchanged.

Extracting a study's criteria costs tens of milliseconds; an unchanged re-import should not pay it again. Results
live in a small SQLite file beside the instance (``<instance>/eligibility-cache.sqlite3``), keyed by a hash of the
text, the extractor version and the lexicons' content: a new extractor or lexicon misses the old entries. It is a
cache (derived data, never the record): deleting it only costs time. Each process opens its own connection; the
import's worker processes read and write it concurrently (WAL).

>>> use_cache(Path("instance/eligibility-cache.sqlite3"))
>>> parts_for(text)   # computed once, then read back by any process while the text is unchanged
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
from collections import OrderedDict
from pathlib import Path

import orjson

from gateway.mapping.eligibility.extract import EXTRACTOR_VERSION, extract
from gateway.mapping.eligibility.fhir import group_parts
from gateway.terminology.lexicons import DEFAULT_PATH, default_lexicons

log = logging.getLogger(__name__)

Parts = tuple[list[dict], list[dict]]  # (characteristics, Group extensions)
_MEMORY_SIZE = 2048
_FLUSH_EVERY = 32


def _fingerprint() -> str:
    """The extractor's version, its code and the lexicons: any change misses the old entries."""
    h = hashlib.sha256(EXTRACTOR_VERSION.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")) + sorted(DEFAULT_PATH.iterdir()):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


class ExtractionCache:
    """Text -> extraction parts, in one SQLite file; one connection per process (opened on first use)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._pending: list[tuple[str, bytes]] = []
        self._prefix = _fingerprint()

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS parts (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        except (sqlite3.Error, OSError) as exc:
            log.warning("eligibility: extraction cache %s unusable (%s); extracting without it", self.path, exc)
            return None
        self._conn, self._pid, self._pending = conn, os.getpid(), []  # a forked child starts with no pending rows
        return conn

    def key(self, text: str) -> str:
        return self._prefix + hashlib.sha256(text.encode()).hexdigest()

    def get(self, text: str) -> Parts | None:
        conn = self._connection()
        if conn is None:
            return None
        try:
            row = conn.execute("SELECT value FROM parts WHERE key = ?", (self.key(text),)).fetchone()
        except sqlite3.Error as exc:
            log.warning("eligibility: extraction cache read failed (%s)", exc)
            return None
        if row is None:
            return None
        data = orjson.loads(row[0])
        return data["chars"], data["exts"]

    def put(self, text: str, parts: Parts) -> None:
        if self._connection() is None:
            return
        self._pending.append((self.key(text), orjson.dumps({"chars": parts[0], "exts": parts[1]})))
        if len(self._pending) >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        conn = self._connection()
        if conn is None or not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            conn.execute("BEGIN")
            conn.executemany("INSERT OR IGNORE INTO parts (key, value) VALUES (?, ?)", rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # busy beyond the timeout, disk full: the entries are simply not cached
            log.warning("eligibility: extraction cache write failed (%s)", exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")


_cache: ExtractionCache | None = None
_memory: OrderedDict[str, Parts] = OrderedDict()


def use_cache(path: Path | None) -> None:
    """Keep extraction results in the file at ``path`` (None: in memory only)."""
    global _cache
    _cache = ExtractionCache(path) if path is not None else None


def flush() -> None:
    """Write pending results (call at the end of a batch of work)."""
    if _cache is not None:
        _cache.flush()


def parts_for(text: str) -> Parts:
    """(characteristics, Group extensions) of one criteria text: from memory, the cache file, or extracted."""
    hit = _memory.get(text)
    if hit is not None:
        _memory.move_to_end(text)
        return _copy(hit)  # the caller places them in a resource it may change
    parts = _cache.get(text) if _cache is not None else None
    if parts is None:
        parts = group_parts(extract(text, default_lexicons()))
        if _cache is not None:
            _cache.put(text, parts)
    _memory[text] = parts
    if len(_memory) > _MEMORY_SIZE:
        _memory.popitem(last=False)
    return _copy(parts)


def _copy(parts: Parts) -> Parts:
    data = orjson.loads(orjson.dumps(parts))
    return data[0], data[1]


__all__ = ["ExtractionCache", "flush", "parts_for", "use_cache"]
