"""NIfTI-1 read and write with nibabel, keeping the voxel → RAS affine exactly (qform and sform both set)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from twin_imaging.errors import NiftiInputError
from twin_imaging.files import atomic_path
from twin_imaging.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_SCANNER_ANAT = 1  # NIfTI xform code: scanner-based anatomical coordinates (what dcm2niix writes)


def is_nifti_path(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | os.PathLike) -> Volume:
    """A 3D NIfTI image (a 4D one with a single volume is accepted) as a Volume. A file whose name does not say
    NIfTI (an upload, an artifact stored by its hash) is read through a link named by its content (.nii.gz when
    gzipped, else .nii): nibabel picks its reader by the name."""
    path = Path(path)
    if not path.is_file():
        raise NiftiInputError(f"NIfTI file not found: {path}")
    if not is_nifti_path(path):
        with open(path, "rb") as stream:
            gzipped = stream.read(2) == b"\x1f\x8b"
        with tempfile.TemporaryDirectory() as scratch:
            named = Path(scratch) / ("image.nii.gz" if gzipped else "image.nii")
            named.symlink_to(path.resolve())
            return _read(named, path.name)
    return _read(path, path.name)


def _read(path: Path, shown_name: str) -> Volume:
    try:
        image = nib.load(path)
        array = np.asanyarray(image.dataobj)  # applies scl_slope/scl_inter; stays integer where they are trivial
    except Exception as exc:  # nibabel raises several kinds on truncated or non-NIfTI files
        raise NiftiInputError(f"{shown_name} is not a readable NIfTI image: {exc}") from None
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise NiftiInputError(f"{shown_name} has shape {array.shape}; a 3D image is needed")
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise NiftiInputError(f"{shown_name} has a singular or non-finite affine")
    intent = image.header.get_intent()[0] if hasattr(image.header, "get_intent") else ""
    label_names = {} if intent == "label" else None
    return Volume(array=array, affine_ras=affine, label_names=label_names)


def write_nifti(volume: Volume, path: str | os.PathLike) -> Path:
    """Write ``volume`` to ``path`` (.nii or .nii.gz) atomically: a temporary file in the same folder, renamed."""
    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"a NIfTI output needs a .nii or .nii.gz name, got {path.name}")
    array = volume.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = nib.Nifti1Image(array, volume.affine_ras)
    image.set_qform(volume.affine_ras, code=_SCANNER_ANAT)
    image.set_sform(volume.affine_ras, code=_SCANNER_ANAT)
    image.header.set_xyzt_units(xyz="mm")
    if volume.label_names is not None:
        image.header.set_intent("label")
    suffix = ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"  # nibabel compresses by the name
    with atomic_path(path, suffix=suffix) as temporary:
        nib.save(image, temporary)
    return path
