"""Subscription topics as data (mappings/topics/*.yaml), validated on load.

A topic is what an R4 backport Subscription names in ``criteria``; its filters are the only
parameters a ``backport-filter-criteria`` may use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from marshmallow import RAISE, Schema, fields, validate

from gateway.datafiles import load_yaml_file

TRIGGERS = ("create", "update", "delete", "becomes-recruiting", "status-change")


class TopicFileError(ValueError):
    """A topic file is broken: the message names the file, the field and what was expected."""


class _FilterSchema(Schema):
    class Meta:
        unknown = RAISE

    parameter = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9-]*$"))
    type = fields.String(required=True, validate=validate.OneOf(["reference", "token", "number"]))
    target = fields.String()
    required = fields.Boolean(load_default=False)
    description = fields.String(load_default="")


class _TopicSchema(Schema):
    class Meta:
        unknown = RAISE

    url = fields.Url(required=True, schemes={"http", "https"})
    title = fields.String(required=True)
    description = fields.String(load_default="")
    resource = fields.String(required=True, validate=validate.Regexp(r"^[A-Z][A-Za-z]+$"))
    triggers = fields.List(fields.String(validate=validate.OneOf(TRIGGERS)), required=True,
                           validate=validate.Length(min=1))
    filters = fields.List(fields.Nested(_FilterSchema), load_default=list)


@dataclass(frozen=True)
class TopicFilter:
    parameter: str
    type: str
    target: str | None
    required: bool
    description: str


@dataclass(frozen=True)
class Topic:
    url: str
    title: str
    description: str
    resource: str
    triggers: tuple[str, ...]
    filters: tuple[TopicFilter, ...]

    def filter(self, name: str) -> TopicFilter | None:
        return next((f for f in self.filters if f.parameter == name), None)


def load_topic_file(path: Path) -> Topic:
    """Parse and validate one topic file; TopicFileError names the file and the field."""
    data = load_yaml_file(path, _TopicSchema(), TopicFileError, expected="a mapping of topic fields")
    filters = tuple(TopicFilter(f["parameter"], f["type"], f.get("target"), f["required"], f["description"])
                    for f in data["filters"])
    for i, f in enumerate(filters):
        if f.type == "reference" and not f.target:
            raise TopicFileError(f"{path}: filters.{i}.target: a reference filter needs a target resource type")
    return Topic(data["url"], data["title"], data["description"], data["resource"], tuple(data["triggers"]),
                 filters)


def load_topics(folder: Path) -> dict[str, Topic]:
    """All topics in ``folder`` keyed by canonical URL; duplicate URLs are an error."""
    topics: dict[str, Topic] = {}
    for path in sorted(folder.glob("*.yaml")):
        topic = load_topic_file(path)
        if topic.url in topics:
            raise TopicFileError(f"{path}: url: {topic.url} is already defined by another topic file")
        topics[topic.url] = topic
    return topics


@cache
def default_topics(folder: str = "mappings/topics") -> dict[str, Topic]:
    return load_topics(Path(folder))
