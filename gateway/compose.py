"""The composition root: the one place the gateway's parts are put together, from one settings object.

Every process is assembled here, the same way: ``create_app`` (the HTTP API) builds on ``build()``; the CLI
commands and ``gateway worker`` call it directly and never create a Flask app. Nothing here imports Flask.

The graph: engine (migrated) -> store -> FhirService (pre-write transforms, then the write hooks, in the one
ordered list ``WRITE_HOOKS`` names) -> hospital destinations (outbound client) -> job kinds -> worker; the
terminology and the matching state (built on first use); the automatic flows and their consent gate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import Settings
from gateway.datafiles import bundled
from gateway.mapping import MappingFileError
from gateway.mapping.eligibility import annotate_pushed_group
from gateway.notify import delivery
from gateway.notify.policy import LegalBasisFileError
from gateway.notify.topics import Topic, TopicFileError, load_topics
from gateway.outbound import contact
from gateway.outbound.destinations import Destinations
from gateway.outbound.hospitals import HospitalFileError
from gateway.outbound.kinds import DeliverFn, DeliveryContext
from gateway.outbound.settings import OutboundSettings
from gateway.security import guards
from gateway.security.clients import ClientConfigError, ClientRegistry, load_clients
from gateway.store.engine import make_engine
from gateway.store.interactions import FhirService, WriteHook
from gateway.store.repo import Store
from gateway.store.schema import migrate
from gateway.terminology.lexicons import LexiconError

# Errors a data file or a setting can raise while the graph is built: each says which file (or variable) and
# which field, in one line. Entry points turn them into that line and exit code 1 (``startup_error``).
STARTUP_ERRORS: tuple[type[Exception], ...] = (ClientConfigError, HospitalFileError, TopicFileError,
                                               LegalBasisFileError, LexiconError, MappingFileError)

# The store's write hooks, in the order they run inside every write transaction (before the commit). Each entry
# names a factory ``(gateway) -> hook``. Order matters: a write the caller may not make rolls back before
# anything is queued; a Subscription is checked before the outbox takes anything.
WRITE_HOOKS: tuple[tuple[str, Callable[[Gateway], WriteHook]], ...] = (
    ("security: the caller may make this write (no-op outside a request)", lambda gw: guards.write_guard),
    ("notify: Subscription checks and handshake", lambda gw: gw.subscription_hook()),
    ("outbound: contact requests queued for the hospital", lambda gw: contact.make_hook(gw.destinations)),
)

DEMO_PATH = bundled("demo")  # the demo story's data (gateway serve --demo), shipped with the package


@dataclass
class Gateway:
    """The service graph of one process. Build it with ``build(settings)``; ``close()`` releases the database."""

    settings: Settings
    store: Store
    service: FhirService
    destinations: Destinations
    topics: dict[str, Topic]
    clients: ClientRegistry  # who may call the API (empty: development mode)
    _matching: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def outbound(self) -> OutboundSettings:
        return self.destinations.settings

    # -- parts built on first use (a CLI command that does not need them does not pay for them) ----------
    def matching(self):
        """The matching state (patient and study indexes over the terminology), built once, on first use."""
        from gateway.matching.state import MatchingState
        from gateway.matching.terms import default_terminology

        if self._matching is None:
            with self._lock:
                if self._matching is None:
                    self._matching = MatchingState(self.store, default_terminology())
        return self._matching

    def subscription_hook(self) -> WriteHook:
        from gateway.notify.hooks import subscription_hook

        return subscription_hook(self.topics, self.outbound.allowed_hosts.allows, self.outbound.max_attempts)

    def job_kinds(self) -> dict[str, DeliverFn]:
        """Every job kind this gateway delivers: contact requests and Subscription notifications."""
        config = delivery.DeliveryConfig(base_url=self.settings.base_url, topics=self.topics,
                                         error_after=self.settings.notify.subscription_error_after)
        return {**contact.JOB_KINDS, **delivery.job_kinds(config)}

    def delivery_context(self) -> DeliveryContext:
        return DeliveryContext(store=self.store, destinations=self.destinations, settings=self.outbound)

    def worker(self, *, batch: int = 10, kinds: tuple[str, ...] = (), name: str | None = None):
        """An outbox worker over this graph, delivering ``kinds`` (default: every kind)."""
        # imported here: the worker's metrics must not be created in gunicorn's master (multiprocess mode)
        from gateway.outbound.worker import Worker

        extra = {"name": name} if name else {}
        return Worker(self.delivery_context(), handlers=self.job_kinds(), batch=batch, kinds=kinds, **extra)

    def policy(self):
        """The consent gate of the automatic flows: legal bases from the mappings, the national data opt-out
        (GATEWAY_NATIONAL_OPTOUT: a file, or a URL read through the outbound session and its allow-list)."""
        from gateway.notify.policy import Policy, load_legal_bases, load_optout

        # the one outbound transport: allow-list, timeouts, no redirects, typed errors, retries, log line
        fetch = self.destinations.http(retries=self.outbound.client_retries).get_text
        return Policy(load_legal_bases(self.settings.mappings_path / "legal-bases"),
                      load_optout(self.settings.notify.national_optout, fetch))

    def flows(self):
        """The automatic flows (alerts, research-team proposals) over this graph's service and write hooks."""
        from gateway.notify.flows import AutomaticFlows

        return AutomaticFlows(self.store, self.service, self.matching(), self.policy(), self.destinations,
                              max_attempts=self.outbound.max_attempts)

    def close(self) -> None:
        """Close pooled database connections (PostgreSQL) before the process exits."""
        self.store.engine.dispose()
        if getattr(self.store, "read_engine", None) is not None:
            self.store.read_engine.dispose()


