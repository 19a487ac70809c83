"""``gateway rematch``: run the automatic flows (alerts and research-team proposals) from the change feed."""

from __future__ import annotations

import os

import click
from flask import Flask
from tqdm import tqdm

from gateway.config import Settings
from gateway.matching.state import MatchingState
from gateway.matching.terms import default_terminology
from gateway.notify.flows import CURSOR, AutomaticFlows, counter
from gateway.notify.policy import Policy, load_legal_bases, load_optout
from gateway.outbound.destinations import Destinations
from gateway.store import feed


def build_flows(app: Flask) -> AutomaticFlows:
    """The automatic flows over a fully wired app (its service runs every write hook, e.g. the outbox)."""
    settings: Settings = app.config["SETTINGS"]
    store = app.extensions["gateway.store"]
    destinations: Destinations = app.extensions["gateway.outbound"]

    def fetch(url: str) -> str:
        destinations.settings.allowed_hosts.check(url)
        resp = destinations.session.get(url, timeout=(5, 30), allow_redirects=False)
        resp.raise_for_status()
        return resp.text

    policy = Policy(load_legal_bases(settings.mappings_path / "legal-bases"),
                    load_optout(os.environ.get("GATEWAY_NATIONAL_OPTOUT"), fetch))
    return AutomaticFlows(store, app.extensions["gateway.service"], MatchingState(store, default_terminology()),
                          policy, destinations, max_attempts=destinations.settings.max_attempts)


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
    from gateway.api.app import create_app

    flows = build_flows(create_app(Settings.from_env()))
    if full:
        upto = counter(flows.store, "changes")  # the feed position the full run covers
        flows.state.refresh()
        total = sum(1 for sc in flows.state.studies.studies.values() if sc.status == "active")
        with tqdm(total=total, unit="study", disable=quiet) as bar:
            stats = flows.full(progress=bar.update)
        feed.advance(flows.store, CURSOR, upto)
    else:
        stats = flows.tick()
    click.echo(stats.summary())
