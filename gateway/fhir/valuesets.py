"""R4 required-binding value sets of the code search parameters, so that a search for a code that cannot
exist (``ResearchStudy?status=recruiting``) is reported instead of silently matching nothing or, worse,
being dropped.

``check_code("ResearchStudy", "status", "recruiting")`` -> "'recruiting' is not an R4 ResearchStudy.status
code; use status=active (valid: active, ...)". Codes of the R4 value sets named per entry
(http://hl7.org/fhir/R4/valueset-*.html). Entries are data: add one per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ValueSet:
    """The codes a required binding allows; ``system`` is the code system a token may name (None: a plain
    ``code`` element, where any ``system|`` prefix is another system's code and so not checked).
    ``hints`` maps words people use (registry statuses) to the R4 code to use instead."""

    codes: frozenset[str]
    system: str | None = None
    hints: dict[str, str] = field(default_factory=dict)


def _vs(codes: str, system: str | None = None, **hints: str) -> ValueSet:
    return ValueSet(frozenset(codes.split()), system, {k.replace("_", "-"): v for k, v in hints.items()})


_STUDY_STATUS = _vs(
    "active administratively-completed approved closed-to-accrual closed-to-accrual-and-intervention completed "
    "disapproved in-review temporarily-closed-to-accrual temporarily-closed-to-accrual-and-intervention withdrawn",
    # ClinicalTrials.gov overallStatus words, as mappings/ctgov-v2.yaml maps them
    recruiting="active", not_yet_recruiting="approved", active_not_recruiting="closed-to-accrual",
    enrolling_by_invitation="active", suspended="temporarily-closed-to-accrual",
    terminated="administratively-completed", open="active", closed="closed-to-accrual")
_FHIR = "http://hl7.org/fhir/"
_PUBLICATION = _vs("draft active retired unknown")

# (resource type, search parameter) -> value set
REQUIRED: dict[tuple[str, str], ValueSet] = {
    ("ResearchStudy", "status"): _STUDY_STATUS,  # research-study-status
    ("ResearchSubject", "status"): _vs(  # research-subject-status
        "candidate eligible follow-up ineligible not-registered off-study on-study on-study-intervention "
        "on-study-observation pending-on-study potential-candidate screening withdrawn",
        requested="candidate", enrolled="on-study", recruited="on-study"),
    ("Patient", "gender"): _vs("male female other unknown", m="male", f="female", man="male", woman="female"),
    ("Consent", "status"): _vs("draft proposed active rejected inactive entered-in-error"),
    ("Observation", "status"): _vs("registered preliminary final amended corrected cancelled entered-in-error "
                                   "unknown"),
    ("Procedure", "status"): _vs("preparation in-progress not-done on-hold stopped completed entered-in-error "
                                 "unknown"),
    ("MedicationStatement", "status"): _vs("active completed entered-in-error intended stopped on-hold unknown "
                                           "not-taken"),
    ("MedicationRequest", "status"): _vs("active on-hold cancelled completed entered-in-error stopped draft "
                                         "unknown"),
    ("Condition", "clinical-status"): _vs("active recurrence relapse inactive remission resolved",
                                          "http://terminology.hl7.org/CodeSystem/condition-clinical"),
    ("Condition", "verification-status"): _vs("unconfirmed provisional differential confirmed refuted "
                                              "entered-in-error",
                                              "http://terminology.hl7.org/CodeSystem/condition-ver-status"),
    ("Location", "status"): _vs("active suspended inactive"),
    ("Group", "type"): _vs("person animal practitioner device medication substance"),
    ("Group", "actual"): _vs("true false"),
    ("Organization", "active"): _vs("true false"),
    ("Subscription", "status"): _vs("requested active error off"),
    ("Subscription", "type"): _vs("rest-hook websocket email sms message"),
    ("ConceptMap", "status"): _PUBLICATION,
    ("CodeSystem", "status"): _PUBLICATION,
    ("Task", "status"): _vs("draft requested received accepted rejected ready cancelled in-progress on-hold "
                            "failed completed entered-in-error"),
    ("Communication", "status"): _vs("preparation in-progress not-done on-hold stopped completed "
                                     "entered-in-error unknown"),
    ("AuditEvent", "action"): _vs("C R U D E"),
    ("AuditEvent", "outcome"): _vs("0 4 8 12"),
}


def check_code(rtype: str, name: str, value: str) -> str | None:
    """None when ``value`` (a token search value) may match; else why not, and what to use instead."""
    vs = REQUIRED.get((rtype, name))
    if vs is None:
        return None
    has_bar = "|" in value
    system, _, code = value.partition("|") if has_bar else ("", "", value)
    if not code or (has_bar and system and system != vs.system):
        return None  # 'sys|' (any code of a system) or another system's code: nothing to check
    if code in vs.codes:
        return None
    valid = ", ".join(sorted(vs.codes))
    hint = vs.hints.get(code.lower().replace("_", "-").replace(" ", "-"))
    if hint is None and code.lower() in vs.codes:
        hint = code.lower()
    advice = f"use {name}={hint}" if hint else f"use one of: {valid}"
    return (f"'{code}' is not an R4 {rtype}.{name} code (required binding), so no {rtype} can have it; "
            f"{advice}" + (f" (valid: {valid})" if hint else ""))
