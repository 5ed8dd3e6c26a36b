"""The phantom as a DICOM CT study: image, derived and localizer series, optionally compressed or multi-frame.

Conventions (those the DICOM reader expects): slice k of a volume is the image ``array[:, :, k].T`` (rows = j,
columns = i); PixelSpacing is (spacing_j, spacing_i); ImagePositionPatient is the centre of voxel (0, 0, k);
stored value = HU + 1024 with RescaleIntercept -1024. InstanceNumber runs 1..N in *descending* position along the
slice normal, as on many scanners, so a reader that sorts by InstanceNumber gets the slices reversed. UIDs are
derived from the patient, study, anatomy, seed and series, so writing the same study twice gives the same UIDs;
files are named by a digest of the SOP Instance UID (not in slice order, and without dots, so that with
``file_suffix=""`` they have no suffix at all).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds
from scipy.ndimage import uniform_filter1d

from twin_imaging.testing.phantom import (
    HU_MAX,
    HU_MIN,
    Phantom,
    PhantomAnatomy,
    PhantomGeometry,
    make_phantom,
    project_phantom,
)
from twin_imaging.volume import SeriesInfo, SourceImage, Volume

_Save = Callable[[Dataset], Path]
SeriesKind = Literal["image", "localizer", "derived"]
Compression = Literal["jpeg2000", "jpegls", "rle"] | None

TRANSFER_SYNTAX_UIDS: dict[Compression, str] = {
    None: ExplicitVRLittleEndian,
    "jpeg2000": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
    "rle": RLELossless,
}
RESCALE_INTERCEPT = -1024
MANUFACTURER = "twin-imaging"
MANUFACTURER_MODEL_NAME = "Analytic abdomen phantom"
SOFTWARE_VERSIONS = "1.0"
BODY_PART_EXAMINED = "ABDOMEN"


@dataclass(frozen=True)
class PatientSpec:
    patient_id: str = "PHANTOM-001"
    patient_name: str = "Phantom^Abdomen"
    patient_birth_date: str = "19700101"
    patient_sex: str = "M"


@dataclass(frozen=True)
class StudySpec:
    study_date: str = "20240115"
    study_time: str = "093000"
    study_description: str = "CT ABDOMEN (phantom)"
    accession_number: str = "PHA0001"
    study_id: str = "1"
    referring_physician_name: str = ""
    institution_name: str = "Twin Imaging Phantom Lab"


@dataclass(frozen=True)
class SeriesSpec:
    """One series of the study.

    ``kind``: "image" (ORIGINAL\\PRIMARY), "derived" (DERIVED\\SECONDARY: a 3-slice thick-slab average on the same
    grid) or "localizer" (two scout images, a coronal and a sagittal projection covering ``geometry``).
    ``multiframe`` writes one Enhanced CT Image instance holding all slices as frames.
    """

    geometry: PhantomGeometry = field(default_factory=PhantomGeometry)
    series_number: int = 1
    series_description: str = ""  # empty: generated from kind and geometry
    kind: SeriesKind = "image"
    compression: Compression = None
    multiframe: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("image", "localizer", "derived"):
            raise ValueError(f"kind must be 'image', 'localizer' or 'derived', got {self.kind!r}")
        if self.compression not in TRANSFER_SYNTAX_UIDS:
            raise ValueError(f"compression must be one of {list(TRANSFER_SYNTAX_UIDS)}, got {self.compression!r}")
        if self.kind == "localizer" and self.multiframe:
            raise ValueError("a localizer series is written as single-frame images")
        if self.compression == "jpeg2000" and self.kind != "localizer" and min(self.geometry.shape[:2]) < 32:
            raise ValueError(
                f"JPEG 2000 needs images of at least 32 x 32 pixels (openjpeg's 6 resolution levels), "
                f"got {self.geometry.shape[0]} x {self.geometry.shape[1]}"
            )
        if not 0 <= self.series_number < 2**31:
            raise ValueError(f"series_number must be a non-negative integer, got {self.series_number}")

    @property
    def description(self) -> str:
        if self.series_description:
            return self.series_description
        if self.kind == "localizer":
            return "Topogram"
        plane = self.geometry.orientation if isinstance(self.geometry.orientation, str) else "oblique"
        prefix = "Slab average " if self.kind == "derived" else ""
        return f"{prefix}Abdomen {plane} {self.geometry.spacing_mm[2]:g}mm"

    @property
    def image_type(self) -> tuple[str, ...]:
        if self.kind == "localizer":
            return ("ORIGINAL", "PRIMARY", "LOCALIZER")
        if self.multiframe:  # Enhanced CT allows only PRIMARY as value 2
            return (
                ("DERIVED", "PRIMARY", "VOLUME", "MEAN")
                if self.kind == "derived"
                else ("ORIGINAL", "PRIMARY", "VOLUME", "NONE")
            )
        first = ("DERIVED", "SECONDARY") if self.kind == "derived" else ("ORIGINAL", "PRIMARY")
        # The CT Image IOD defines only AXIAL and LOCALIZER for value 3; AXIAL stands for any cross-section.
        return (*first, "AXIAL")


@dataclass(frozen=True, eq=False)
class PhantomSeries:
    """What was written for one series; ``phantom`` is None for a localizer, which has ``localizers``."""

    spec: SeriesSpec
    series_instance_uid: str
    info: SeriesInfo
    sop_instance_uids: tuple[str, ...]
    paths: tuple[Path, ...] = ()  # empty when built in memory
    phantom: Phantom | None = None
    localizers: tuple[Volume, ...] = ()  # one-slice volumes of projected HU, one per localizer image
    datasets: tuple[Dataset, ...] = ()  # only from phantom_datasets


@dataclass(frozen=True, eq=False)
class PhantomStudy:
    study_instance_uid: str
    patient: PatientSpec
    study: StudySpec
    series: tuple[PhantomSeries, ...]

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for s in self.series for p in s.paths)

    @property
    def datasets(self) -> tuple[Dataset, ...]:
        return tuple(ds for s in self.series for ds in s.datasets)

    def series_by_number(self, series_number: int) -> PhantomSeries:
        for s in self.series:
            if s.spec.series_number == series_number:
                return s
        raise KeyError(f"no series number {series_number} in the phantom study")


def write_phantom_study(
    out_dir: str | Path,
    series: Iterable[SeriesSpec] = (SeriesSpec(),),
    *,
    patient: PatientSpec = PatientSpec(),
    study: StudySpec = StudySpec(),
    seed: int = 0,
    noise_hu_sd: float = 10.0,
    anatomy: PhantomAnatomy | None = None,
    file_suffix: str = ".dcm",
) -> PhantomStudy:
    """Write the study into ``out_dir``: flat, one file per instance named ``instance_file_stem(uid) + file_suffix``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def save(ds: Dataset) -> Path:
        path = out_dir / f"{instance_file_stem(ds.SOPInstanceUID)}{file_suffix}"
        ds.save_as(path, enforce_file_format=True)
        return path

    args = dict(patient=patient, study=study, seed=seed, noise_hu_sd=noise_hu_sd, anatomy=anatomy)
    return _build_study(tuple(series), save, **args)


