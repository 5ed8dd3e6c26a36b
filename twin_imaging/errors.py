"""Errors a user can act on. Each message names the problem; the CLI prints it without a traceback."""


class TwinImagingError(Exception):
    """Base of every error twin-imaging raises on bad input or a failed step."""


class InputError(TwinImagingError):
    """The input (a file, folder, zip, series) cannot be used as given."""


class DicomInputError(InputError):
    """A DICOM input was refused: no usable series, an unsafe zip, inconsistent geometry, undecodable pixels."""


class NiftiInputError(InputError):
    """A NIfTI input was refused (unreadable, not 3D, a singular affine)."""


class ModelError(TwinImagingError):
    """A model package cannot be loaded or run."""


class TwinError(TwinImagingError):
    """The patient twin refused a request: bad input, a conflict with what it holds, or a store it cannot use."""


class TwinConflictError(TwinError):
    """What was sent contradicts what the twin already holds (e.g. another value for the same observation)."""


class UnknownPatientError(TwinError):
    """No twin exists under the given patient key."""

    def __init__(self, patient_key: str) -> None:
        super().__init__(f"no patient with key {patient_key!r} in the twin store")
        self.patient_key = patient_key


class UnknownAnalysisError(TwinError):
    """No analysis with the given id in the twin store."""

    def __init__(self, analysis_id: object) -> None:
        super().__init__(f"no analysis with id {analysis_id!r} in the twin store")
        self.analysis_id = analysis_id


class UnknownJobError(TwinImagingError):
    """No analysis job with the given id (or none the caller may see)."""

    def __init__(self, job_id: object) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class ArtifactError(TwinError):
    """An artifact is missing from the artifact store, or its bytes no longer match its sha256."""
