"""Outbox commands: ``gateway worker`` (run any number) and ``gateway outbox list|retry|purge-delivered``."""

from __future__ import annotations

import logging
import signal
import threading
import time

import click
from prometheus_client import start_http_server

from gateway.cli import settings as cli_settings
from gateway.compose import build
from gateway.notify import delivery
from gateway.observability import logs, metrics
from gateway.outbound import outbox
from gateway.store.engine import make_engine
from gateway.store.repo import Store
from gateway.store.schema import migrate

log = logging.getLogger("gateway.worker")


def register(cli: click.Group) -> None:
    cli.add_command(worker)
    cli.add_command(outbox_group)


def _store() -> Store:
    """The store alone (outbox list, retry, purge): no hospital files, topics or hooks needed."""
    settings = cli_settings()
    engine = make_engine(settings.store.database_url)
    migrate(engine)
    return Store(engine)


@click.command()
@click.option("--once", is_flag=True, help="Deliver everything due now, then exit.")
@click.option("--batch", default=10, show_default=True, help="Jobs claimed per round.")
@click.option("--kind", "kinds", multiple=True, help="Only these job kinds (repeatable); default all.")
@click.option("--flows/--no-flows", default=True, show_default=True,
              help="Also run the automatic flows (alerts, research-team proposals) and subscription heartbeats.")
def worker(once: bool, batch: int, kinds: tuple[str, ...], flows: bool) -> None:
    """Deliver outbox jobs (ResearchSubjects to hospitals, notifications). Run as many as you like."""
    settings = cli_settings()
    logs.configure(settings.observability.log_level)  # JSON lines on stdout
    if not kinds or set(kinds) & set(delivery.KINDS):
        settings.require_base_url("gateway worker")  # notifications name this server: no silent default
    gw = build(settings)
    w = gw.worker(batch=batch, kinds=kinds)
    obs = settings.observability
    if obs.worker_metrics_port and not once:
        # this process's delivery counters and alert fan-out, for Prometheus (loopback unless configured)
        start_http_server(obs.worker_metrics_port, addr=obs.worker_metrics_host)
        log.info("worker metrics at http://%s:%d/metrics", obs.worker_metrics_host, obs.worker_metrics_port)
    if flows:
        auto = gw.flows()

        def automatic_flows() -> None:
            stats = auto.tick(owner=w.name)
            if stats.changes:
                metrics.ALERT_FANOUT.observe(stats.alerts)
                logging.getLogger("gateway.notify.flows").info("%s", stats.summary())

        last = [0.0]

        def heartbeats() -> None:
            if time.monotonic() - last[0] >= 5.0:  # periods are minutes or hours; no need to look every round
                last[0] = time.monotonic()
                delivery.enqueue_due_heartbeats(w.ctx.store, w.ctx.settings.max_attempts)

        w.ticks = (automatic_flows, heartbeats)
        if once:
            w.run_ticks()
    if once:
        n = w.run_until_idle()
        gw.close()
        click.echo(f"processed {n} job(s)")
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("worker %s polling every %ss", w.name, w.ctx.settings.poll_seconds)
    try:
        w.run(stop)
    finally:
        gw.close()


@click.group("outbox")
def outbox_group() -> None:
    """Inspect and manage the outbox."""


@outbox_group.command("list")
@click.option("--state", type=click.Choice(outbox.STATES))
@click.option("--resource", help="Type or Type/id, e.g. ResearchSubject/123.")
@click.option("--kind")
@click.option("--limit", default=50, show_default=True)
def list_cmd(state: str | None, resource: str | None, kind: str | None, limit: int) -> None:
    """List jobs, newest first."""
    store = _store()
    total, jobs = outbox.list_jobs(store, state=state, resource=resource, kind=kind, limit=limit)
    click.echo(f"{total} job(s); " + ", ".join(f"{k} {v}" for k, v in outbox.counts(store).items()))
    for j in jobs:
        err = (j.last_error or "").splitlines()[0][:100] if j.last_error else ""
        click.echo(f"{j.id}\t{j.state}\t{j.kind}\t{j.destination}\t{j.resource or '-'}"
                   f"\tattempts {j.attempts}/{j.max_attempts}\t{j.delivered_at or j.next_attempt_at}\t{err}")


@outbox_group.command("retry")
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--all-dead", is_flag=True, help="Retry every dead job.")
def retry_cmd(job_ids: tuple[int, ...], all_dead: bool) -> None:
    """Put dead jobs back in the queue with a fresh attempt budget."""
    if not job_ids and not all_dead:
        raise click.UsageError("give job ids or --all-dead")
    n = outbox.retry(_store(), list(job_ids), all_dead=all_dead)
    click.echo(f"requeued {n} job(s)")


@outbox_group.command("purge-delivered")
@click.option("--older-than", default=0.0, show_default=True, help="Seconds since delivery.")
def purge_cmd(older_than: float) -> None:
    """Delete delivered jobs and their attempt records."""
    click.echo(f"purged {outbox.purge_delivered(_store(), older_than)} delivered job(s)")
