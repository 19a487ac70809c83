"""``gateway sites link --report``: which study sites in the store are linked to an NHS trust, and which are not."""

from __future__ import annotations

import json
from collections import Counter

import click

from gateway.cli import settings as cli_settings
from gateway.fhir.search import parse_search
from gateway.outbound.sitelink import TrustLinker
from gateway.store.engine import make_engine
from gateway.store.repo import Store


def register(cli: click.Group) -> None:
    cli.add_command(sites)


@click.group()
def sites() -> None:
    """Study sites (Locations) and the NHS trusts that run them."""


@sites.command("link")
@click.option("--report", is_flag=True, help="List every site that could not be linked, with the reason.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per site instead of text.")
def link(report: bool, as_json: bool) -> None:
    """Link every UK site Location to its trust's ODS code (open NHS trust list, mappings/geo) and count the
    results. Linking is computed when a contact request is routed; this command shows what it will find."""
    store = Store(make_engine(cli_settings().store.database_url))
    linker = TrustLinker.from_file()
    counts: Counter = Counter()
    offset = 0
    while True:
        q = parse_search("Location", [("_count", "500"), ("_offset", str(offset))], max_count=500)
        _, rows = store.search(q)
        if not rows:
            break
        offset += len(rows)
        for st in rows:
            loc = st.resource()
            country = ((loc.get("address") or {}).get("country") or "").strip().lower()
            if country and country not in ("united kingdom", "uk", "england", "gb"):
                counts["outside the UK"] += 1
                continue
            found = linker.link(loc)
            counts["linked" if found.ods else "not linked"] += 1
            if as_json:
                click.echo(json.dumps({"location": f"Location/{st.id}", "name": loc.get("name"), "ods": found.ods,
                                       "rule": found.rule, "why": found.why}))
            elif report and not found.ods:
                city = (loc.get("address") or {}).get("city") or ""
                click.echo(f"Location/{st.id}\t{loc.get('name') or ''}\t{city}\t{found.why}")
    click.echo(f"linked {counts['linked']}, not linked {counts['not linked']}, outside the UK "
               f"{counts['outside the UK']}", err=as_json)
