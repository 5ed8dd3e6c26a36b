"""FHIR R5 for the twin: a patient's twin out as a Bundle (``fhir_export``); clinical Observations and Procedures in
from one (``fhir_import``). The code systems and URLs both use are in ``fhir_codes``.

bundle = export_bundle(summary)          # JSON-ready dict, every resource built and checked with fhir.resources
records = parse_bundle(document)         # ImportedRecords: ObservationInputs, ProcedureInputs, skipped reasons
"""

from twin_imaging.twin.fhir_codes import SKIP_OWN_MEASUREMENT
from twin_imaging.twin.fhir_export import export_bundle
from twin_imaging.twin.fhir_import import parse_bundle

__all__ = ["SKIP_OWN_MEASUREMENT", "export_bundle", "parse_bundle"]
