"""Shared by every loader of data files (mappings, topics, legal bases, hospitals, clients): marshmallow's
nested error messages as lines a person can act on, naming the field path.

>>> field_errors({"resources": {0: {"type": ["Missing data for required field."]}}})
['resources[0].type: Missing data for required field.']
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from marshmallow import Schema, ValidationError


def bundled(*parts: str) -> Path:
    """A data file or folder shipped inside the package (``gateway/data``: the mappings and the demo data), found
    through importlib.resources so that an installed gateway works from any working folder.

    pip installs packages as folders, never zipped, so the resource is a real path.
    """
    return Path(str(resources.files("gateway").joinpath("data", *parts))).resolve()


BUNDLED_MAPPINGS = bundled("mappings")  # the default GATEWAY_MAPPINGS_PATH


def load_yaml_file(path: Path, schema: Schema, error: type[Exception], *, label: str | None = None,
                   top: str = "(top level)", expected: str = "a YAML mapping") -> dict:
    """Read one YAML data file and load it with ``schema``; ``error`` says what is wrong and where.

    ``label`` names the file in messages (default: its path): 'topics/a.yaml: triggers[0]: Must be one of ...'.
    """
    label = label or str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{label}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise error(f"{label}: {top}: expected {expected}")
    try:
        return schema.load(raw)
    except ValidationError as exc:
        raise error("; ".join(f"{label}: {m}" for m in field_errors(exc.messages, top=top))) from None


# Schema attribute names that differ from the key written in the file.
_RENAMED = {"from_": "from", "fields_": "fields"}


def field_errors(messages: object, prefix: str = "", *, top: str = "(top level)") -> list[str]:
    """marshmallow ``ValidationError.messages`` -> ['field.path[0].name: message', ...]."""
    out: list[str] = []
    if isinstance(messages, dict):
        for k, v in messages.items():
            k = _RENAMED.get(k, k) if isinstance(k, str) else k
            if k == "_schema":
                out.extend(field_errors(v, prefix, top=top))
            elif isinstance(k, int):
                out.extend(field_errors(v, f"{prefix}[{k}]", top=top))
            else:
                out.extend(field_errors(v, f"{prefix}.{k}" if prefix else str(k), top=top))
    elif isinstance(messages, list):
        for m in messages:
            out.extend(field_errors(m, prefix, top=top))
    else:
        out.append(f"{prefix or top}: {messages}")
    return out