def build(settings: Settings, *, write_hooks: bool = True, bulk: bool = False) -> Gateway:
    """The service graph from ``settings``: migrate the database, then wire every part.

    ``write_hooks=False``: a bare service without side effects (``gateway import`` stores mapped records; the
    pre-write transforms still run). ``bulk``: the engine is tuned for one process writing a lot (make_engine).
    """
    engine = make_engine(settings.store.database_url, echo=settings.store.sql_echo, bulk=bulk)
    migrate(engine)
    # GATEWAY_READ_DATABASE_URL: a streaming replica for reads (the API routes replica-safe requests to it)
    store = Store(engine, read_engine=make_engine(settings.store.read_database_url, echo=settings.store.sql_echo,
                                                        read_only=True)
                  ) if settings.store.read_database_url else Store(engine)
    # matching's derived rows (studies, people), kept in every writing transaction (any process may write)
    _install_store_hooks(store)
    # pre-write transform: a sponsor's eligibility Group gets its criteria text extracted (docs/eligibility.md)
    service = FhirService(store, max_bundle_entries=settings.max_bundle_entries, transforms=[annotate_pushed_group])
    try:
        # every data file the process reads is loaded here, so a broken one stops any process at start-up
        gw = Gateway(settings=settings, store=store, service=service,
                     destinations=Destinations(settings.outbound_settings()),
                     topics=load_topics(settings.mappings_path / "topics"),
                     clients=load_clients(settings.security.clients_path))
    except BaseException:
        engine.dispose()
        raise
    if write_hooks:
        service.hooks[:] = [make(gw) for _, make in WRITE_HOOKS]
        # Before any If-Match check: another's resource is answered like a missing one (no existence oracle);
        # conditional searches match only what the caller may see. Both are no-ops outside a request.
        service.guards.append(guards.existing_guard)
        service.visibility = guards.caller_view
    return gw


def _install_store_hooks(store: Store) -> None:
    """Store-level write hooks (``Store.write_hooks``: once per transaction, with every (type, id) it wrote), which
    keep derived rows current: a study's pre-computed matching row, then a person's profile
    (gateway.matching.hooks)."""
    from gateway.matching.hooks import install_derived_rows
    from gateway.matching.terms import default_terminology

    install_derived_rows(store, default_terminology)


def check_data_files(settings: Settings) -> dict[str, list[str]]:
    """Load every data file the settings name, as start-up does; -> {what: [one line per problem]}, each line
    naming the file and the field. Clients, hospitals, topics, legal bases, lexicons and a national opt-out file;
    ``gateway mappings check`` adds the mapping files and ConceptMaps.
    """
    from gateway.notify.policy import load_legal_bases, load_optout
    from gateway.outbound.hospitals import load_hospitals
    from gateway.security.clients import load_clients
    from gateway.terminology.lexicons import check_lexicons

    outbound = settings.outbound_settings()
    clients = settings.security.clients_path
    lexicons = settings.mappings_path / "lexicons"
    checks: dict[str, Callable[[], object]] = {
        f"clients under {clients}" if clients else "clients (none: development mode)": lambda: load_clients(clients),
        f"hospitals under {outbound.hospitals_path}": lambda: load_hospitals(Path(outbound.hospitals_path or "")),
        f"topics under {settings.mappings_path / 'topics'}": lambda: load_topics(settings.mappings_path / "topics"),
        f"legal bases under {settings.mappings_path / 'legal-bases'}":
            lambda: load_legal_bases(settings.mappings_path / "legal-bases"),
    }
    if lexicons.is_dir():
        checks[f"lexicons under {lexicons}"] = lambda: _raise_all(check_lexicons(lexicons))
    source = settings.notify.national_optout
    if source and not source.startswith(("http://", "https://")):  # a URL is read by the worker, not here
        checks[f"national opt-out list {source}"] = lambda: load_optout(source)
    found: dict[str, list[str]] = {}
    for what, load in checks.items():
        try:
            load()
            found[what] = []
        except (*STARTUP_ERRORS, OSError, ValueError) as exc:
            found[what] = [line for line in str(exc).split("; ") if line]
    return found


def _raise_all(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))


def startup_error(exc: BaseException, who: str = "gateway") -> SystemExit:
    """A data file or setting error as the one line an operator reads, and exit code 1."""
    return SystemExit(f"{who}: {exc}")
