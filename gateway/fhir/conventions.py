"""Names every part of the gateway shares: identifier systems, code systems, our canonical URLs.

Chosen once, documented in docs/reference.md, and kept. Clients and acceptance
checks rely on them: add, never rename.
"""

from __future__ import annotations

import re

# Our own canonical namespace for extensions, code systems, search parameters and topics.
BASE = "https://trialgateway.org/fhir"

# -- identifier systems -------------------------------------------------------------------------
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS_ORGANIZATION = "https://fhir.nhs.uk/Id/ods-organization-code"
CTGOV = "https://clinicaltrials.gov"
CTGOV_ALIASES = frozenset({"https://clinicaltrials.gov", "http://clinicaltrials.gov", "https://clinicaltrials.gov/",
                           "http://clinicaltrials.gov/", "https://www.clinicaltrials.gov",
                           "http://www.clinicaltrials.gov"})
_CTGOV_FORMS = frozenset(s.rstrip("/") for s in CTGOV_ALIASES)
ISRCTN = "https://www.isrctn.com"
EUDRACT = "https://www.clinicaltrialsregister.eu"
EU_CT = "https://euclinicaltrials.eu"  # EU CTR numbers (2022-500123-45-00)
IRAS = "https://www.hra.nhs.uk/iras"
CONTACT_REQUEST_ID = f"{BASE}/Id/contact-request"  # keyed hash of NHS number + study identifier

# -- code systems -------------------------------------------------------------------------------
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"  # WHO ICD-10 (used by the NHS)
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"  # US clinical modification
MESH = "https://www.nlm.nih.gov/mesh"  # as HL7 Terminology (THO) names it
MESH_ALIASES = frozenset({MESH, "http://id.nlm.nih.gov/mesh", "http://www.nlm.nih.gov/research/umls/mesh",
                          "urn:oid:2.16.840.1.113883.6.177", "https://id.nlm.nih.gov/mesh"})
ONCOTREE = "http://oncotree.mskcc.org"
ADMIN_GENDER = "http://hl7.org/fhir/administrative-gender"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
RESEARCH_STUDY_PHASE = "http://terminology.hl7.org/CodeSystem/research-study-phase"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"

# -- eligibility Group characteristic codes (ARCHITECTURE.md "Eligibility Group") ---------------
AGE = (LOINC, "30525-0")
SEX = (LOINC, "46098-0")
DIAGNOSIS = (SNOMED, "439401001")
ECOG = (LOINC, "89247-1")
KARNOFSKY = (LOINC, "89243-0")
ELIGIBILITY_CS = f"{BASE}/CodeSystem/eligibility-criterion"
HEALTHY_VOLUNTEERS = (ELIGIBILITY_CS, "healthy-volunteers")

# -- extensions ---------------------------------------------------------------------------------
EXT_ELIGIBILITY_TEXT = f"{BASE}/StructureDefinition/eligibility-criteria-text"  # on Group, valueMarkdown
EXT_SITE_RECRUITMENT_STATUS = f"{BASE}/StructureDefinition/site-recruitment-status"  # on Location, valueCode
EXT_ENROLLMENT_BY_INVITATION = f"{BASE}/StructureDefinition/enrollment-by-invitation"  # on ResearchStudy, valueBoolean
EXT_REGISTRY_STATUS = f"{BASE}/StructureDefinition/registry-status"  # on ResearchStudy, valueCode (source status)
EXT_MATCH_EXPLANATION = f"{BASE}/StructureDefinition/match-explanation"  # on Bundle.entry.search
EXT_MATCH_NEAREST_SITE = f"{BASE}/StructureDefinition/match-nearest-site"  # on Bundle.entry.search
# How much of the study was checked (docs/matching.md): complex, `evaluated` and `total` valueInteger
EXT_MATCH_COVERAGE = f"{BASE}/StructureDefinition/match-coverage"  # on Bundle.entry.search
EXT_MATCH_SUMMARY = f"{BASE}/StructureDefinition/match-summary"  # on Bundle.entry.search, valueString (for patients)
# characteristic-qualifier 'history' on a diagnosis characteristic: resolved / inactive conditions count too
# ("history of ..."); docs/matching.md
QUALIFIER_HISTORY = "history"
# characteristic-qualifier 'unless-sct-<SNOMED CT id>' on any extracted characteristic: the criterion is waived for a
# patient with that diagnosis ('bilirubin <= 1.5 x ULN, excepting Gilbert's syndrome'); docs/eligibility.md
QUALIFIER_UNLESS_PREFIX = "unless-sct-"

