"""Outbound: one FHIR client, hospital endpoints as data, pulling records, and the transactional outbox.

The small public API: ``FhirClient``, ``pull_patient_bundle``, ``Destinations``, ``OutboundSettings``,
``AllowList``; typed errors in ``gateway.outbound.errors``; the outbox in ``gateway.outbound.outbox``
and its job kinds in ``gateway.outbound.kinds``.
"""

from gateway.outbound.allowlist import AllowList
from gateway.outbound.client import FhirClient
from gateway.outbound.destinations import Destinations
from gateway.outbound.pull import pull_patient_bundle
from gateway.outbound.settings import OutboundSettings

__all__ = ["AllowList", "Destinations", "FhirClient", "OutboundSettings", "pull_patient_bundle"]
