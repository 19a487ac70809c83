"""Golden-file helpers: mapped transaction Bundles with generated urn:uuid references made stable."""

from __future__ import annotations

import copy


def stable_entries(bundle: dict) -> list[dict]:
    """Bundle entries -> [{'request': ..., 'resource': ...}] with urn:uuid references as 'Type/<key value>'.

    The key value is the identifier the entry is written under (its conditional URL's first token value).
    """
    names = {}
    for e in bundle["entry"]:
        req = e["request"]
        query = req.get("ifNoneExist") or req["url"].partition("?")[2]
        value = query.split("|", 1)[1].split(",", 1)[0]
        names[e["fullUrl"]] = f"{e['resource']['resourceType']}/{value}"
    out = []
    for e in bundle["entry"]:
        res = copy.deepcopy(e["resource"])
        _rewrite(res, names)
        out.append({"request": e["request"], "resource": res})
    return out


def _rewrite(node: object, names: dict[str, str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v in names:
                node[k] = names[v]
            else:
                _rewrite(v, names)
    elif isinstance(node, list):
        for x in node:
            _rewrite(x, names)