# -- consent purposes ---------------------------------------------------------------------------
PURPOSE_RESEARCH = (ACT_REASON, "HRESCH")
CONSENT_PURPOSE_CS = f"{BASE}/CodeSystem/consent-purpose"
PURPOSE_TRIAL_ALERTS = (CONSENT_PURPOSE_CS, "trial-alerts")

# -- search parameters and topics ---------------------------------------------------------------
SP_RESEARCHSTUDY_CONDITION = f"{BASE}/SearchParameter/ResearchStudy-condition"
TOPIC_NEW_MATCHING_STUDY = f"{BASE}/SubscriptionTopic/new-matching-study"
TOPIC_RESEARCH_SUBJECT_STATUS = f"{BASE}/SubscriptionTopic/research-subject-status"


def normalise_ctgov_system(system: str | None) -> str | None:
    """'http://clinicaltrials.gov/' -> 'https://clinicaltrials.gov'; others unchanged."""
    # Cheap test first: this runs for every token of every conditional lookup.
    if system is not None and "clinicaltrials.gov" in system and system != CTGOV and \
            system.rstrip("/").replace("://www.", "://") in _CTGOV_FORMS:
        return CTGOV
    return system

# Prior therapy criterion (e.g. "no prior bevacizumab"): code PRIOR_THERAPY, valueCodeableConcept = the
# medication (RxNorm or dm+d), usually with exclude=true. Met by a MedicationStatement/MedicationRequest/
# MedicationAdministration of that medication.
PRIOR_THERAPY = (ELIGIBILITY_CS, "prior-therapy")
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SPONSOR_STUDY_ID = f"{BASE}/Id/sponsor-study"  # example sponsors' own study ids in the demo data

# -- security (gateway/security) ----------------------------------------------------------------
# meta.tag naming the organisation (ODS code or sponsor organisation identifier value) that wrote a resource.
TENANT_TAG = f"{BASE}/CodeSystem/tenant"
CLIENT_ID_SYSTEM = f"{BASE}/Id/client"  # AuditEvent.agent.who.identifier: our registered client ids
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
AUDIT_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
AUDIT_SUBTYPE = f"{BASE}/CodeSystem/audit-subtype"  # our own subtypes: erasure, token, automatic actions

# -- mapping (gateway/mapping): identifiers of resources made from registry records and extracts ----
ORG_STUDY_ID = f"{BASE}/Id/org-study-id"  # ClinicalTrials.gov orgStudyIdInfo.id; assigner.display = organisation
CTGOV_SITE_ID = f"{BASE}/Id/ctgov-site"  # Location per study site: '<NCT id>-<hash of facility and address>'
ELIGIBILITY_GROUP_ID = f"{BASE}/Id/eligibility-group"  # eligibility Group made from a registry record: NCT id
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
_MESH_PADDED_ID = re.compile(r"^D000(\d{6})$")
_MESH_NATIVE_9_DIGIT_FROM = 67000  # descriptors created since ~2016 have native 9-digit ids (D000086382)


def normalise_mesh_id(code: str) -> str:
    """'D000005910' (ClinicalTrials.gov pads old ids) -> 'D005910'; native 'D000086382' is kept.

    Old descriptor ids are D + 6 digits (up to D066xxx); newer ones are D + 9 digits from D000067000 on.
    """
    s = code.strip()
    m = _MESH_PADDED_ID.match(s)
    return f"D{m.group(1)}" if m and int(m.group(1)) < _MESH_NATIVE_9_DIGIT_FROM else s


