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