def write_phantom_cohort(
    root: str | Path, count: int, geometry: PhantomGeometry, *, prefix: str = "COHORT"
) -> list[PhantomStudy]:
    """``count`` studies of as many patients (``<prefix>-<n>``) in ``root/study<n>``, each with its own noise and
    UIDs: a cohort for the batch and replica tests and benchmarks."""
    return [
        write_phantom_study(
            Path(root) / f"study{n}",
            (SeriesSpec(geometry=geometry),),
            patient=PatientSpec(patient_id=f"{prefix}-{n}"),
            study=StudySpec(accession_number=f"{prefix[:8]}{n}"),
            seed=n,
        )
        for n in range(count)
    ]


def phantom_datasets(
    series: Iterable[SeriesSpec] = (SeriesSpec(),),
    *,
    patient: PatientSpec = PatientSpec(),
    study: StudySpec = StudySpec(),
    seed: int = 0,
    noise_hu_sd: float = 10.0,
    anatomy: PhantomAnatomy | None = None,
) -> PhantomStudy:
    """The same study as ``write_phantom_study``, in memory: ``PhantomStudy.datasets`` (with file meta)."""
    args = dict(patient=patient, study=study, seed=seed, noise_hu_sd=noise_hu_sd, anatomy=anatomy)
    return _build_study(tuple(series), None, **args)