# -- extracted eligibility (issue #12; docs/eligibility.md) ------------------------------------------
# A Group.characteristic derived from the free-text criteria carries EXT_CRITERION_SOURCE (complex: `text`
# valueString verbatim criterion, `start`/`end` valueInteger offsets into the Group's EXT_ELIGIBILITY_TEXT,
# `section` valueCode inclusion|exclusion, `rule` valueString rule id, `confidence` valueCode high|medium).
# A characteristic without it was supplied by the sponsor and always wins over an extracted one.
EXT_CRITERION_SOURCE = f"{BASE}/StructureDefinition/criterion-source"  # on Group.characteristic, complex
EXT_CRITERION_LOOKBACK = f"{BASE}/StructureDefinition/criterion-lookback"  # on Group.characteristic, valueDuration
# Criteria that gave no characteristic, repeating: `text`, `start`, `end`, `section`, `reason` valueCode
# not-recognised | not-checkable | conditional | low-confidence.
EXT_UNSTRUCTURED_CRITERION = f"{BASE}/StructureDefinition/unstructured-criterion"  # on Group, complex
EXT_CRITERIA_COUNT = f"{BASE}/StructureDefinition/eligibility-criteria-count"  # on Group: `total`, `structured`
# "x ULN" thresholds: valueQuantity/valueRange with the UCUM annotation unit {ULN} (code '{ULN}', unit 'x ULN'),
# judged against the Observation's referenceRange.high.
UNIT_ULN = "{ULN}"
CONFIDENCE_HIGH, CONFIDENCE_MEDIUM = "high", "medium"
UNSTRUCTURED_REASONS = ("not-recognised", "not-checkable", "conditional", "low-confidence")

HGNC = "http://www.genenames.org"  # HGNC gene ids 'HGNC:3236' (as mCODE / Genomics Reporting IG write them)
DRUG_CLASS_CS = f"{BASE}/CodeSystem/drug-class"  # our drug classes (mappings/lexicons/drugs.yaml)
AJCC_STAGE_CS = f"{BASE}/CodeSystem/ajcc-stage-group"  # our stage groups '0', 'I', 'IIA', ... 'IVC'
BIOMARKER_CS = f"{BASE}/CodeSystem/biomarker"  # our codes where LOINC has none we verified (PD-L1 TPS/CPS)

