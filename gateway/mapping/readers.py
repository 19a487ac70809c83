"""Readers split one payload (bytes, text or parsed JSON) into source records, by name.

``READERS["ctgov-studies"](b'{"studies": [{...}, {...}]}')`` -> [(0, {...}), (1, {...})].
A record that is not usable is returned as a RecordError so the others still map.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass

import orjson


class PayloadError(ValueError):
    """The whole payload is unreadable (bad JSON, wrong shape): no record can be taken from it."""


@dataclass
class RecordError:
    path: str
    message: str


Reader = Callable[[object], list[tuple[int, object]]]
READERS: dict[str, Reader] = {}


def reader(name: str) -> Callable[[Reader], Reader]:
    def deco(fn: Reader) -> Reader:
        READERS[name] = fn
        return fn
    return deco


def _json(payload: object) -> object:
    if isinstance(payload, bytes | bytearray | memoryview | str):
        raw = bytes(payload) if not isinstance(payload, str) else payload.encode()
        if not raw.strip():
            raise PayloadError("the payload is empty")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"the payload is not valid JSON: {exc}") from None
    return payload


def _ndjson(payload: object) -> list[object] | None:
    """NDJSON (one study per line) -> items, a bad line becoming a RecordError; None if not NDJSON.

    It is NDJSON when the whole text is not one JSON value but its first line is a JSON object.
    """
    if not isinstance(payload, bytes | bytearray | memoryview | str):
        return None
    raw = bytes(payload) if not isinstance(payload, str) else payload.encode()
    lines = raw.splitlines()
    if len([x for x in lines if x.strip()]) < 2:
        return None
    try:
        orjson.loads(raw)
        return None
    except orjson.JSONDecodeError:
        pass
    try:
        if not isinstance(orjson.loads(lines[0]), dict):
            return None
    except orjson.JSONDecodeError:
        return None
    items: list[object] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            items.append(RecordError(f"line {n}", f"not valid JSON: {exc}"))
    return items


@reader("ctgov-studies")
def ctgov_studies(payload: object) -> list[tuple[int, object]]:
    """One study, a JSON array of studies, an API page {"studies": [...], "nextPageToken": ...}, or NDJSON."""
    lines = _ndjson(payload)
    data = lines if lines is not None else _json(payload)
    if isinstance(data, dict) and isinstance(data.get("studies"), list):
        items, where = data["studies"], "studies"
    elif isinstance(data, dict):
        items, where = [data], ""
    elif isinstance(data, list):
        items, where = data, ""
    else:
        raise PayloadError("expected a study object, an array of studies or an API page with 'studies'")
    out: list[tuple[int, object]] = []
    for i, item in enumerate(items):
        if isinstance(item, RecordError):
            out.append((i, item))
        elif not isinstance(item, dict) or not isinstance(item.get("protocolSection"), dict):
            out.append((i, RecordError(f"{where}[{i}]" if where else f"[{i}]",
                                       "expected a study object with a 'protocolSection'")))
        else:
            out.append((i, item))
    return out


def _column(name: str) -> str:
    """'NHS Number' -> 'nhs_number' (extract headers vary in case and spacing)."""
    return "_".join(name.strip().lower().replace("-", " ").split())


@reader("rows")
def rows(payload: object) -> list[tuple[int, object]]:
    """CSV text (header row first) or JSON: an array of row objects, or {"rows"|"records": [...]}."""
    data: object = payload
    if isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload).decode("utf-8-sig")
    if isinstance(data, str):
        text = data.lstrip("\ufeff")
        if text.lstrip()[:1] in ("[", "{"):
            data = _json(text)
        else:
            if not text.strip():
                raise PayloadError("the payload is empty")
            reader_ = csv.DictReader(io.StringIO(text))
            out: list[tuple[int, object]] = []
            for i, row in enumerate(reader_):
                if None in row:
                    out.append((i, RecordError(f"row {i + 2}", f"{len(row[None])} more values than columns")))
                    continue
                out.append((i, {_column(k): (v.strip() if isinstance(v, str) else v) for k, v in row.items()}))
            return out
    if isinstance(data, dict):
        for k in ("rows", "records", "problems"):
            if isinstance(data.get(k), list):
                data = data[k]
                break
        else:
            data = [data]
    if not isinstance(data, list):
        raise PayloadError("expected CSV text, a JSON array of rows, or {\"rows\": [...]}")
    out = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            out.append((i, {_column(k): v for k, v in item.items()}))
        else:
            out.append((i, RecordError(f"[{i}]", "expected a row object")))
    return out
