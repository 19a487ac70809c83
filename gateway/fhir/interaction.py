"""A REST call (method + URL below the FHIR base) -> the FHIR interaction it names: read, vread, search, create,
update, delete, the three histories, an operation or a transaction. One parser for every place that needs it:
route authorization, Bundle entries (their authorization and their processing).

>>> parse_interaction("GET", "Patient/1/_history/2")
Interaction(name='vread', method='GET', rtype='Patient', rid='1', vid='2', operation=None, query='')
>>> parse_interaction("POST", "/ResearchStudy/$match").name, parse_interaction("PUT", "Patient?identifier=x").name
('operation', 'update')
"""

from __future__ import annotations

from dataclasses import dataclass

# Type level and instance level: the interaction each method names (absent: the answer is 404/405).
_TYPE_LEVEL = {"GET": "search", "POST": "create", "PUT": "update", "DELETE": "delete", "PATCH": "update"}
_INSTANCE_LEVEL = {"GET": "read", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
HISTORY = frozenset({"history-system", "history-type", "history-instance", "vread"})


@dataclass(frozen=True)
class Interaction:
    """``name`` is None when the URL names no interaction (the server answers 404 or 405).

    ``rtype`` is None at system level; ``operation`` is the name without ``$``; ``query`` the text after ``?``.
    """

    name: str | None
    method: str = "GET"
    rtype: str | None = None
    rid: str | None = None
    vid: str | None = None
    operation: str | None = None
    query: str = ""

    @property
    def conditional(self) -> bool:
        """An update or delete addressed by a search (``PUT Patient?identifier=...``)."""
        return self.name in ("update", "delete") and self.rid is None and bool(self.query)


def parse_interaction(method: str, url: str) -> Interaction:
    """``method`` and a URL relative to the FHIR base (a leading '/' and a query string are allowed)."""
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    if not parts:
        return Interaction("transaction", method, query=query)  # POST [base]: transaction or batch
    head = parts[0]
    if head == "_history":
        return Interaction("history-system", method, query=query)
    if head.startswith("$"):
        return Interaction("operation", method, operation=head[1:], query=query)
    n = len(parts)
    if n == 1:
        return Interaction(_TYPE_LEVEL.get(method), method, head, query=query)
    second = parts[1]
    if n == 2 and second == "_search" and method == "POST":  # GET [type]/_search is no FHIR interaction
        return Interaction("search", method, head, query=query)
    if n == 2 and second == "_history":
        return Interaction("history-type", method, head, query=query)
    if n == 2 and second.startswith("$"):
        return Interaction("operation", method, head, operation=second[1:], query=query)
    if n == 2:
        return Interaction(_INSTANCE_LEVEL.get(method), method, head, second, query=query)
    if n == 3 and parts[2].startswith("$"):
        return Interaction("operation", method, head, second, operation=parts[2][1:], query=query)
    if n == 3 and parts[2] == "_history":
        return Interaction("history-instance", method, head, second, query=query)
    if n == 4 and parts[2] == "_history":
        return Interaction("vread", method, head, second, parts[3], query=query)
    return Interaction(None, method, head, query=query)