# Characteristic codes by kind (Group.characteristic.code); the value shape is given beside each.
LANSKY = (ELIGIBILITY_CS, "lansky")  # valueRange 0-100 (no LOINC code verified for Lansky play-performance)
GENETIC_VARIANT = (LOINC, "69548-6")  # Genetic variant assessment; valueCodeableConcept LOINC LA9633-4 Present /
#   LA9634-2 Absent, with extension EXT_CHARACTERISTIC_GENE (HGNC) and optionally EXT_CHARACTERISTIC_VARIANT
EXT_CHARACTERISTIC_GENE = f"{BASE}/StructureDefinition/characteristic-gene"  # valueCodeableConcept (HGNC)
EXT_CHARACTERISTIC_VARIANT = f"{BASE}/StructureDefinition/characteristic-variant"  # valueString 'L858R'
VARIANT_PRESENT = (LOINC, "LA9633-4")
VARIANT_ABSENT = (LOINC, "LA9634-2")
ER_STATUS = (LOINC, "85337-4")  # Estrogen receptor Ag [Presence] in Breast cancer specimen by Immune stain
PR_STATUS = (LOINC, "85339-0")  # Progesterone receptor Ag [Presence] in Breast cancer specimen by Immune stain
HER2_STATUS = (LOINC, "48676-1")  # HER2 [Interpretation] in Tissue
# Hormone-receptor positive (HR+), 'ER and/or PR positive': valueCodeableConcept SCT_POSITIVE; the matching side
# judges it on the ER_STATUS and PR_STATUS results (either positive: has it; both negative: has not)
HORMONE_RECEPTOR = (BIOMARKER_CS, "hormone-receptor")
SCT_POSITIVE = (SNOMED, "10828004")  # Positive (qualifier value)
SCT_NEGATIVE = (SNOMED, "260385009")  # Negative (qualifier value)
MSI_STATUS = (LOINC, "81695-9")  # Microsatellite instability [Interpretation] in Cancer specimen; value LA26203-2 MSI-H
MSI_HIGH = (LOINC, "LA26203-2")
MMR_DEFICIENT = (BIOMARKER_CS, "dmmr")  # valueBoolean true: deficient mismatch repair (IHC loss of MLH1/MSH2/MSH6/PMS2)
PDL1_STATUS = (LOINC, "83052-1")  # PD-L1 by clone 22C3 [Presence] in Tissue by Immune stain; value positive/negative
PDL1_TPS = (BIOMARKER_CS, "pd-l1-tps")  # valueQuantity %, with comparator
PDL1_CPS = (BIOMARKER_CS, "pd-l1-cps")  # valueQuantity {score}, with comparator
CNS_METASTASES = (SNOMED, "94225005")  # Secondary malignant neoplasm of brain: a DIAGNOSIS value; qualifiers in
EXT_CHARACTERISTIC_QUALIFIER = f"{BASE}/StructureDefinition/characteristic-qualifier"  # valueCode, repeating:
CNS_QUALIFIERS = ("active", "untreated", "symptomatic", "progressive", "leptomeningeal")  # (on the characteristic)
STAGE_GROUP = (ELIGIBILITY_CS, "cancer-stage-group")  # valueCodeableConcept AJCC_STAGE_CS (+ SNOMED when known)
# Observations the matching side reads for STAGE_GROUP: SNOMED clinical / pathological TNM stage grouping.
STAGE_OBSERVATION_CODES = ((SNOMED, "399537006"), (SNOMED, "399588009"), (LOINC, "21908-9"), (LOINC, "21902-2"))
PREGNANCY = (ELIGIBILITY_CS, "pregnancy")  # valueBoolean true, exclude=true (applies to those who can be pregnant)
BREASTFEEDING = (ELIGIBILITY_CS, "breastfeeding")  # valueBoolean true, exclude=true
# HIV / hepatitis B / hepatitis C are DIAGNOSIS characteristics with these SNOMED values (exclude=true mostly).
HIV_INFECTION = (SNOMED, "86406008")  # Human immunodeficiency virus infection
HEPATITIS_B = (SNOMED, "66071002")  # Viral hepatitis type B
HEPATITIS_C = (SNOMED, "50711007")  # Viral hepatitis type C
MALIGNANCY = (SNOMED, "363346000")  # Malignant neoplastic disease: "other malignancy within N years"
OTHER_MALIGNANCY = (ELIGIBILITY_CS, "other-malignancy")  # valueCodeableConcept MALIGNANCY + EXT_CRITERION_LOOKBACK
# Prior therapy: PRIOR_THERAPY with valueCodeableConcept RxNorm ingredient or DRUG_CLASS_CS code; radiotherapy and
# stem-cell transplant are DRUG_CLASS_CS codes 'radiotherapy' and 'stem-cell-transplant'.
# Laboratory values: code = LOINC of the analyte (mappings/lexicons/analytes.yaml), valueQuantity with comparator
# or valueRange, UCUM units; "x ULN" uses UNIT_ULN.
# Criteria no EHR can check (life expectancy, measurable disease, willingness, consent) are never characteristics:
# they are EXT_UNSTRUCTURED_CRITERION with reason not-checkable.
# A Group a person reviewed and pushed back (valueDateTime): kept on re-import while the registry text is unchanged.
EXT_CRITERIA_REVIEWED = f"{BASE}/StructureDefinition/eligibility-criteria-reviewed"  # on Group, valueDateTime
# A ResearchStudy.condition phrase with qualifiers no code carries ('MSI-H Solid Malignant Tumor'): this coding keeps
# text resolution from turning it into a broader concept; the phrase stays in CodeableConcept.text.
UNRESOLVED_CONDITION_CS = f"{BASE}/CodeSystem/unresolved-condition"
UNRESOLVED_QUALIFIED = (UNRESOLVED_CONDITION_CS, "qualified-phrase")

# -- patient records made by the gateway ----------------------------------------------------------
# A Patient holding only an NHS number, made when a signed-in person with no record here opts in to alerts
# (docs/patient-actions.md). It carries this tag; it is never matched against criteria nor offered to research teams.
ALERTS_ONLY_TAG = (f"{BASE}/CodeSystem/patient-record-origin", "alerts-opt-in")
