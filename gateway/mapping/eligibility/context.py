"""ConText for one criterion: which triggers (negation, conditional, exception, hypothetical, history, family)
modify a target span, with medSpaCy's rule set (mappings/lexicons/medspacy_context_rules.json) plus ours.

The algorithm is ConText's (Harkema et al. 2009, as medSpaCy implements it): a trigger modifies the targets in
its scope (FORWARD: after it, BACKWARD: before it, BIDIRECTIONAL: both) up to a terminator or the end of the
clause. We run it on plain strings rather than spaCy Docs (no tokeniser pipeline per criterion: see
docs/eligibility.md, "Why not medSpaCy itself").

>>> ctx = Context.for_text("no prior treatment with palbociclib", rules)
>>> ctx.categories(24, 35)
{'NEGATED_EXISTENCE', 'HISTORICAL'}
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.mapping.eligibility.phrases import PhraseIndex
from gateway.terminology.lexicons import ContextRule

# Clause ends: scopes never cross these ('.' followed by a space, ';', a newline, a colon before a list).
_CLAUSE_END = re.compile(r"\.\s|;|\n|:\s|\.$")
MAX_SCOPE_WORDS = 12  # a trigger reaches this many words at most (NegEx used 5; criteria list drugs after "no prior")
_WORD = re.compile(r"\S+")
# Categories that make a whole criterion "never a hard rule", wherever they stand in it.
WHOLE_CRITERION = frozenset({"CONDITIONAL", "EXCEPTION"})


@dataclass(frozen=True)
class Trigger:
    start: int
    end: int
    category: str
    direction: str


def compile_rules(rules: tuple[ContextRule, ...] | list[ContextRule]) -> PhraseIndex:
    """The rules as one phrase index (build once per rule set and reuse it)."""
    by_literal: dict[str, ContextRule] = {}
    for r in rules:
        by_literal[r.literal] = r  # ours come last and win on a duplicate literal ('if': conditional)
    return PhraseIndex(by_literal)


# 'Stage III not eligible for resection': what is not eligible is the treatment named after the trigger, not the
# stage before it.
_TREATMENT_AFTER = re.compile(r"\s*(?:for|to)\s+(?:\w+[\s/-]+){0,3}?(?:resection|surgery|surgical|curative|radiation|"
                              r"radiotherapy|chemoradiation|chemoradiotherapy|definitive|transplant\w*|local|"
                              r"locoregional|standard|intensive|systemic|therapy|treatment|chemotherapy|"
                              r"immunotherapy)\b")
# 'no transfusions allowed within 14 days': a prohibition of something else, not a permission.
_NOT_FIT_FOR = re.compile(r"\s*(?:be\s+|a\s+)?(?:amenable|eligible|candidates?|suitable|appropriate|fit|considered)\b")
_AS_BEFORE = re.compile(r"\bas\s+$")
_NO_BEFORE = re.compile(r"\b(?:no|not|nor|never)\s+(?:[\w-]+\s+){0,3}$")


def _misread(text: str, start: int, end: int, category: str) -> bool:
    """A trigger that, where it stands, does not mean what its category says."""
    if category == "PROHIBITION" and _TREATMENT_AFTER.match(text, end):
        return True
    if category == "NEGATED_EXISTENCE" and _NOT_FIT_FOR.match(text, end) and _TREATMENT_AFTER.match(
            text, _NOT_FIT_FOR.match(text, end).end()):  # type: ignore[union-attr]
        return True  # 'stage IIIB (not amenable to curative surgery) or IV': the treatment is negated, not the stage
    # 'no transfusions allowed', 'as permitted by the protocol' (= in accordance with)
    return category == "EXCEPTION" and text[start:end] in ("allowed", "permitted") and bool(
        _NO_BEFORE.search(text, max(0, start - 40), start) or _AS_BEFORE.search(text, max(0, start - 6), start))


def _ends_scope(t: Trigger) -> bool:
    """Terminators, and the start of an exception or a condition: 'history of other malignancy, unless disease
    free for 5 years' - 'free' negates nothing before 'unless'."""
    return t.direction == "TERMINATE" or t.category in WHOLE_CRITERION


class Context:
    """The triggers of one (lower-cased) criterion text and the clauses they act in."""

    def __init__(self, text: str, triggers: list[Trigger]):
        self.text = text
        self.triggers = triggers
        self._ends = [m.start() for m in _CLAUSE_END.finditer(text)]

    @classmethod
    def for_text(cls, text: str, rules: tuple[ContextRule, ...] | PhraseIndex) -> Context:
        """Find the triggers in ``text`` (already lower case, escapes cleaned); ``rules`` as compile_rules made them
        (or the rules themselves)."""
        index = rules if isinstance(rules, PhraseIndex) else compile_rules(rules)
        found = [Trigger(s, e, rule.category, rule.direction) for s, e, rule in index.find(text)
                 if not _misread(text, s, e, rule.category)]
        return cls(text, found)

    def _clause(self, pos: int) -> tuple[int, int]:
        start, end = 0, len(self.text)
        for e in self._ends:
            if e < pos:
                start = e + 1
            else:
                end = e
                break
        return start, end

    def _scope(self, t: Trigger) -> tuple[int, int]:
        cstart, cend = self._clause(t.start)
        if t.direction == "FORWARD":
            start, end = t.end, cend
            words = list(_WORD.finditer(self.text, t.end, cend))
            if len(words) > MAX_SCOPE_WORDS:
                end = words[MAX_SCOPE_WORDS - 1].end()
            for other in self.triggers:
                if _ends_scope(other) and t.end <= other.start < end:
                    end = other.start
            return start, end
        if t.direction == "BACKWARD":
            start, end = cstart, t.start
            words = list(_WORD.finditer(self.text, cstart, t.start))
            if len(words) > MAX_SCOPE_WORDS:
                start = words[-MAX_SCOPE_WORDS].start()
            for other in self.triggers:
                if _ends_scope(other) and start <= other.end <= end:
                    start = other.end
            return start, end
        return cstart, cend  # BIDIRECTIONAL

    def categories(self, start: int, end: int) -> set[str]:
        """Categories of the triggers whose scope covers the target [start, end) (a trigger inside the target,
        such as 'negative' in 'EGFR-negative', is the recogniser's business and is not counted)."""
        out = set()
        for t in self.triggers:
            if t.direction in ("TERMINATE", "PSEUDO") or (t.start >= start and t.end <= end):
                continue
            s, e = self._scope(t)
            if s <= start <= e:  # the scope reaches the target's head ('no [serum creatinine] <= 1.5 x ULN')
                out.add(t.category)
        return out

    def anywhere(self) -> set[str]:
        """Categories present anywhere in the criterion."""
        return {t.category for t in self.triggers if t.direction not in ("TERMINATE", "PSEUDO")}

    def whole(self) -> set[str]:
        """The criterion-wide categories present (conditional, exception)."""
        return self.anywhere() & WHOLE_CRITERION


__all__ = ["Context", "Trigger", "WHOLE_CRITERION", "compile_rules"]
