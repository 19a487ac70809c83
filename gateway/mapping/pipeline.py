"""Bulk import: read, map and validate source files in worker processes while the calling process stores.

Mapping and validating a record costs about as much CPU as storing it, and they need no database, so a
bulk import (``gateway import``) runs them in ``workers`` processes, a window of files ahead of the store:

    for path, records in prepared_files(folder, "ctgov-v2", files, workers=1):
        ingest(service, records)   # resources already validated are not validated again

``workers=0`` does it all in this process. Results come back in file order. The workers run at most AHEAD
windows of files ahead and spool their results to files; when they are behind, this process prepares windows
too, rather than wait (so the CPUs stay busy whichever side is slower).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import orjson

from gateway.mapping.eligibility import cache as eligibility_cache
from gateway.mapping.engine import MappedRecord, map_payload, map_records
from gateway.mapping.ingest import prevalidate
from gateway.mapping.readers import READERS, PayloadError
from gateway.mapping.registry import MappingRegistry

log = logging.getLogger(__name__)

WINDOW = 32  # files handed to a worker at a time
WINDOW_BYTES = 4 << 20  # ... or fewer files, when they are larger than this together
SLICE_BYTES = 1 << 20  # a file larger than WINDOW_BYTES is split into parts of about this much source
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


def _claim(spool: Path, number: int) -> bool:
    """Claim window ``number``: whoever creates its claim file first (a worker, or the storing process when it
    would otherwise wait) prepares it. Creating a file with O_EXCL is atomic, across processes."""
    try:
        os.close(os.open(spool / f"{number}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


# A unit of work: a source file, and the name of a spooled part of its records (None: the whole file).
Part = tuple[Path, str | None]


def _prepare_window(number: int, parts: list[Part]) -> str | None:
    """In a worker: prepare each part, the results written to a file in the spool folder; returns that file's
    name (None: the storing process claimed the window first and prepares it itself).

    The results go through a file, not the pool's pipe: a window is megabytes, and through a 64 KiB pipe the
    worker waited, chunk by chunk, for the storing process's result thread to get the GIL (a tenth of the
    import). Each record's Bundle is sent as JSON bytes (read back in a third less time than unpickling the
    same dicts, in the process that stores: the busier one).
    """
    assert _worker is not None
    mapping, conceptmaps, spool = _worker
    if not _claim(spool, number):
        return None  # the storing process took it
    done: list[list[tuple[MappedRecord, bytes | None]] | PayloadError] = []
    for part in parts:
        records = _prepare_part(mapping, conceptmaps, spool, part)
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
    eligibility_cache.flush()  # this window's new extraction results, for the next import
    return target.name


def _prepare_part(mapping, conceptmaps, spool: Path, part: Part) -> list[MappedRecord] | PayloadError:
    path, sliced = part
    if sliced is None:
        return prepare_file(mapping, conceptmaps, path)
    records = pickle.loads((spool / sliced).read_bytes())  # removed once stored (see _pooled)
    return [prevalidate(rec) for rec in map_records(mapping, records, conceptmaps=conceptmaps)]


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


def _windows(files: list[Path], mapping, spool: Path) -> list[list[Part]]:
    """The work, in file order: consecutive files in groups of WINDOW, or fewer when they hold more than
    WINDOW_BYTES of source (a window's records are in memory at once). A file larger than WINDOW_BYTES (an API
    page of a thousand studies, a hospital extract of a whole year) is read here once and its records spooled
    in parts of about SLICE_BYTES, a window each, so that several processes share it too."""
    out: list[list[Part]] = []
    size = 0
    for path in files:
        n = _size(path)
        if n > WINDOW_BYTES:
            parts = _split(path, n, mapping, spool, len(out))
            if parts is not None:
                out.extend([part] for part in parts)
                size = WINDOW_BYTES  # the next file starts a window of its own
                continue
        if not out or len(out[-1]) >= WINDOW or (size + n > WINDOW_BYTES and out[-1]):
            out.append([])
            size = 0
        out[-1].append((path, None))
        size += n
    return out


def _split(path: Path, size: int, mapping, spool: Path, first: int) -> list[Part] | None:
    """A large file's records spooled in parts; None if the file is unreadable as a whole (a worker reports it)."""
    try:
        records = READERS[mapping.reader](path.read_bytes())
    except (PayloadError, OSError):
        return None
    if not records:
        return None
    per_part = max(1, int(len(records) * SLICE_BYTES / size))
    parts: list[Part] = []
    for k, i in enumerate(range(0, len(records), per_part)):
        name = f"source-{first}-{k}.pickle"
        (spool / name).write_bytes(pickle.dumps(records[i:i + per_part], protocol=pickle.HIGHEST_PROTOCOL))
        parts.append((path, name))
    return parts