def instance_file_stem(sop_instance_uid: str) -> str:
    """The file name (without suffix) of an instance: a digest of its UID, so no dots and not in slice order."""
    return hashlib.sha1(sop_instance_uid.encode("ascii")).hexdigest()[:20].upper()


def phantom_uid(*parts: object) -> str:
    """A UID determined by ``parts`` (pydicom's root, hashed entropy)."""
    return generate_uid(entropy_srcs=["twin-imaging phantom", *(repr(p) for p in parts)])


@dataclass(frozen=True)
class _SeriesContext:
    spec: SeriesSpec
    patient: PatientSpec
    study: StudySpec
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str

    def info(self) -> SeriesInfo:
        p, s = self.patient, self.study
        return SeriesInfo(
            modality="CT",
            series_instance_uid=self.series_instance_uid,
            series_number=self.spec.series_number,
            series_description=self.spec.description,
            study_instance_uid=self.study_instance_uid,
            study_date=s.study_date,
            study_time=s.study_time,
            study_description=s.study_description,
            frame_of_reference_uid=self.frame_of_reference_uid,
            manufacturer=MANUFACTURER,
            body_part_examined=BODY_PART_EXAMINED,
            image_type=self.spec.image_type,
            patient_id=p.patient_id,
            patient_name=p.patient_name,
            patient_birth_date=p.patient_birth_date,
            patient_sex=p.patient_sex,
            accession_number=s.accession_number,
        )


def _build_study(
    specs: tuple[SeriesSpec, ...],
    save: _Save | None,
    *,
    patient: PatientSpec,
    study: StudySpec,
    seed: int,
    noise_hu_sd: float,
    anatomy: PhantomAnatomy | None,
) -> PhantomStudy:
    if not specs:
        raise ValueError("a phantom study needs at least one series")
    numbers = [s.series_number for s in specs]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"series numbers must be unique within a study, got {numbers}")
    anatomy = anatomy or PhantomAnatomy()
    study_uid = phantom_uid("study", patient, study, int(seed), float(noise_hu_sd), anatomy)
    frame_of_reference_uid = phantom_uid(study_uid, "frame of reference")
    written = []
    for spec in specs:
        series_uid = phantom_uid(study_uid, "series", spec.series_number, spec.kind, spec.multiframe, spec.geometry)
        ctx = _SeriesContext(spec, patient, study, study_uid, series_uid, frame_of_reference_uid)
        if spec.kind == "localizer":
            written.append(_build_localizer_series(ctx, anatomy, save))
        else:
            phantom = make_phantom(spec.geometry, anatomy=anatomy, noise_hu_sd=noise_hu_sd, seed=seed, info=ctx.info())
            if spec.kind == "derived":
                phantom = replace(phantom, image=phantom.image.with_array(slab_average(phantom.image.array)))
            written.append(_build_volume_series(ctx, phantom, save))
    return PhantomStudy(study_uid, patient, study, tuple(written))


def slab_average(hu: np.ndarray, slices: int = 3) -> np.ndarray:
    """Thick-slab average along k (edges repeat the last slice), rounded back to int16 HU."""
    out = np.empty_like(hu)
    for k0 in range(0, hu.shape[2], 64):  # in chunks, to bound the float copy of a large volume
        lo, hi = max(0, k0 - slices), min(hu.shape[2], k0 + 64 + slices)
        mean = uniform_filter1d(hu[:, :, lo:hi].astype(np.float32), slices, axis=2, mode="nearest")
        out[:, :, k0 : k0 + 64] = np.clip(np.rint(mean[:, :, k0 - lo : k0 - lo + 64]), HU_MIN, HU_MAX)
    return out


