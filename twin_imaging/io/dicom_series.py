"""Group instances into series, split a series that holds several stacks, and choose the one to analyse.

Rules, in order: the series must be CT or MR, not a localizer/scout, reformat or secondary derived series, have
enough slices, and a sound geometry. Among the usable ones prefer an axial plane, then the most slices, then the
thinnest slice spacing. Original images rank above DERIVED\\PRIMARY ones (e.g. lossy-compressed), after the plane.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from twin_imaging.errors import DicomInputError
from twin_imaging.io.dicom_frames import Frame, frames_of
from twin_imaging.io.dicom_geometry import ORIENTATION_TOLERANCE, StackGeometry, analyse_stack, plane_of
from twin_imaging.io.dicom_sources import CollectedInstances, DicomInstance
from twin_imaging.settings import get_settings
from twin_imaging.volume import SeriesInfo

log = logging.getLogger(__name__)

VOLUME_MODALITIES = ("CT", "MR")
_SCOUT_WORDS = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM")
_REFORMAT_WORDS = ("MPR", "MIP", "MINIP", "PROJECTION", "REFORMAT", "CURVED", "VOLUME_RENDER", "CPR")


@dataclass
class SeriesCandidate:
    """One stack of images: a whole series, or one stack of a series that held several."""

    series_instance_uid: str
    info: SeriesInfo
    geometry: StackGeometry
    stack_label: str = ""  # e.g. "stack 2 of 3 (split by orientation)"; empty for a series of one stack
    problems: list[str] = field(default_factory=list)  # why it cannot be used
    choice_reason: str = ""  # why it was chosen (set on the chosen one)

    @property
    def frames(self) -> list[Frame]:
        return self.geometry.frames

    @property
    def n_slices(self) -> int:
        return len(self.geometry.frames)

    @property
    def plane(self) -> str:
        return plane_of(self.frames[0])

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def rejection_reason(self) -> str:
        """Why it was not chosen: its problems, or that a usable series ranked higher."""
        return "; ".join(self.problems) or "usable, but another series ranked higher"

    @property
    def label(self) -> str:
        uid = self.series_instance_uid or "(no SeriesInstanceUID)"
        number = f"#{self.info.series_number} " if self.info.series_number is not None else ""
        description = f" '{self.info.series_description}'" if self.info.series_description else ""
        stack = f" [{self.stack_label}]" if self.stack_label else ""
        return f"{number}{self.info.modality or '??'}{description} {uid}{stack}"

    def summary(self) -> str:
        spacing = self.geometry.slice_spacing_mm
        step = f" at {spacing:.3g} mm" if spacing else ""
        return f"{self.label}: {self.n_slices} {self.plane} image(s){step}"


@dataclass
class SeriesSelection:
    candidates: list[SeriesCandidate]
    chosen: SeriesCandidate | None
    warnings: list[str] = field(default_factory=list)

    def explain(self) -> str:
        lines = []
        for candidate in self.candidates:
            mark = "chosen" if candidate is self.chosen else "not chosen"
            why = candidate.choice_reason if candidate is self.chosen else candidate.rejection_reason
            lines.append(f"  - {candidate.summary()} — {mark}" + (f": {why}" if why else ""))
        return "\n".join(lines)


def group_series(collected: CollectedInstances) -> list[SeriesCandidate]:
    """Group by SeriesInstanceUID, then split each series into stacks of like geometry."""
    settings = get_settings()
    by_series: dict[tuple, list[DicomInstance]] = defaultdict(list)
    for instance in collected.instances:
        by_series[_series_key(instance)].append(instance)
    candidates: list[SeriesCandidate] = []
    for key, instances in by_series.items():
        info = series_info(instances[0].header)
        frames = [frame for instance in instances for frame in frames_of(instance)]
        stacks = _split_stacks(frames)
        for number, (reason, stack) in enumerate(stacks, start=1):
            geometry = analyse_stack(
                stack,
                spacing_tolerance=settings.dicom_slice_spacing_tolerance,
                max_tilt_degrees=settings.dicom_max_tilt_degrees,
            )
            label = f"stack {number} of {len(stacks)}, split by {reason}" if len(stacks) > 1 else ""
            candidate = SeriesCandidate(key[0], info, geometry, label)
            candidate.problems = _rule_problems(candidate, settings.dicom_min_slices) + geometry.problems
            candidates.append(candidate)
    candidates.sort(key=lambda c: (c.info.series_number is None, c.info.series_number or 0, c.label))
    return candidates


def select_series(candidates: list[SeriesCandidate], *, series_instance_uid: str | None = None) -> SeriesSelection:
    """Choose the series to analyse; raise ``DicomInputError`` naming every series' problems if none fits."""
    if not candidates:
        raise DicomInputError("no DICOM images found in the input")
    pool = candidates
    if series_instance_uid:
        pool = [c for c in candidates if c.series_instance_uid == series_instance_uid]
        if not pool:
            found = ", ".join(sorted({c.series_instance_uid or "(none)" for c in candidates}))
            raise DicomInputError(f"series {series_instance_uid} is not in the input (found: {found})")
    selection = SeriesSelection(candidates, None)
    _check_one_patient(pool)
    usable = [c for c in pool if c.usable]
    if not usable:
        raise DicomInputError("no usable image series in the input:\n" + SeriesSelection(pool, None).explain())
    ranked = sorted(usable, key=_preference, reverse=True)
    chosen = ranked[0]
    chosen.choice_reason = _choice_reason(chosen, ranked[1:], explicit=bool(series_instance_uid))
    selection.chosen = chosen
    return selection


