"""Mapping commands: ``gateway import --mapping NAME PATH...``, ``gateway mappings check|list``."""

from __future__ import annotations

import gc
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from tqdm import tqdm

from gateway.cli import settings as cli_settings
from gateway.compose import build, check_data_files
from gateway.fhir.errors import FhirError
from gateway.fhir.validate import validate_resource
from gateway.ingest import BULK_RECORDS_PER_TRANSACTION, ingest
from gateway.mapping import MappingFileError, MappingRegistry, PayloadError, UnknownMapping
from gateway.mapping.pipeline import default_workers, prepared_files
from gateway.mapping.registry import check_conceptmaps, mapping_files
from gateway.mapping.spec import load_mapping
from gateway.store.engine import background_checkpoints
from gateway.terminology.conceptmap import load_conceptmaps

_INPUT_SUFFIXES = (".json", ".csv", ".ndjson")


def register(cli: click.Group) -> None:
    cli.add_command(import_cmd)
    cli.add_command(mappings)


def _folder() -> Path:
    return cli_settings().mappings_path


def _inputs(paths: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*") if x.is_file() and x.suffix in _INPUT_SUFFIXES))
        else:
            out.append(p)
    return out


@click.command("import")
@click.option("--mapping", "mapping_name", required=True, help="Mapping name (a file mappings/NAME.yaml).")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--workers", type=click.IntRange(min=0), default=default_workers, show_default="CPUs - 1, at most 4",
              help="Processes that read, map and validate files while this one stores (0: all in this process).")
@click.option("--dry-run", is_flag=True, help="Store nothing: print per record what the mapping made of it (for "
              "eligibility criteria: each extracted characteristic with its source span and confidence, and the "
              "criteria left as text).")
def import_cmd(mapping_name: str, paths: tuple[Path, ...], quiet: bool, workers: int, dry_run: bool) -> None:
    """Import registry records or EHR extracts (files or folders) through a mapping.

    Each source record is stored atomically; a bad record is reported and never stops the others.
    Prints: created, updated, unchanged, rejected (with reasons). Exit status 1 if any was rejected.
    """
    folder = _folder().resolve()
    try:
        MappingRegistry(folder).get(mapping_name)  # a broken or unknown mapping fails here, before any work
    except (MappingFileError, UnknownMapping) as exc:
        raise click.ClickException(str(exc.args[0] if isinstance(exc, UnknownMapping) else exc)) from None
    if dry_run:
        from gateway.mapping.review import dry_run_report

        ok = True
        for path in _inputs(paths):
            for line, good in dry_run_report(folder, mapping_name, path):
                ok = ok and good
                click.echo(line)
        if not ok:
            sys.exit(1)
        return
    # Extraction results kept with the criteria text, reused while it is unchanged (docs/eligibility.md)
    from gateway.mapping.eligibility import cache as eligibility_cache

    settings = cli_settings()
    eligibility_cache.use_cache(settings.instance_path / "eligibility-cache.sqlite3")
    # a bare service: no write hooks (an import must not trigger side effects), the same pre-write transforms
    gw = build(settings, write_hooks=False, bulk=True)
    try:
        with background_checkpoints(gw.store.engine), _fewer_gc_collections():
            stats, reasons = _import_files(gw.service, folder, mapping_name, _inputs(paths), quiet, workers)
    finally:
        gw.close()
    click.echo(", ".join(f"{k} {stats.get(k, 0)}" for k in ("created", "updated", "unchanged", "rejected")))
    for reason in reasons[:100]:
        click.echo(f"  rejected: {reason}", err=True)
    if len(reasons) > 100:
        click.echo(f"  ... and {len(reasons) - 100} more", err=True)
    if stats["rejected"]:
        sys.exit(1)


