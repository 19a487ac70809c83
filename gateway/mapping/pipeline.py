"""Bulk import: read, map and validate source files in worker processes while the calling process stores.

Mapping and validating a record costs about as much CPU as storing it, and they need no database, so a
bulk import (``gateway import``) runs them in ``workers`` processes, a window of files ahead of the store:

    for path, records in prepared_files(folder, "ctgov-v2", files, workers=1):
        ingest(service, records)   # resources already validated are not validated again

``workers=0`` does it all in this process. Results come back in file order. At most AHEAD + 1 windows of
files are in memory at once, however many files there are.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from gateway.mapping.engine import MappedRecord, map_payload
from gateway.mapping.ingest import prevalidate
from gateway.mapping.readers import PayloadError
from gateway.mapping.registry import MappingRegistry

WINDOW = 32  # files handed to the workers at a time
AHEAD = 16  # windows queued for the workers ahead of the store
# fork on Python 3.11: workers start at once with the modules already imported (they never use the parent's
# database connections). Later Pythons warn about forking a process with threads (the progress bar has one),
# so they start workers from a clean server process instead.
_METHODS = multiprocessing.get_all_start_methods()
START_METHOD = "fork" if sys.version_info < (3, 12) and "fork" in _METHODS else \
    "forkserver" if "forkserver" in _METHODS else "spawn"

_worker: tuple[object, object, Path] | None = None  # (mapping, conceptmaps, folder for results) in a worker


def default_workers() -> int:
    """One worker per CPU but the one that stores, at most 4: the store is the limit beyond that."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _init(folder: str, mapping_name: str, spool: str) -> None:
    global _worker
    registry = MappingRegistry(Path(folder))
    _worker = (registry.get(mapping_name), registry.conceptmaps, Path(spool))


def _prepare_window(number: int, paths: list[Path]) -> str:
    """In a worker: prepare_file for each path, written to a file in the spool folder; returns that file's name.

    The results go through a file, not the pool's pipe: a window is megabytes, and through a 64 KiB pipe the
    worker waited, chunk by chunk, for the storing process's result thread to get the GIL (a tenth of the
    import). Each record's Bundle is sent as JSON bytes (read back in a third less time than unpickling the
    same dicts, in the process that stores: the busier one).
    """
    assert _worker is not None
    mapping, conceptmaps, spool = _worker
    done: list[list[tuple[MappedRecord, bytes | None]] | PayloadError] = []
    for path in paths:
        records = prepare_file(mapping, conceptmaps, path)
        if isinstance(records, PayloadError):
            done.append(records)
            continue
        out = []
        for rec in records:
            raw = None
            if rec.bundle is not None:
                try:
                    raw = orjson.dumps(rec.bundle)
                    rec.bundle = None
                except (TypeError, orjson.JSONEncodeError):  # not plain JSON data: pickled as it is
                    raw = None
            out.append((rec, raw))
        done.append(out)
    target = spool / f"{number}.pickle"
    target.write_bytes(pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL))
    return target.name


def _unpack(done: list[tuple[MappedRecord, bytes | None]] | PayloadError) -> list[MappedRecord] | PayloadError:
    if isinstance(done, PayloadError):
        return done
    for rec, raw in done:
        if raw is not None:
            rec.bundle = orjson.loads(raw)
    return [rec for rec, _ in done]


def prepare_file(mapping, conceptmaps, path: Path) -> list[MappedRecord] | PayloadError:
    """A source file -> its mapped records with their resources validated, or why the file is unreadable."""
    try:
        records = map_payload(mapping, path.read_bytes(), conceptmaps=conceptmaps)
    except PayloadError as exc:
        return exc
    return [prevalidate(rec) for rec in records]


def prepared_files(folder: Path, mapping_name: str, files: Iterable[Path], workers: int
                   ) -> Iterator[tuple[Path, list[MappedRecord] | PayloadError]]:
    """(path, mapped and validated records, or a PayloadError) for every file, in order."""
    files = list(files)
    if workers <= 0 or len(files) < 2:
        registry = MappingRegistry(folder)
        mapping = registry.get(mapping_name)
        for path in files:
            yield path, prepare_file(mapping, registry.conceptmaps, path)
        return
    ctx = multiprocessing.get_context(START_METHOD)
    with tempfile.TemporaryDirectory(prefix="gateway-import-") as spool, \
            ctx.Pool(workers, initializer=_init, initargs=(str(folder), mapping_name, spool)) as pool:
        windows = [files[i:i + WINDOW] for i in range(0, len(files), WINDOW)]
        # Several windows queued: the workers never wait for the store to ask for the next one (with one
        # window ahead, each side waited for the other in turn and the import took the sum, not the max).
        ahead = deque(pool.apply_async(_prepare_window, (i, w)) for i, w in enumerate(windows[:AHEAD]))
        for i, window in enumerate(windows):
            spooled = Path(spool) / ahead.popleft().get()
            if i + AHEAD < len(windows):
                ahead.append(pool.apply_async(_prepare_window, (i + AHEAD, windows[i + AHEAD])))
            done = pickle.loads(spooled.read_bytes())
            spooled.unlink()
            for path, prepared in zip(window, done, strict=True):
                yield path, _unpack(prepared)