def series_info(ds) -> SeriesInfo:
    number = ds.get("SeriesNumber")
    return SeriesInfo(
        modality=str(ds.get("Modality", "") or ""),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        series_number=int(number) if number not in (None, "") else None,
        series_description=str(ds.get("SeriesDescription", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        study_time=str(ds.get("StudyTime", "") or ""),
        study_description=str(ds.get("StudyDescription", "") or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        body_part_examined=str(ds.get("BodyPartExamined", "") or ""),
        image_type=tuple(str(v) for v in (ds.get("ImageType") or ())),
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        patient_birth_date=str(ds.get("PatientBirthDate", "") or ""),
        patient_sex=str(ds.get("PatientSex", "") or ""),
        accession_number=str(ds.get("AccessionNumber", "") or ""),
    )


def _series_key(instance: DicomInstance) -> tuple:
    ds = instance.header
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if uid:
        return (uid,)
    # Blank UIDs happen in anonymised exports: fall back to attributes that a series shares.
    return (
        "",
        str(ds.get("StudyInstanceUID", "") or ""),
        str(ds.get("Modality", "") or ""),
        str(ds.get("SeriesNumber", "") or ""),
        str(ds.get("SeriesDescription", "") or ""),
        str(ds.get("FrameOfReferenceUID", "") or ""),
    )


def _split_stacks(frames: list[Frame]) -> list[tuple[str, list[Frame]]]:
    """Split frames into stacks of one orientation, size, pixel spacing, echo and temporal position."""
    groups: list[tuple[tuple, list[Frame]]] = []
    for frame in frames:
        key = _stack_key(frame)
        for existing_key, members in groups:
            if _same_stack(existing_key, key):
                members.append(frame)
                break
        else:
            groups.append((key, [frame]))
    if len(groups) == 1:
        return [("", groups[0][1])]
    differing = _differing_parts([key for key, _ in groups])
    return [(differing, members) for _, members in groups]


def _stack_key(frame: Frame) -> tuple:
    orientation = np.concatenate([frame.row_cosines, frame.column_cosines]) if frame.row_cosines is not None else None
    return (orientation, (frame.rows, frame.columns), frame.pixel_spacing_mm, frame.stack_key)


def _same_stack(a: tuple, b: tuple) -> bool:
    if (a[0] is None) != (b[0] is None):
        return False
    if a[0] is not None and np.max(np.abs(a[0] - b[0])) > ORIENTATION_TOLERANCE:
        return False
    same_spacing = a[2] == b[2] or (a[2] is not None and b[2] is not None and np.allclose(a[2], b[2], rtol=1e-3))
    return a[1] == b[1] and same_spacing and a[3] == b[3]


def _differing_parts(keys: list[tuple]) -> str:
    names = []
    if any(not _same_stack((k[0], (), None, ()), (keys[0][0], (), None, ())) for k in keys):
        names.append("orientation")
    if len({k[1] for k in keys}) > 1:
        names.append("image size")
    if len({k[2] for k in keys}) > 1:
        names.append("pixel spacing")
    if len({k[3] for k in keys}) > 1:
        names.append("echo/temporal position/stack")
    return " and ".join(names) or "geometry"


def _rule_problems(candidate: SeriesCandidate, min_slices: int) -> list[str]:
    info = candidate.info
    problems = []
    if info.modality not in VOLUME_MODALITIES:
        problems.append(f"modality {info.modality or '(blank)'} is not CT or MR")
    image_type = [v.upper() for v in info.image_type]
    description = info.series_description.upper()
    if (
        any(word in v for word in _SCOUT_WORDS for v in image_type)
        or "LOCALIZER" in description
        or "SCOUT" in description
    ):
        problems.append("a localizer/scout series")
    elif _is_secondary_derived(image_type):
        problems.append("a derived series (ImageType " + "\\".join(info.image_type) + ")")
    if candidate.n_slices < min_slices:
        problems.append(f"only {candidate.n_slices} image(s); a volume needs at least {min_slices}")
    if any(frame.instance.header.get("SamplesPerPixel", 1) not in (1, None) for frame in candidate.frames[:1]):
        problems.append("a colour image (SamplesPerPixel > 1)")
    return problems


def _is_secondary_derived(image_type: list[str]) -> bool:
    """Reformats, projections and secondary captures: not the acquired volume.

    DERIVED\\PRIMARY stays usable: the standard requires it of lossy-compressed images (a PACS archive may hold
    nothing else), and of some reconstructions; it only ranks below ORIGINAL.
    """
    if not image_type or image_type[0] != "DERIVED":
        return False
    secondary = len(image_type) > 1 and image_type[1] == "SECONDARY"
    return secondary or any(word in value for word in _REFORMAT_WORDS for value in image_type[2:])


def _is_original(candidate: SeriesCandidate) -> bool:
    return not candidate.info.image_type or candidate.info.image_type[0].upper() != "DERIVED"


def _preference(candidate: SeriesCandidate) -> tuple:
    spacing = candidate.geometry.slice_spacing_mm or np.inf
    return (candidate.plane == "axial", _is_original(candidate), candidate.n_slices, -spacing)


def _choice_reason(chosen: SeriesCandidate, others: list[SeriesCandidate], *, explicit: bool) -> str:
    if explicit:
        return "chosen by SeriesInstanceUID"
    if not others:
        return "the only usable CT/MR image series"
    runner_up = others[0]
    if (chosen.plane == "axial") != (runner_up.plane == "axial"):
        why = f"axial, where the next best is {runner_up.plane}"
    elif _is_original(chosen) != _is_original(runner_up):
        why = "original images, where the next best is derived"
    elif chosen.n_slices != runner_up.n_slices:
        why = f"most slices ({chosen.n_slices} vs {runner_up.n_slices})"
    else:
        why = (
            f"thinnest slices ({chosen.geometry.slice_spacing_mm:.3g} vs {runner_up.geometry.slice_spacing_mm:.3g} mm)"
        )
    return f"best of {len(others) + 1} usable series: {why}"


def _check_one_patient(candidates: list[SeriesCandidate]) -> None:
    """Refuse input mixing patients, checking every image. The message names files, never patient identifiers."""
    identities: dict[tuple, str] = {}
    for candidate in candidates:
        for frame in candidate.frames:
            ds = frame.instance.header
            identity = tuple(str(ds.get(k, "") or "") for k in ("PatientID", "PatientName", "PatientBirthDate"))
            identities.setdefault(identity, frame.instance.location)
    if len(identities) > 1:
        examples = ", ".join(list(identities.values())[:3])
        raise DicomInputError(
            f"the input holds images of {len(identities)} different patients (by PatientID, name and birth "
            f"date; e.g. files {examples}); give one patient's images, or choose a series with its UID"
        )
