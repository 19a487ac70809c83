"""``gateway rematch``: run the automatic flows (alerts and research-team proposals) from the change feed."""

from __future__ import annotations

import click
from tqdm import tqdm

from gateway.cli import settings
from gateway.compose import build
from gateway.notify.flows import CURSOR, counter
from gateway.store import feed


def register(cli: click.Group) -> None:
    cli.add_command(rematch)


@click.command()
@click.option("--full", is_flag=True, help="Every recruiting study against everyone, not only what changed.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def rematch(full: bool, quiet: bool) -> None:
    """Match what changed since the last run (as MatchMiner does) and act on new matches.

    New matches get an alert (trial-alerts consent and a subscription) and a proposal to the research team
    (HRESCH consent or a legal basis, never against the national data opt-out); nobody is told twice.
    """
    gw = build(settings())  # every write hook runs (e.g. the outbox), as for a request
    try:
        flows = gw.flows()
        if full:
            upto = counter(flows.store, "changes")  # the feed position the full run covers
            flows.state.refresh()
            total = sum(1 for sc in flows.state.studies.studies.values() if sc.status == "active")
            with tqdm(total=total, unit="study", disable=quiet) as bar:
                stats = flows.full(progress=bar.update)
            feed.advance(flows.store, CURSOR, upto)
        else:
            stats = flows.tick()
    finally:
        gw.close()
    click.echo(stats.summary())
