"""The outbox worker: claim due jobs, deliver each with its kind's function, record the attempt.

Any number of worker processes may run against one database. A failure is retried with
exponential backoff and jitter (honouring Retry-After) until ``max_attempts``; a permanent error
(a 4xx other than 408/429, a configuration error, an unknown kind) makes the job ``dead`` at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.observability import metrics
from gateway.outbound import outbox
from gateway.outbound.errors import OutboundError
from gateway.outbound.kinds import DeliverFn, DeliveryContext

log = logging.getLogger("gateway.outbound.worker")


@dataclass
class Worker:
    ctx: DeliveryContext
    # kind name -> deliver function: what this worker can deliver (gateway/compose.py joins every part's kinds)
    handlers: Mapping[str, DeliverFn] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    batch: int = 10
    kinds: tuple[str, ...] = ()  # claim only these kinds (default: every kind)
    # Periodic work run between rounds (notify: automatic flows from the change feed, heartbeats).
    ticks: tuple[Callable[[], object], ...] = ()

    def run_once(self) -> int:
        """Claim and deliver one batch; -> how many jobs were processed.

        Results are recorded together (one commit per batch), or earlier when half the lease has gone,
        so a slow destination cannot make our claims expire under us.
        """
        s = self.ctx.settings
        jobs = outbox.claim(self.ctx.store, self.name, limit=self.batch, lease_seconds=s.lease_seconds,
                            kinds=self.kinds)
        claimed_at = time.monotonic()
        pending: list[outbox.Outcome] = []
        for job in jobs:
            pending.append(self.attempt(job))
            if time.monotonic() - claimed_at > s.lease_seconds / 2:
                outbox.finish_many(self.ctx.store, self.name, pending)
                pending = []
        if pending:
            outbox.finish_many(self.ctx.store, self.name, pending)
        return len(jobs)

    def run_until_idle(self, max_rounds: int = 1000) -> int:
        """Deliver until nothing is due (tests, ``gateway worker --once``); -> jobs processed."""
        total = 0
        for _ in range(max_rounds):
            n = self.run_once()
            if n == 0:
                break
            total += n
        return total

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; when idle, wait ``poll_seconds`` or until a job is committed (PostgreSQL
        NOTIFY, see ``outbox.Listener``), whichever comes first."""
        listener = outbox.Listener(self.ctx.store.engine)
        log.info("worker %s started (%s)", self.name,
                 "LISTEN/NOTIFY, poll as fallback" if listener.enabled else "polling")
        try:
            while not stop.is_set():
                self.run_ticks()
                if self.run_once() == 0:
                    listener.wait(self.ctx.settings.poll_seconds, stop)
        finally:
            listener.close()
        log.info("worker %s stopped", self.name)

    def run_ticks(self) -> None:
        for tick in self.ticks:
            try:
                tick()
            except Exception:  # a failing tick is logged and retried next round; it must not stop delivery
                log.exception("worker %s: periodic task %s failed", self.name, getattr(tick, "__name__", tick))

    def deliver(self, job: outbox.Job) -> str:
        """Deliver one claimed job and record it; -> its new state."""
        oc = self.attempt(job)
        outbox.finish_many(self.ctx.store, self.name, [oc])
        return {"delivered": "delivered", "retry": "pending"}.get(oc.outcome, "dead")

    def attempt(self, job: outbox.Job) -> outbox.Outcome:
        """Run the job's deliver function once; -> what to record (delivered, retry at, or dead)."""
        oc = self._attempt(job)
        metrics.DELIVERIES.labels(kind=job.kind, destination=metrics.destination_label(job.destination),
                                  outcome=oc.outcome).inc()
        return oc

    def _attempt(self, job: outbox.Job) -> outbox.Outcome:
        s = self.ctx.settings
        fn = self.handlers.get(job.kind)
        started = time.monotonic()
        if fn is None:
            return outbox.Outcome(job, "dead", error=f"unknown job kind '{job.kind}'")
        try:
            result = fn(job, self.ctx)
        except OutboundError as exc:
            error = f"{type(exc).__name__}: {exc.message}"
            if not exc.retryable or job.attempts >= job.max_attempts:
                why = "a permanent error" if not exc.retryable else f"{job.attempts} attempts"
                log.warning("job %s (%s -> %s) dead after %s: %s", job.id, job.kind, job.destination, why,
                            exc.message)
                return outbox.Outcome(job, "dead", status=exc.status, error=error)
            delay = outbox.backoff_seconds(job.attempts, s.backoff_base, s.backoff_max, exc.retry_after)
            log.info("job %s (%s -> %s) attempt %d failed (%s); retry in %.1fs", job.id, job.kind,
                     job.destination, job.attempts, type(exc).__name__, delay)
            return outbox.Outcome(job, "retry", status=exc.status, error=error, retry_at=outbox.iso_in(delay))
        except Exception as exc:  # a bug in a deliver function: record it in full and retry, never crash the loop
            log.exception("job %s (%s) raised", job.id, job.kind)
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"[:4000]
            if job.attempts >= job.max_attempts:
                return outbox.Outcome(job, "dead", error=error)
            delay = outbox.backoff_seconds(job.attempts, s.backoff_base, s.backoff_max)
            return outbox.Outcome(job, "retry", error=error, retry_at=outbox.iso_in(delay))
        log.info("job %s (%s -> %s) delivered in %.0f ms: %s", job.id, job.kind, job.destination,
                 (time.monotonic() - started) * 1000, result)
        return outbox.Outcome(job, "delivered", result=result)
