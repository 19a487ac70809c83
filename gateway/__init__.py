"""FHIR R4 trial-matching gateway."""

__version__ = "0.1.0"
