"""Split eligibility text (ClinicalTrials.gov markdown, or a sponsor's verbatim criteria) into criteria.

One criterion = a top-level item with its continuation lines and nested sub-items ("Adequate organ function:"
followed by bullets is one criterion). Headings ("Inclusion Criteria:", "Key Exclusion Criteria") switch the
section. Offsets index the original text, so ``text[c.start:c.end] == c.text``.

>>> [(c.section, c.text) for c in split_criteria("Inclusion Criteria:\\n\\n* Age >= 18\\n* ECOG 0-1\\n\\n"
...                                            "Exclusion Criteria:\\n\\n* Pregnant")]
[('inclusion', 'Age >= 18'), ('inclusion', 'ECOG 0-1'), ('exclusion', 'Pregnant')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(
    r"^\s*(?:#+\s*)?(?:\*\*)?\s*(?:[a-z0-9/&()'’.,-]+\s+){0,5}?(inclusion|exclusion)s?(?:\s+criteria)?"
    r"(?:\s+(?:include|are|for|in|of|\(?[a-z0-9/&'’.,-]+\)?)){0,6}\s*(?:\*\*)?\s*[:\-–—]*\s*(?:\*\*)?\s*$",
    re.IGNORECASE)
_ELIGIBILITY_HEADING = re.compile(r"^\s*(?:[a-z0-9/&()'’.,-]+\s+){0,3}?(?:eligibility|entry|enrol+ment)\s+criteria"
                                  r"(?:\s+[a-z0-9/&()'’.,-]+){0,5}\s*[:\-–—]*\s*$", re.IGNORECASE)
# A numbered or lettered section heading ('2. Exclusion Criteria at the Pre-Screening Enrollment', '2) Exclusion
# criteria:'): the number is the section's, not an item's.
_SECTION_NUMBER = re.compile(r"^\s*(?:#+\s*)?(?:\*\*)?\s*(?:\d{1,2}(?:\.\d{1,2})*[.)]?|[a-z][.)]|[ivx]{1,4}[.)])\s+",
                             re.IGNORECASE)
# 'Exclusion Criteria (applicable to all participants and all parts unless otherwise specified):': a heading with a
# parenthetical note of any length, or a few words of scope after 'criteria'.
_HEADING_NOTE = re.compile(
    r"^\s*(?:\*\*)?\s*(?:(?:key|main|major|general|additional|other|specific|study|trial)\s+)?"
    r"(inclusion|exclusion)s?\s+criteria\b(?:\s+[a-z0-9/&'’.,-]+){0,8}?\s*(?:\([^()]{0,160}\))?\s*(?:\*\*)?"
    r"\s*[:\-–—]*\s*(?:\*\*)?\s*$", re.IGNORECASE)
_BULLET = re.compile(r"^(\s*)(?:[*\-•·‣◦▪]|\d{1,2}[.)]|\(?[a-z]\)|\(?[ivx]{1,4}\)|\(\d{1,2}\))\s+")
_NOISE = re.compile(r"^\s*(?:<!--.*-->|\\?-|or|and|none|n/a)\s*$", re.IGNORECASE)
# A parent whose sub-items are alternatives: its findings can never be hard rules.
_COHORT = re.compile(r"\b(?:for|cohorts?|parts?|phase|arms?|groups?|strat\w*|sub-?stud\w*|specific|only|module|"
                     r"expansion|escalation|step|donors?|controls?|volunteers?)\b", re.IGNORECASE)
_ALTERNATIVES = re.compile(r"\b(?:one of the following|any of the following|at least one of|either\b|one or more of)",
                           re.IGNORECASE)


@dataclass(frozen=True)
class Criterion:
    """One criterion: its verbatim text, offsets into the eligibility text, section and nesting facts."""

    text: str
    start: int
    end: int
    section: str  # inclusion | exclusion
    heading: str | None = None  # the sub-heading above it ('Renal function:'), if any
    alternatives: bool = False  # a parent whose sub-items are alternatives ('one of the following:')
    index: int = 0
    cohort: bool = False  # under a heading for one cohort, part or arm only ('Inclusion criteria for cohort 5:')
    stated: bool = True  # the section comes from a heading in the text (False: before any heading, assumed inclusion)


@dataclass
class _Open:
    start: int
    end: int
    indent: int
    section: str
    heading: str | None
    stated: bool = True


def _lines(text: str) -> list[tuple[int, int, str]]:
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, pos + len(line), line))
        pos += len(line) + 1
    return out


def _section_heading(line: str) -> str | None:
    """'inclusion' / 'exclusion' when the line is a section heading, else None."""
    stripped = line.strip()
    if len(stripped) > 200 or stripped.endswith(".") and not stripped.endswith("..."):
        return None
    number = _SECTION_NUMBER.match(line)
    body = line[number.end():] if number else line
    if len(body.strip()) <= 80 and (number or not _BULLET.match(line)):
        m = _HEADING.match(body)
        if m:
            return m.group(1).lower()
    m = _HEADING_NOTE.match(body)
    if m and (number or not _BULLET.match(line)):
        return m.group(1).lower()
    if len(stripped) <= 80 and not _BULLET.match(line) and _ELIGIBILITY_HEADING.match(line):
        return "inclusion"
    return None


def split_criteria(text: str) -> list[Criterion]:
    """The criteria of an eligibility text, in order (see the module docstring)."""
    section = "inclusion"
    stated = False
    cohort = False
    heading: str | None = None
    out: list[Criterion] = []
    current: _Open | None = None
    blank_after = False

    def close() -> None:
        nonlocal current
        if current is not None:
            raw = text[current.start:current.end]
            trimmed = raw.rstrip()
            lead = len(raw) - len(raw.lstrip())
            body = trimmed[lead:]
            if body and not _NOISE.match(body):
                first_line = body.split("\n", 1)[0]
                alt = bool(_ALTERNATIVES.search(first_line)) and "\n" in body
                out.append(Criterion(body, current.start + lead, current.start + lead + len(body), current.section,
                                     current.heading, alt, len(out), cohort or bool(current.heading and
                                                                               _COHORT.search(current.heading)),
                                     current.stated))
        current = None

    for start, end, line in _lines(text):
        stripped = line.strip()
        if not stripped:
            blank_after = current is not None
            continue
        found = _section_heading(line)
        if found:
            close()
            section = found
            stated = True
            # a note that the heading covers everyone ('(applicable to all participants and all parts)') is no cohort
            scope = re.sub(r"\([^()]*\b(?:all|both|every|entire)\b[^()]*\)", "", stripped)
            cohort = bool(_COHORT.search(re.sub(r"(?i)\b(?:key|general|main|inclusion|exclusion)s?\b", "", scope)))
            heading = None
            continue
        bullet = _BULLET.match(line)
        indent = len(line) - len(line.lstrip())
        if bullet:
            content_start = start + bullet.end()
            if current is not None and indent > current.indent:
                current.end = end  # a sub-item: part of its parent
            else:
                close()
                current = _Open(content_start, end, indent, section, heading, stated)
            blank_after = False
            continue
        # A plain line: a continuation of the open item if indented under it or directly after it, a sub-heading
        # if it ends with ':' (and the next lines are items), else a criterion of its own.
        if current is not None and (indent > current.indent or (not blank_after and not stripped.endswith(":"))):
            current.end = end
            blank_after = False
            continue
        close()
        if stripped.endswith(":") and len(stripped) < 80:
            heading = stripped  # a sub-heading ('Renal function:'): the items below are criteria of their own
            blank_after = False
            continue
        current = _Open(start, end, indent, section, heading, stated)
        blank_after = False
    close()
    return out


__all__ = ["Criterion", "split_criteria"]