def _build_volume_series(ctx: _SeriesContext, phantom: Phantom, save: _Save | None) -> PhantomSeries:
    n_slices = phantom.geometry.shape[2]
    paths: list[Path] = []
    datasets: list[Dataset] = []
    if ctx.spec.multiframe:
        from twin_imaging.testing.phantom_enhanced import enhanced_ct_dataset  # it imports this module

        sop_uids = (phantom_uid(ctx.series_instance_uid, "enhanced"),)
        ds = enhanced_ct_dataset(base_dataset(ctx, EnhancedCTImageStorage, sop_uids[0]), phantom)
        location = _emit(ds, ctx.spec.compression, save, paths, datasets)
        # frames are stored in descending position along the normal: frame f holds slice k = n - f
        sources = [SourceImage(EnhancedCTImageStorage, sop_uids[0], n_slices - k, location) for k in range(n_slices)]
    else:
        sop_uids = tuple(phantom_uid(ctx.series_instance_uid, "slice", k) for k in range(n_slices))
        sources = []
        for k, sop_uid in enumerate(sop_uids):
            ds = base_dataset(ctx, CTImageStorage, sop_uid)
            _set_slice_attributes(ds, phantom.geometry, k)
            set_pixels(ds, phantom.image.array[:, :, k].T)
            location = _emit(ds, ctx.spec.compression, save, paths, datasets)
            sources.append(SourceImage(CTImageStorage, sop_uid, None, location))
    image = replace(phantom.image, sources=tuple(sources))
    phantom = replace(phantom, image=image, labels=replace(phantom.labels, sources=image.sources))
    return PhantomSeries(
        ctx.spec, ctx.series_instance_uid, ctx.info(), sop_uids, tuple(paths), phantom, (), tuple(datasets)
    )


def _build_localizer_series(ctx: _SeriesContext, anatomy: PhantomAnatomy, save: _Save | None) -> PhantomSeries:
    sop_uids, paths, datasets, volumes = [], [], [], []
    for number, (plane, depth) in enumerate(localizer_geometries(ctx.spec.geometry, anatomy), start=1):
        mean_hu, _ = project_phantom(depth, anatomy=anatomy)
        hu = np.clip(np.rint(mean_hu), HU_MIN, HU_MAX).astype(np.int16)
        sop_uids.append(phantom_uid(ctx.series_instance_uid, "localizer", number))
        ds = base_dataset(ctx, CTImageStorage, sop_uids[-1])
        _set_slice_attributes(ds, plane, 0, instance_number=number)
        del ds.SliceLocation, ds.RescaleType  # a scout's projected values are not HU, says dciodvfy
        ds.SliceThickness = None
        set_pixels(ds, hu.T)
        location = _emit(ds, ctx.spec.compression, save, paths, datasets)
        source = SourceImage(CTImageStorage, sop_uids[-1], None, location)
        volumes.append(Volume(hu[:, :, None], plane.affine_ras(), info=ctx.info(), sources=(source,)))
    return PhantomSeries(
        ctx.spec,
        ctx.series_instance_uid,
        ctx.info(),
        tuple(sop_uids),
        tuple(paths),
        phantom=None,
        localizers=tuple(volumes),
        datasets=tuple(datasets),
    )


def _emit(ds: Dataset, compression: Compression, save: _Save | None, paths: list, datasets: list) -> str:
    """Compress ``ds`` if asked, then save it (returning its path) or keep it in ``datasets``."""
    if compression is not None:
        ds.compress(TRANSFER_SYNTAX_UIDS[compression], generate_instance_uid=False)
    if save is None:
        datasets.append(ds)
        return ""
    paths.append(save(ds))
    return str(paths[-1])