def prepared_files(folder: Path, mapping_name: str, files: Iterable[Path], workers: int
                   ) -> Iterator[tuple[Path, list[MappedRecord] | PayloadError]]:
    """(path, mapped and validated records, or a PayloadError) for every file, in order. A file larger than
    WINDOW_BYTES may come in several parts, one after the other, each with the next of its records."""
    files = list(files)
    registry = MappingRegistry(folder)
    mapping = registry.get(mapping_name)
    if workers <= 0 or (len(files) < 2 and not any(_size(p) > WINDOW_BYTES for p in files)):
        for i, path in enumerate(files):
            yield path, prepare_file(mapping, registry.conceptmaps, path)
            if i % WINDOW == WINDOW - 1:
                eligibility_cache.flush()
        eligibility_cache.flush()
        return
    ctx = multiprocessing.get_context(START_METHOD)
    # ignore_cleanup_errors: if the caller stops early, a worker may still be writing a window it had started
    with tempfile.TemporaryDirectory(prefix="gateway-import-", ignore_cleanup_errors=True) as spool_name:
        spool = Path(spool_name)
        windows = _windows(files, mapping, spool)
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init,
                                   initargs=(str(folder), mapping_name, spool_name))

        def here(parts: list[Part]) -> list[list[MappedRecord] | PayloadError]:
            out = [_prepare_part(mapping, registry.conceptmaps, spool, part) for part in parts]
            eligibility_cache.flush()
            return out

        try:
            yield from _pooled(pool, spool, windows, here)
        except BaseException:  # the caller stopped early (or failed): do not wait for windows nobody will read
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        # Workers may still be looking at windows this process took (they find the claim and return): let them,
        # before the folder goes.
        pool.shutdown(wait=True)


def _size(path: Path) -> int:
    """The file's size; 0 if it cannot be read (prepare_file reports why)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _pooled(pool: ProcessPoolExecutor, spool: Path, windows: list[list[Part]], here
            ) -> Iterator[tuple[Path, list[MappedRecord] | PayloadError]]:
    broken = False

    def submit(i: int) -> Future | None:
        nonlocal broken
        if broken:
            return None
        try:
            return pool.submit(_prepare_window, i, windows[i])
        except BrokenProcessPool:
            broken = True
            return None

    # Many windows queued: the workers never wait for the store to ask for the next one (with one window ahead,
    # each side waited for the other in turn and the import took the sum, not the max).
    queued = {i: submit(i) for i in range(min(AHEAD, len(windows)))}
    stolen: dict[int, list[list[MappedRecord] | PayloadError]] = {}
    for i, window in enumerate(windows):
        future = queued.pop(i)
        if i + AHEAD < len(windows):
            queued[i + AHEAD] = submit(i + AHEAD)
        # Rather than wait for the workers, prepare a window here: the last one queued, which they would reach
        # last. Whichever side is slower, mapping, validating and storing share the CPUs.
        while i not in stolen and future is not None and not future.done():
            j = max(j for j in (*queued, i) if j not in stolen)
            if not _claim(spool, j):
                break  # the workers hold every window up to j: wait for them
            stolen[j] = here(windows[j])
        if i in stolen:
            done = stolen.pop(i)
        else:
            try:
                name = future.result() if future is not None else None
            except BrokenProcessPool as exc:
                if not broken:
                    log.warning("import: a worker process died (%s); the remaining files are prepared in the "
                                "storing process", exc)
                broken, name = True, None
            if name is None:  # a worker died holding this window, or never got it
                done = here(window)
            else:
                spooled = spool / name
                packed = pickle.loads(spooled.read_bytes())
                spooled.unlink()
                done = [_unpack(prepared) for prepared in packed]
        for (path, sliced), prepared in zip(window, done, strict=True):
            if sliced is not None:
                (spool / sliced).unlink(missing_ok=True)
            yield path, prepared
