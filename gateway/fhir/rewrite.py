"""Rewrites of FHIR JSON that keep its shape: copy on write, shared by the store (before validation and hashing)
and the mapping layer (records validated ahead of the store, as the store would).

>>> normalise_systems({"identifier": [{"system": "http://clinicaltrials.gov/", "value": "NCT1"}]})
{'identifier': [{'system': 'https://clinicaltrials.gov', 'value': 'NCT1'}]}
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from gateway.fhir.conventions import CTGOV, normalise_ctgov_system


def replace_strings(node: object, key: str, fn: Callable[[str], str]) -> object:
    """``node`` with every string value under ``key`` (at any depth) replaced by ``fn(value)``.

    Copy on write: the input is not modified, unchanged branches are shared, and ``node`` itself comes back
    when ``fn`` changes nothing (``fn`` returns the very same string to mean "no change").
    """
    def walk(n: object) -> object:
        if isinstance(n, dict):
            out = None
            for k, v in n.items():
                nv = v
                if isinstance(v, dict | list):
                    nv = walk(v)
                elif k == key and isinstance(v, str):
                    nv = fn(v)
                if nv is not v:
                    if out is None:
                        out = dict(n)
                    out[k] = nv
            return n if out is None else out
        if isinstance(n, list):
            items = [walk(x) if isinstance(x, dict | list) else x for x in n]
            return n if all(a is b for a, b in zip(items, n, strict=True)) else items
        return n

    return walk(node)


def normalise_systems(resource: object) -> object:
    """Store one form of the ClinicalTrials.gov system wherever a ``system`` names it.

    {"identifier": [{"system": "http://clinicaltrials.gov/", "value": "NCT1"}]} ->
    {"identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT1"}]}.
    Runs before validation and hashing, so a re-push under another spelling is "unchanged".
    The input is not modified: a changed copy is returned (the same object when nothing changes).
    """
    if not isinstance(resource, dict | list):
        return resource
    try:
        raw = orjson.dumps(resource)
    except TypeError:  # not plain JSON data: walk it
        raw = b"clinicaltrials.gov"
    # C-speed test first: walk only if some mention is not already exactly the canonical system.
    if raw.count(b"clinicaltrials.gov") == raw.count(b'"https://clinicaltrials.gov"'):
        return resource

    def canonical(v: str) -> str:
        # Cheap substring test first: this runs on every coding of every inbound resource.
        if "clinicaltrials.gov" in v and v != CTGOV:
            nv = normalise_ctgov_system(v)
            return v if nv == v else nv
        return v

    return replace_strings(resource, "system", canonical)
