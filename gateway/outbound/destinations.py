"""From a hospital file to a ready FhirClient (allow-list checked before anything is sent)."""

from __future__ import annotations

import threading

import requests

from gateway.outbound.auth import Auth
from gateway.outbound.client import FhirClient
from gateway.outbound.hospitals import Hospital, Hospitals, load_hospitals
from gateway.outbound.http import HttpClient
from gateway.outbound.settings import OutboundSettings


class Destinations:
    """Hospitals plus one cached client per hospital (so SMART tokens are cached per process)."""

    def __init__(self, settings: OutboundSettings, hospitals: Hospitals | None = None,
                 session: requests.Session | None = None):
        self.settings = settings
        if hospitals is None:
            hospitals = load_hospitals(settings.hospitals_path) if settings.hospitals_path else Hospitals()
        self.hospitals = hospitals
        self.session = session or requests.Session()
        self._auth: dict[str, Auth] = {}
        self._lock = threading.Lock()

    def http(self, *, retries: int = 0) -> HttpClient:
        """The outbound transport for a URL that is no hospital's FHIR server (a subscriber's endpoint, the
        opt-out list): the allow-list and the shared session; ``retries`` 0 when the outbox retries the job."""
        s = self.settings
        return HttpClient(allowed_hosts=s.allowed_hosts, session=self.session, max_retries=retries,
                          backoff_base=0.5, backoff_max=min(30.0, s.backoff_max))

    def client(self, hospital: Hospital | str, *, retries: int | None = None) -> FhirClient:
        """A client for the hospital; raises DestinationNotAllowed / ConfigurationError before any traffic."""
        h = self.hospitals.get(hospital) if isinstance(hospital, str) else hospital
        s = self.settings
        s.allowed_hosts.check(h.fhir_base_url)
        with self._lock:
            auth = self._auth.get(h.name)
            if auth is None:
                auth = self._auth[h.name] = h.make_auth(s.env, s.allowed_hosts)
                if getattr(auth, "session", "absent") is None:
                    auth.session = self.session  # type: ignore[attr-defined]
        return FhirClient(h.fhir_base_url, allowed_hosts=s.allowed_hosts, auth=auth, session=self.session,
                          timeout=h.timeout, max_retries=s.client_retries if retries is None else retries,
                          backoff_base=0.5, backoff_max=min(30.0, s.backoff_max))
