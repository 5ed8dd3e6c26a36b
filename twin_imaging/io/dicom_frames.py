"""One record per 2D image ("frame"), whether it is a single-frame instance or a frame of an Enhanced
(multi-frame) CT/MR instance, so grouping, sorting and validation treat both alike.

Enhanced objects keep geometry and rescale in functional groups (shared, or per frame); this module reads them
in the precedence the standard gives: a per-frame group overrides the shared one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from twin_imaging.io.dicom_sources import DicomInstance


@dataclass
class Frame:
    instance: DicomInstance
    frame_index: int | None  # 0-based frame of a multi-frame instance; None for a single-frame instance
    rows: int
    columns: int
    position_lps: np.ndarray | None  # ImagePositionPatient: centre of the first transmitted pixel, mm
    row_cosines: np.ndarray | None  # direction of increasing column index (IOP[0:3])
    column_cosines: np.ndarray | None  # direction of increasing row index (IOP[3:6])
    pixel_spacing_mm: tuple[float, float] | None  # (between rows, between columns), DICOM order
    slice_thickness_mm: float | None
    rescale_slope: float
    rescale_intercept: float
    stack_key: tuple  # extra split key from the frame's own attributes (echo, temporal position, stack id)

    @property
    def normal(self) -> np.ndarray | None:
        if self.row_cosines is None or self.column_cosines is None:
            return None
        return np.cross(self.row_cosines, self.column_cosines)

    @property
    def location(self) -> str:
        where = self.instance.location
        return where if self.frame_index is None else f"{where} frame {self.frame_index + 1}"


def frames_of(instance: DicomInstance) -> list[Frame]:
    """The frames of one instance (one for a single-frame image)."""
    ds = instance.header
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return [_enhanced_frame(instance, index) for index in range(n_frames)]
    if n_frames > 1:
        # A legacy multi-frame image without functional groups (e.g. some NM/US): no per-frame geometry.
        return [_frame(instance, ds, index, position=None) for index in range(n_frames)]
    return [_frame(instance, ds, None, position=ds.get("ImagePositionPatient"))]


def _frame(instance: DicomInstance, ds: Dataset, frame_index: int | None, *, position) -> Frame:
    orientation = ds.get("ImageOrientationPatient")
    echo = ds.get("EchoNumbers")
    return Frame(
        instance=instance,
        frame_index=frame_index,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        position_lps=_vector(position, 3),
        row_cosines=_vector(orientation[:3], 3) if orientation is not None and len(orientation) == 6 else None,
        column_cosines=_vector(orientation[3:], 3) if orientation is not None and len(orientation) == 6 else None,
        pixel_spacing_mm=_pair(ds.get("PixelSpacing")),
        slice_thickness_mm=_number(ds.get("SliceThickness")),
        rescale_slope=_number(ds.get("RescaleSlope")) or 1.0,
        rescale_intercept=_number(ds.get("RescaleIntercept")) or 0.0,
        stack_key=(
            ("echo", str(echo)) if echo not in (None, "") else (),
            ("temporal", str(ds.get("TemporalPositionIdentifier", "") or "")),
        ),
    )


def _enhanced_frame(instance: DicomInstance, index: int) -> Frame:
    ds = instance.header

    def item(sequence_keyword: str) -> Dataset | None:
        """The frame's item of a functional group macro: per-frame first, then shared."""
        for groups_keyword, group_index in (
            ("PerFrameFunctionalGroupsSequence", index),
            ("SharedFunctionalGroupsSequence", 0),
        ):
            groups = ds.get(groups_keyword)
            if groups is not None and len(groups) > group_index:
                macro = groups[group_index].get(sequence_keyword)
                if macro:
                    return macro[0]
        return None

    position = item("PlanePositionSequence")
    orientation = item("PlaneOrientationSequence")
    measures = item("PixelMeasuresSequence")
    rescale = item("PixelValueTransformationSequence")
    content = item("FrameContentSequence")
    echo = item("MREchoSequence")
    iop = orientation.get("ImageOrientationPatient") if orientation is not None else None
    return Frame(
        instance=instance,
        frame_index=index,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        position_lps=_vector(position.get("ImagePositionPatient") if position is not None else None, 3),
        row_cosines=_vector(iop[:3], 3) if iop is not None and len(iop) == 6 else None,
        column_cosines=_vector(iop[3:], 3) if iop is not None and len(iop) == 6 else None,
        pixel_spacing_mm=_pair(measures.get("PixelSpacing") if measures is not None else None),
        slice_thickness_mm=_number(measures.get("SliceThickness") if measures is not None else None),
        rescale_slope=_number(rescale.get("RescaleSlope") if rescale is not None else None)
        or _number(ds.get("RescaleSlope"))
        or 1.0,
        rescale_intercept=_number(rescale.get("RescaleIntercept") if rescale is not None else None)
        or _number(ds.get("RescaleIntercept"))
        or 0.0,
        stack_key=(
            ("stack", str(content.get("StackID", "") or "")) if content is not None else (),
            ("temporal", str(content.get("TemporalPositionIndex", "") or "")) if content is not None else (),
            ("echo", str(echo.get("EffectiveEchoTime", "") or "")) if echo is not None else (),
        ),
    )


def _vector(value, length: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if values.shape != (length,) or not np.all(np.isfinite(values)):
        return None
    return values


def _pair(value) -> tuple[float, float] | None:
    vector = _vector(value, 2)
    if vector is None or np.any(vector <= 0):
        return None
    return float(vector[0]), float(vector[1])


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
