"""The FHIR code systems, extension URLs and markers the twin's export writes and its import recognises."""

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
PATIENT_KEY_SYSTEM = "urn:twin-imaging:patient-key"
MEASUREMENT_SYSTEM = "urn:twin-imaging:measurement"
PREDICTION_TARGET_SYSTEM = "urn:twin-imaging:prediction-target"
ALERT_RULE_SYSTEM = "urn:twin-imaging:alert-rule"
PROBABILITY_INTERVAL_URL = "urn:twin-imaging:fhir:probability-interval"
SCENARIO_URL = "urn:twin-imaging:fhir:scenario"
PREDICTED_VALUE_URL = "urn:twin-imaging:fhir:predicted-value"  # a predicted quantity (RiskAssessment has none)
PREDICTED_INTERVAL_URL = "urn:twin-imaging:fhir:predicted-interval"  # its interval, in the same unit
LATERALITY_URL = "http://hl7.org/fhir/StructureDefinition/observation-structureLaterality"
FLAG_PRIORITY_URL = "http://hl7.org/fhir/StructureDefinition/flag-priority"
RESEARCH_ONLY = "Research use only — automated organ segmentation; not for diagnosis"
SKIP_OWN_MEASUREMENT = "imaging measurement produced by twin-imaging"
