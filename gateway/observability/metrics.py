"""Prometheus metrics (prometheus-client): what each process counts, and the text exposition of them.

Label values are bounded and never hold patient data: the route TEMPLATE (Flask's url rule, e.g.
``/fhir/<rtype>/<rid>``), never the raw path; the status code; a job kind; a destination's configured hospital
key or ``subscriber``; a mapping name. Under gunicorn (several processes) prometheus-client's multiprocess
mode is on when ``PROMETHEUS_MULTIPROC_DIR`` is set before this module is first imported (the shipped
gunicorn configuration does that), and ``exposition()`` merges every process's files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "REQUESTS", "REQUEST_SECONDS", "OPERATION_SECONDS", "DELIVERIES", "ALERT_FANOUT",
           "IMPORTS", "destination_label", "exposition", "multiprocess_mode"]

disable_created_metrics()  # no *_created series: they double the output and no dashboard of ours reads them
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter("gateway_http_requests", "HTTP requests answered, by method, route template and status",
                   ["method", "route", "status"])
REQUEST_SECONDS = Histogram("gateway_http_request_duration_seconds",
                            "Time to answer an HTTP request, by method, route template and status",
                            ["method", "route", "status"], buckets=_LATENCY)
OPERATION_SECONDS = Histogram("gateway_operation_duration_seconds",
                              "Time to answer a matching operation ($match, $candidates), by operation and status",
                              ["operation", "status"], buckets=_LATENCY)
DELIVERIES = Counter("gateway_outbox_deliveries", "Outbox delivery attempts by job kind, destination and outcome "
                     "(delivered, retry = a failure to be retried, dead = a failure given up)",
                     ["kind", "destination", "outcome"])
ALERT_FANOUT = Histogram("gateway_alert_fanout", "Alerts (notifications) enqueued by one round of the automatic "
                         "flows that found changes", buckets=(0, 1, 2, 5, 10, 25, 50, 100, 250, 1000))
IMPORTS = Counter("gateway_import_records", "Records imported through POST /ingest/<mapping>, by mapping and "
                  "outcome (created, updated, unchanged, rejected)", ["mapping", "outcome"])

_SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
OPERATIONS = frozenset({("ResearchStudy", "match"), ("ResearchStudy", "candidates")})


def destination_label(destination: str) -> str:
    """An outbox destination as a label: the configured hospital key; every subscription is ``subscriber``.

    >>> destination_label("leeds"), destination_label("Subscription/4f1c"), destination_label("a b")
    ('leeds', 'subscriber', 'other')
    """
    if destination.startswith("Subscription/"):
        return "subscriber"
    return destination if _SAFE_LABEL.match(destination) else "other"


def mapping_label(name: str) -> str:
    return name if _SAFE_LABEL.match(name) else "other"


def operation_label(rtype: str | None, name: str) -> str | None:
    """('ResearchStudy', 'match') -> 'ResearchStudy/$match'; None for operations we do not time."""
    return f"{rtype}/${name}" if (rtype, name) in OPERATIONS else None


def multiprocess_mode() -> bool:
    """Whether prometheus-client chose its multiprocess mode, which the library decides from the environment
    (``PROMETHEUS_MULTIPROC_DIR``) when it is first imported: asked of the library, not re-read here."""
    return values.ValueClass is not values.MutexValue


class _Fresh(Collector):
    """Metrics computed when scraped (e.g. from the database); ``produce`` yields metric families."""

    def __init__(self, produce: Callable[[], Iterable[Metric]]):
        self.produce = produce

    def collect(self) -> Iterable[Metric]:
        return list(self.produce())


def exposition(extra: Callable[[], Iterable[Metric]] | None = None) -> bytes:
    """The text format: this process's metrics (or every process's, in multiprocess mode), then ``extra``."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # the library reads its folder from the environment
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if extra is not None:
        fresh = CollectorRegistry()
        fresh.register(_Fresh(extra))
        body += generate_latest(fresh)
    return body
