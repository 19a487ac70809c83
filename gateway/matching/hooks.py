"""The store write hooks that keep matching's derived rows current in the writing transaction: a study's
pre-computed row (studies.StudyRows), then a person's profile (people.People), in that order, so that people
are indexed with the hierarchies the studies taught.

The composition root installs them in every process (gateway.compose.build), so any writer (API, CLI, worker)
keeps the rows current from its first write; a MatchingState built later replaces each with its own.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.matching import people, studies
from gateway.matching.terms import Terminology
from gateway.store.repo import Store, Tx


def install_derived_rows(store: Store, term: Callable[[], Terminology]) -> None:
    """Register both hooks on ``store``; ``term`` is loaded on the first write that concerns each of them."""
    for name, types, keeper in ((studies.HOOK, studies.STUDY_TYPES, studies.StudyRows),
                                (people.HOOK, people.PERSON_TYPES, people.People)):
        _install_lazy(store, name, frozenset(types), lambda keeper=keeper: keeper(store, term()))


def _install_lazy(store: Store, name: str, types: frozenset[str], make: Callable[[], object]) -> None:
    """A hook that builds its keeper on the first transaction touching ``types`` (a process that never writes
    them never loads the terminology for it); a keeper already installed under ``name`` is kept."""
    box: list = []

    def hook(tx: Tx, touched: list[tuple[str, str]]) -> None:
        if not any(t in types for t, _ in touched):
            return
        if not box:
            box.append(make())
        box[0]._on_write(tx, touched)

    store.write_hooks.setdefault(name, hook)
