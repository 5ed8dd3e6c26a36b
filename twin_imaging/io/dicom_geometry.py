"""Geometry of a stack of frames: order along the slice normal, validation, and the voxel → patient affine.

Slices are ordered by the projection of ImagePositionPatient on the normal (row × column cosines), never by
InstanceNumber, which scanners number in either direction. A stack is refused, with every problem named, when its
slices are duplicated, missing, unevenly spaced, sheared (gantry tilt) or of mixed orientation or size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin_imaging.io.dicom_frames import Frame
from twin_imaging.volume import LPS_TO_RAS

ORIENTATION_TOLERANCE = 1e-3  # max difference of direction cosines within one stack
_LIST_LIMIT = 5


@dataclass
class StackGeometry:
    frames: list[Frame]  # sorted ascending along the normal
    positions_mm: np.ndarray  # each frame's position along the normal, ascending
    problems: list[str] = field(default_factory=list)

    @property
    def slice_spacing_mm(self) -> float | None:
        if len(self.positions_mm) < 2:
            return None
        return float((self.positions_mm[-1] - self.positions_mm[0]) / (len(self.positions_mm) - 1))

    def affine_lps(self) -> np.ndarray:
        """Voxel (i, j, k) → LPS mm. i runs along a row (column index), j down a column, k across slices."""
        first = self.frames[0]
        row_spacing, column_spacing = first.pixel_spacing_mm  # type: ignore[misc]
        spacing_k = self.slice_spacing_mm or first.slice_thickness_mm or 1.0
        affine = np.eye(4)
        affine[:3, 0] = first.row_cosines * column_spacing
        affine[:3, 1] = first.column_cosines * row_spacing
        affine[:3, 2] = first.normal * spacing_k
        affine[:3, 3] = first.position_lps
        return affine

    def affine_ras(self) -> np.ndarray:
        return LPS_TO_RAS @ self.affine_lps()


def plane_of(frame: Frame) -> str:
    """'axial', 'coronal', 'sagittal' or 'oblique' from the slice normal (within about 10 degrees)."""
    normal = frame.normal
    if normal is None:
        return "unknown"
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < np.cos(np.radians(10)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def analyse_stack(frames: list[Frame], *, spacing_tolerance: float, max_tilt_degrees: float) -> StackGeometry:
    """Sort ``frames`` along their normal and list every geometric problem (empty if the stack is sound)."""
    problems = _missing_geometry(frames)
    if problems:
        return StackGeometry(frames, np.zeros(len(frames)), problems)
    problems += _mixed_frames(frames)
    normal = frames[0].normal
    positions = np.array([float(f.position_lps @ normal) for f in frames])
    order = np.argsort(positions, kind="stable")
    frames = [frames[i] for i in order]
    positions = positions[order]
    geometry = StackGeometry(frames, positions, problems)
    if len(frames) >= 2:
        geometry.problems += _spacing_problems(frames, positions, spacing_tolerance)
        if not geometry.problems:
            geometry.problems += _tilt_problems(frames, positions, max_tilt_degrees)
    return geometry


def _missing_geometry(frames: list[Frame]) -> list[str]:
    needs = {
        "ImagePositionPatient": [f for f in frames if f.position_lps is None],
        "ImageOrientationPatient": [f for f in frames if f.row_cosines is None],
        "PixelSpacing": [f for f in frames if f.pixel_spacing_mm is None],
    }
    problems = [
        f"{len(lacking)} of {len(frames)} image(s) lack a valid {keyword} (e.g. {lacking[0].location})"
        for keyword, lacking in needs.items()
        if lacking
    ]
    for frame in frames:
        if frame.row_cosines is None:
            continue
        norms = np.linalg.norm(frame.row_cosines), np.linalg.norm(frame.column_cosines)
        if not np.allclose(norms, 1.0, atol=1e-3) or abs(frame.row_cosines @ frame.column_cosines) > 1e-3:
            problems.append(f"ImageOrientationPatient of {frame.location} is not two orthonormal vectors")
            break
    return problems


def _mixed_frames(frames: list[Frame]) -> list[str]:
    first = frames[0]
    problems = []
    if any(
        np.max(np.abs(f.row_cosines - first.row_cosines)) > ORIENTATION_TOLERANCE
        or np.max(np.abs(f.column_cosines - first.column_cosines)) > ORIENTATION_TOLERANCE
        for f in frames
    ):
        problems.append("mixed slice orientations (ImageOrientationPatient differs between images)")
    if any((f.rows, f.columns) != (first.rows, first.columns) for f in frames):
        problems.append("mixed image sizes (Rows/Columns differ between images)")
    if any(not np.allclose(f.pixel_spacing_mm, first.pixel_spacing_mm, rtol=1e-3) for f in frames):
        problems.append("mixed PixelSpacing between images")
    return problems


def _spacing_problems(frames: list[Frame], positions: np.ndarray, tolerance: float) -> list[str]:
    """Duplicates, missing slices (gaps that are whole multiples of the step) and uneven spacing."""
    steps = np.diff(positions)
    duplicate_tolerance = 1e-3  # mm: positions closer than this are the same slice
    duplicates = [i for i, step in enumerate(steps) if step < duplicate_tolerance]
    positive = steps[steps >= duplicate_tolerance]
    problems = []
    if duplicates:
        described = [f"{positions[i]:.2f} mm ({frames[i].location}, {frames[i + 1].location})" for i in duplicates]
        problems.append(f"{len(duplicates)} duplicate slice position(s) along the normal: " + _listed(described))
    if positive.size == 0:
        return problems
    step = _nominal_step(frames, positive, tolerance)
    allowed = max(tolerance * step, 1e-3)
    gaps, uneven = [], []
    for i, delta in enumerate(steps):
        if delta < duplicate_tolerance or abs(delta - step) <= allowed:
            continue
        multiple = delta / step
        if abs(multiple - round(multiple)) * step <= allowed:
            gaps.append((i, round(multiple) - 1))
        else:
            uneven.append(i)
    if gaps:
        missing = sum(n for _, n in gaps)
        described = [f"{n} between {positions[i]:.2f} and {positions[i + 1]:.2f} mm" for i, n in gaps]
        problems.append(f"{missing} missing slice position(s) at a step of {step:.3g} mm: " + _listed(described))
    if uneven:
        described = [f"{steps[i]:.3g} mm after {positions[i]:.2f} mm" for i in uneven]
        problems.append(f"uneven slice spacing (step {step:.3g} mm, tolerance {allowed:.2g} mm): " + _listed(described))
    return problems


def _nominal_step(frames: list[Frame], steps: np.ndarray, tolerance: float) -> float:
    """The series' slice step: the header's SpacingBetweenSlices or SliceThickness if every step is a whole
    multiple of it (slices can go missing, never appear in between), else the smallest step.
    """
    smallest = float(np.min(steps))
    header = frames[0].instance.header
    stated = [header.get("SpacingBetweenSlices"), frames[0].slice_thickness_mm]
    candidates = [float(s) for s in stated if s not in (None, "") and 0 < float(s) <= smallest * (1 + tolerance)]
    for candidate in candidates:
        multiples = steps / candidate
        if np.all(np.abs(multiples - np.round(multiples)) * candidate <= max(tolerance * candidate, 1e-3)):
            return candidate
    return smallest


def _tilt_problems(frames: list[Frame], positions: np.ndarray, max_tilt_degrees: float) -> list[str]:
    """Slices whose positions do not advance along the normal are sheared: gantry tilt or a moving table."""
    normal = frames[0].normal
    travel = frames[-1].position_lps - frames[0].position_lps
    along = float(travel @ normal)
    across = float(np.linalg.norm(travel - along * normal))
    tilt_degrees = float(np.degrees(np.arctan2(across, abs(along))))
    if tilt_degrees <= max_tilt_degrees:
        return []
    stated = frames[0].instance.header.get("GantryDetectorTilt")
    hint = f"; GantryDetectorTilt says {float(stated):g} degrees" if stated not in (None, "") else ""
    return [
        f"slices are sheared by {tilt_degrees:.2f} degrees (gantry tilt{hint}): the stack is not a "
        "rectilinear volume; reconstruct it without tilt or resample it first"
    ]


def _listed(items: list[str]) -> str:
    shown = "; ".join(items[:_LIST_LIMIT])
    return shown + (f"; and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else "")
