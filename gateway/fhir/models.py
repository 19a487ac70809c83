"""The one place FHIR models are imported from: fhir.resources.R4B (the top-level package is R5).

R4B is wire-compatible with R4 for the resources the gateway reasons about. R4 types that R4B
does not model are refused by name (see R4_ONLY_TYPES) rather than validated against the wrong
structure.
"""

from __future__ import annotations

from functools import cache

from fhir.resources.R4B import get_fhir_model_class

# R4 (4.0.1) resource types, from the official R4 JSON schema's discriminator.
R4_RESOURCE_TYPES: frozenset[str] = frozenset(
    """Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse AuditEvent
    Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement CarePlan CareTeam
    CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse ClinicalImpression CodeSystem
    Communication CommunicationRequest CompartmentDefinition Composition ConceptMap Condition Consent
    Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue Device
    DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement DiagnosticReport DocumentManifest
    DocumentReference EffectEvidenceSynthesis Encounter Endpoint EnrollmentRequest EnrollmentResponse
    EpisodeOfCare EventDefinition Evidence EvidenceVariable ExampleScenario ExplanationOfBenefit
    FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy
    Immunization ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan
    Invoice Library Linkage List Location Measure MeasureReport Media Medication
    MedicationAdministration MedicationDispense MedicationKnowledge MedicationRequest
    MedicationStatement MedicinalProduct MedicinalProductAuthorization MedicinalProductContraindication
    MedicinalProductIndication MedicinalProductIngredient MedicinalProductInteraction
    MedicinalProductManufactured MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularSequence NamingSystem
    NutritionOrder Observation ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation Parameters Patient PaymentNotice PaymentReconciliation Person PlanDefinition
    Practitioner PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson
    RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject
    RiskAssessment RiskEvidenceSynthesis Schedule SearchParameter ServiceRequest Slot Specimen
    SpecimenDefinition StructureDefinition StructureMap Subscription Substance SubstanceNucleicAcid
    SubstancePolymer SubstanceProtein SubstanceReferenceInformation SubstanceSourceMaterial
    SubstanceSpecification SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport
    TestScript ValueSet VerificationResult VisionPrescription""".split()
)

# R4 types that fhir.resources.R4B has no model for: the evidence-synthesis and
# medicinal-product families (reworked in R4B/R5).
R4_ONLY_TYPES: frozenset[str] = frozenset(
    """EffectEvidenceSynthesis RiskEvidenceSynthesis MedicinalProduct MedicinalProductAuthorization
    MedicinalProductContraindication MedicinalProductIndication MedicinalProductIngredient
    MedicinalProductInteraction MedicinalProductManufactured MedicinalProductPackaged
    MedicinalProductPharmaceutical MedicinalProductUndesirableEffect SubstanceNucleicAcid
    SubstancePolymer SubstanceProtein SubstanceReferenceInformation SubstanceSourceMaterial
    SubstanceSpecification""".split()
)

SUPPORTED_TYPES: frozenset[str] = R4_RESOURCE_TYPES - R4_ONLY_TYPES


@cache
def model_class(resource_type: str) -> type:
    """'Patient' -> fhir.resources.R4B.patient.Patient (cached; raises KeyError if not supported)."""
    if resource_type not in SUPPORTED_TYPES:
        raise KeyError(resource_type)
    return get_fhir_model_class(resource_type)


def construct(resource_type: str, data: dict):
    """Validate ``data`` as ``resource_type`` and return the model instance (pydantic errors propagate)."""
    return model_class(resource_type).model_validate(data)
