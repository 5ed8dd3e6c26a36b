"""Synthetic fixtures shared by every layer's tests: an analytic abdominal CT phantom, its DICOM study, and a tiny
threshold-segmenter model package."""

from twin_imaging.testing.phantom import (
    PHANTOM_LABELS,
    Ellipsoid,
    EllipticCylinder,
    EllipticRing,
    Phantom,
    PhantomAnatomy,
    PhantomGeometry,
    Structure,
    iter_phantom_slices,
    make_phantom,
    project_phantom,
)
from twin_imaging.testing.phantom_dicom import (
    PatientSpec,
    PhantomSeries,
    PhantomStudy,
    SeriesSpec,
    StudySpec,
    localizer_geometries,
    phantom_datasets,
    write_phantom_cohort,
    write_phantom_study,
)
from twin_imaging.testing.real_series import copy_series_with_uids
from twin_imaging.testing.tiny_model import threshold_labels, write_threshold_model_package

__all__ = [
    "PHANTOM_LABELS",
    "Ellipsoid",
    "EllipticCylinder",
    "EllipticRing",
    "PatientSpec",
    "Phantom",
    "PhantomAnatomy",
    "PhantomGeometry",
    "PhantomSeries",
    "PhantomStudy",
    "SeriesSpec",
    "Structure",
    "StudySpec",
    "copy_series_with_uids",
    "iter_phantom_slices",
    "localizer_geometries",
    "make_phantom",
    "phantom_datasets",
    "project_phantom",
    "threshold_labels",
    "write_phantom_cohort",
    "write_phantom_study",
    "write_threshold_model_package",
]
