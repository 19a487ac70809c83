"""GATEWAY_ALLOWED_HOSTS: the one allow-list for every outbound request (no server-side request forgery).

Entries are host names or IP addresses, optionally with ``:port``, or ``*.domain`` for any
sub-domain. An empty list allows nothing.

>>> AllowList.parse("fhir.leeds.nhs.uk, 127.0.0.1:8081").check("http://127.0.0.1:8081/fhir")
>>> AllowList.parse("*.nhs.uk").allows("https://fhir.leeds.nhs.uk/R4")
True
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.outbound.errors import DestinationNotAllowed

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AllowList:
    entries: tuple[tuple[str, int | None], ...] = ()

    @classmethod
    def parse(cls, raw: str | None) -> AllowList:
        """'a.org, b.org:8443' -> AllowList((('a.org', None), ('b.org', 8443)))."""
        out = []
        for item in (raw or "").replace(";", ",").split(","):
            item = item.strip().lower()
            if not item:
                continue
            host, sep, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
            if sep and port.isdigit():
                out.append((host, int(port)))
            else:
                out.append((item.strip("[]"), None))
        return cls(tuple(out))

    def with_host_of(self, url: str) -> AllowList:
        """This list plus the host (and port, if given) of ``url``: a URL the operator configured for one
        purpose (an identity provider) is its own allow-list entry.

        >>> AllowList().with_host_of("https://auth.login.nhs.uk").allows("https://auth.login.nhs.uk/token")
        True
        """
        return AllowList(self.entries + AllowList.parse(urlsplit(url).netloc).entries)

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        if parts.scheme not in _DEFAULT_PORTS or not host:
            return False
        for want_host, want_port in self.entries:
            if want_port is not None and want_port != port:
                continue
            if want_host == host or (want_host.startswith("*.") and host.endswith(want_host[1:])):
                return True
        return False

    def check(self, url: str) -> None:
        """Raise DestinationNotAllowed unless ``url`` is http(s) to an allowed host."""
        if not self.allows(url):
            host = urlsplit(url).netloc if "://" in url else url
            raise DestinationNotAllowed(f"Outbound request to '{host}' refused: the host is not in "
                                        "GATEWAY_ALLOWED_HOSTS (or the URL is not http/https)")