def localizer_geometries(
    geometry: PhantomGeometry, anatomy: PhantomAnatomy | None = None
) -> tuple[tuple[PhantomGeometry, PhantomGeometry], ...]:
    """(image plane, projection grid) of the coronal and sagittal scouts covering ``geometry``'s voxel centres.

    The image plane is a one-slice geometry through the body's centre; the projection grid adds the depth axis
    (across the whole body) that ``project_phantom`` averages over.
    """
    anatomy = anatomy or PhantomAnatomy()
    affine = geometry.affine_lps()
    corners = np.array([[i, j, k, 1.0] for i in (0, geometry.shape[0] - 1)
                        for j in (0, geometry.shape[1] - 1) for k in (0, geometry.shape[2] - 1)])  # fmt: skip
    corners = (corners @ affine.T)[:, :3]
    lo, hi = corners.min(0), corners.max(0)
    body_lo, body_hi = anatomy.body.bounds_mm()  # only x and y are used: the body is unbounded in z
    body_centre = np.asarray(anatomy.centre_lps_mm)[:2] + (body_lo[:2] + body_hi[:2]) / 2.0
    pixel_mm = min(geometry.spacing_mm)
    out = []
    # coronal: columns along x, rows downwards (-z), depth along y; sagittal: columns along y, depth along -x
    for plane, width_axis, depth_axis in (("coronal", 0, 1), ("sagittal", 1, 0)):
        centre = (lo + hi) / 2.0
        centre[depth_axis] = body_centre[depth_axis]
        # at least 64 x 64 pixels (JPEG 2000 needs 32), widening the field around the same centre
        n_cols = max(64, round((hi[width_axis] - lo[width_axis]) / pixel_mm) + 1)
        n_rows = max(64, round((hi[2] - lo[2]) / pixel_mm) + 1)
        thickness = float(body_hi[depth_axis] - body_lo[depth_axis])
        n_depth = math.ceil(thickness / pixel_mm) + 1
        centre_mm = tuple(float(c) for c in centre)
        out.append((
            PhantomGeometry((n_cols, n_rows, 1), (pixel_mm, pixel_mm, thickness), plane, centre_mm),
            PhantomGeometry((n_cols, n_rows, n_depth), (pixel_mm, pixel_mm, pixel_mm), plane, centre_mm),
        ))  # fmt: skip
    return tuple(out)


def format_ds(values: Iterable[float]) -> list[str]:
    """Decimal strings (DS) of up to 16 characters, without "-0.0"."""
    return [format_number_as_ds(float(v) + 0.0) for v in values]


def base_dataset(ctx: _SeriesContext, sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    """Patient, study, series, frame of reference, equipment and SOP common attributes."""
    spec, patient, study = ctx.spec, ctx.patient, ctx.study
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(spec.image_type)
    ds.InstanceCreationDate, ds.InstanceCreationTime = study.study_date, study.study_time
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, sop_instance_uid
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        setattr(ds, f"{prefix}Date", study.study_date)
        setattr(ds, f"{prefix}Time", study.study_time)
    ds.AccessionNumber = study.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = study.institution_name
    ds.ReferringPhysicianName = study.referring_physician_name
    ds.StudyDescription = study.study_description
    ds.SeriesDescription = spec.description
    ds.ManufacturerModelName = MANUFACTURER_MODEL_NAME
    ds.PatientName = patient.patient_name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.patient_birth_date
    ds.PatientSex = patient.patient_sex
    ds.BodyPartExamined = BODY_PART_EXAMINED
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = SOFTWARE_VERSIONS
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = ctx.study_instance_uid
    ds.SeriesInstanceUID = ctx.series_instance_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = spec.series_number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    if spec.kind == "derived":
        ds.DerivationDescription = "Thick-slab average of 3 adjacent slices"
    return ds


def _set_slice_attributes(ds: Dataset, geometry: PhantomGeometry, k: int, *, instance_number: int = 0) -> None:
    """Image plane and CT image attributes of slice k (single-frame)."""
    position = geometry.slice_position_lps(k)
    ds.InstanceNumber = instance_number or geometry.shape[2] - k
    ds.ImagePositionPatient = format_ds(position)
    ds.ImageOrientationPatient = format_ds(geometry.image_orientation_patient)
    ds.SliceThickness = format_ds([geometry.spacing_mm[2]])[0]
    ds.SliceLocation = format_ds([position @ geometry.normal])[0]
    ds.PixelSpacing = format_ds([geometry.spacing_mm[1], geometry.spacing_mm[0]])
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = format_ds([geometry.shape[0] * geometry.spacing_mm[0]])[0]
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.XRayTubeCurrent = 200
    ds.ConvolutionKernel = "STANDARD"
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"


def set_pixels(ds: Dataset, hu: np.ndarray) -> None:
    """Image pixel attributes and (uncompressed) pixel data of HU frames: (rows, cols) or (frames, rows, cols)."""
    stored = (hu.astype(np.int32) - RESCALE_INTERCEPT).astype("<i2")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds["PixelData"].VR = "OW"
