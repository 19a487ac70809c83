"""The mappings of one deployment: every mappings/*.yaml file and every ConceptMap under mappings/**.

Loaded once (app start-up, CLI start) and cached; a broken file fails loudly with MappingFileError.

>>> reg = MappingRegistry(Path("mappings"))
>>> reg.names()
['ctgov-v2', 'problem-list']
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from gateway.datafiles import BUNDLED_MAPPINGS
from gateway.mapping.spec import Mapping, MappingFileError, load_mapping
from gateway.terminology.conceptmap import ConceptMapIndex, load_conceptmaps

PROJECT_MAPPINGS = BUNDLED_MAPPINGS  # the shipped mappings, package data (gateway/datafiles.py)


class UnknownMapping(KeyError):
    """No mapping file of that name."""


def mapping_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []


def check_conceptmaps(conceptmaps: list[dict]) -> list[str]:
    """Problems that make a ConceptMap unusable for translation (empty list when all are fine)."""
    problems = []
    for cm in conceptmaps:
        label = cm.get("url") or cm.get("id") or "(a ConceptMap without url)"
        if not cm.get("url"):
            problems.append(f"{label}: url is missing ($translate?url= needs it)")
        if not cm.get("description"):
            problems.append(f"{label}: description is missing (say what the map is for)")
        for gi, group in enumerate(cm.get("group") or []):
            if not group.get("source") or not group.get("target"):
                problems.append(f"{label}: group[{gi}] needs source and target code systems")
    return problems


class MappingRegistry:
    """Loaded mapping files by name, plus a ConceptMapIndex over every ConceptMap JSON below ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        errors: list[str] = []
        self.mappings: dict[str, Mapping] = {}
        for path in mapping_files(folder):
            try:
                m = load_mapping(path)
            except MappingFileError as exc:
                errors.append(str(exc))
                continue
            self.mappings[m.name] = m
        try:
            self.conceptmap_resources = load_conceptmaps(folder)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            errors.append(f"{folder}: a ConceptMap file is not valid JSON: {exc}")
            self.conceptmap_resources = []
        errors.extend(f"{folder}: ConceptMap {p}" for p in check_conceptmaps(self.conceptmap_resources))
        if errors:
            raise MappingFileError("\n".join(errors))
        self.conceptmaps = ConceptMapIndex(self.conceptmap_resources)

    def names(self) -> list[str]:
        return sorted(self.mappings)

    def get(self, name: str) -> Mapping:
        try:
            return self.mappings[name]
        except KeyError:
            raise UnknownMapping(f"no mapping named '{name}' (known: {', '.join(self.names()) or 'none'})") from None


@lru_cache(maxsize=8)
def registry_for(folder: str) -> MappingRegistry:
    """Cached registry per folder (mapping files are read once per process)."""
    return MappingRegistry(Path(folder).resolve())


def default_registry() -> MappingRegistry:
    return registry_for(str(PROJECT_MAPPINGS))