@contextmanager
def _fewer_gc_collections() -> Iterator[None]:
    """An import allocates millions of short-lived dicts and lists, which reference counting frees (JSON holds no
    cycles). At the default thresholds the cycle collector ran every 700 allocations, rescanning the records
    in flight each time: a tenth of the storing process's time. Objects from start-up are frozen out of it."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def _import_files(service, folder: Path, mapping_name: str, files: list[Path], quiet: bool,
                  workers: int) -> tuple[Counter, list[str]]:
    """Map, validate and store every file's records, many records per database transaction (see ingest());
    mapping and validation run in ``workers`` processes ahead of the store (see gateway.mapping.pipeline)."""
    stats: Counter = Counter()
    reasons: list[str] = []
    where: dict[int, str] = {}  # id(record) -> file name, for messages about rejected records

    with tqdm(total=len(files), unit="record", disable=quiet, file=sys.stderr) as bar:
        def records():
            last = None
            for path, recs in prepared_files(folder, mapping_name, files, workers):
                if isinstance(recs, PayloadError):
                    stats["rejected"] += 1
                    reasons.append(f"{path}: {recs}")
                    bar.update(1)
                    continue
                # progress counts records once a file is read (a large file comes in parts, one after the other)
                first = path != last
                last = path
                bar.total += len(recs) - (1 if first else 0)
                if first and not recs:
                    bar.update(1)
                for rec in recs:
                    where[id(rec)] = path.name
                    yield rec

        def done(rec, result) -> None:
            stats[result.outcome] += 1
            name = where.pop(id(rec), "?")
            for reason in result.reasons:
                reasons.append(f"{name} record {rec.index}{' (' + rec.source_id + ')' if rec.source_id else ''}: "
                               f"{reason}")
            bar.update(1)
            bar.set_postfix(created=stats["created"], rejected=stats["rejected"], refresh=False)

        ingest(service, records(), per_transaction=BULK_RECORDS_PER_TRANSACTION, on_result=done)
    return stats, reasons


@click.group()
def mappings() -> None:
    """Mapping files in GATEWAY_MAPPINGS_PATH (default ./mappings)."""


@mappings.command("check")
def check() -> None:
    """Load and check every data file start-up reads: mappings, ConceptMaps, lexicons, clients, hospitals, topics
    and legal bases; exit 1 with the problems (file and field) if any."""
    folder = _folder()
    problems: list[str] = []
    for path in mapping_files(folder):
        try:
            m = load_mapping(path)
            click.echo(f"ok  {path} ({m.name}: {', '.join(r.type for r in m.resources)})")
        except MappingFileError as exc:
            problems.extend(str(exc).splitlines())
    try:
        cms = load_conceptmaps(folder)
    except ValueError as exc:
        problems.append(f"{folder}: a ConceptMap file is not valid JSON: {exc}")
        cms = []
    for cm in cms:
        try:
            validate_resource(cm, "ConceptMap")
        except FhirError as exc:
            problems.append(f"ConceptMap {cm.get('url') or cm.get('id')}: {exc.diagnostics}")
    problems.extend(f"ConceptMap {p}" for p in check_conceptmaps(cms))
    click.echo(f"ok  {len(cms)} ConceptMap(s) under {folder}" if cms else f"no ConceptMaps under {folder}")
    # every other data file start-up reads (clients, hospitals, topics, legal bases, lexicons), as it reads them
    for what, found in check_data_files(cli_settings()).items():
        problems.extend(found)
        if not found:
            click.echo(f"ok  {what}")
    for p in problems:
        click.echo(f"error  {p}", err=True)
    if problems:
        sys.exit(1)


@mappings.command("list")
def list_cmd() -> None:
    """List the mappings (name, reader, resources made) and the ConceptMaps."""
    try:
        registry = MappingRegistry(_folder().resolve())
    except MappingFileError as exc:
        raise click.ClickException(f"{exc}\n(run 'gateway mappings check')") from None
    for name in registry.names():
        m = registry.get(name)
        click.echo(f"{name}\t{m.reader}\t{' + '.join(dict.fromkeys(r.type for r in m.resources))}\t"
                   f"{m.description}")
    for cm in registry.conceptmap_resources:
        click.echo(f"ConceptMap\t{cm.get('url')}\t{(cm.get('description') or '').splitlines()[0][:100]}")
