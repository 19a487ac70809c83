"""Mappings: registry records and EHR extracts into FHIR, configured by the files in mappings/.

>>> from gateway.mapping import map_payload
>>> [r.source_id for r in map_payload("ctgov-v2", study_json)]
['NCT02513394']
"""

from gateway.mapping.engine import MappedRecord, map_payload
from gateway.mapping.readers import PayloadError
from gateway.mapping.registry import MappingRegistry, UnknownMapping, default_registry, registry_for
from gateway.mapping.spec import Mapping, MappingFileError, load_mapping

__all__ = ["MappedRecord", "map_payload", "PayloadError", "MappingRegistry", "UnknownMapping", "default_registry",
           "registry_for", "Mapping", "MappingFileError", "load_mapping"]
