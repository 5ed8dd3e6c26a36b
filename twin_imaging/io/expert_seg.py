"""A radiologist's DICOM SEG of kidneys and renal masses: what it segments, whose it is, and its label map.

Segments are mapped by their Segmented Property Type (SNOMED CT), never by their free-text label:

- kidney: 64033007 Kidney (with the laterality modifier 24028007 Right / 7771000 Left, if any), or the lateral
  concepts 9846003 Right kidney / 18639004 Left kidney;
- renal tumour: 108369006 Neoplasm (Tumor), 4147007 Mass or 52988006 Lesion;
- renal cyst: 367643001 Cyst.

Any other segment is listed as not used, and so is a segment whose Segment Algorithm Type is AUTOMATIC: only a
person's masks (MANUAL, or SEMIAUTOMATIC: drawn with a tool's help and accepted by its author) replace the model's,
so a SEG written by twin-imaging itself or another algorithm and sent back is refused. A SEG with no such kidney,
tumour or cyst segment is refused: it cannot stand in for the model's kidney masks. The label map is placed on the
analysed series' grid by ``read_dicom_seg`` (by source instance, else by geometry; a SEG whose frames do not lie on
that grid is refused).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from twin_imaging.errors import DicomInputError
from twin_imaging.io.dicom_seg import read_dicom_seg
from twin_imaging.volume import Volume

SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_SCHEMES = {"SCT", "SRT"}  # SNOMED CT, and its retired designator still written by older tools
_KIDNEY, _RIGHT_KIDNEY, _LEFT_KIDNEY = "64033007", "9846003", "18639004"
_RIGHT, _LEFT = "24028007", "7771000"
_TUMOUR_CODES = {"108369006": "Neoplasm", "4147007": "Mass", "52988006": "Lesion"}
_CYST_CODES = {"367643001": "Cyst"}
_BY_A_PERSON = {"MANUAL", "SEMIAUTOMATIC"}
# the label values of the map ``read_expert_labels`` returns
EXPERT_LABELS = {1: "kidney_right", 2: "kidney_left", 3: "kidney", 4: "renal_tumor", 5: "renal_cyst"}
_VALUE_OF = {name: value for value, name in EXPERT_LABELS.items()}


@dataclass(frozen=True)
class ExpertSegment:
    number: int
    label: str  # the SEG's own Segment Label, as written
    code: str  # SNOMED CT code of the Segmented Property Type
    meaning: str
    structure: str | None  # kidney_right, kidney_left, kidney, renal_tumor, renal_cyst; None: not used
    algorithm_type: str = ""  # MANUAL, SEMIAUTOMATIC, AUTOMATIC

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "label": self.label,
            "code": self.code,
            "meaning": self.meaning,
            "structure": self.structure,
            "algorithm_type": self.algorithm_type,
        }


@dataclass(frozen=True)
class ExpertSegInfo:
    sop_instance_uid: str
    study_instance_uid: str
    referenced_series_uid: str
    patient_id: str
    author: str  # Content Creator's Name, else the operator or the manufacturer, else "not named"
    content_label: str
    segments: tuple[ExpertSegment, ...]

    def used(self) -> tuple[ExpertSegment, ...]:
        return tuple(s for s in self.segments if s.structure is not None)


def describe_expert_seg(dataset: Dataset) -> ExpertSegInfo:
    """Who made the SEG, what it references and how its segments map (see the module docstring)."""
    if str(dataset.get("SOPClassUID", "")) != SEGMENTATION_SOP_CLASS:
        raise DicomInputError(f"not a DICOM Segmentation (SOP class {dataset.get('SOPClassUID', 'missing')})")
    referenced = [str(item.get("SeriesInstanceUID", "")) for item in dataset.get("ReferencedSeriesSequence", [])]
    referenced = [uid for uid in referenced if uid]
    if len(set(referenced)) != 1:
        raise DicomInputError(
            f"the SEG must reference exactly one source series (ReferencedSeriesSequence), found {len(set(referenced))}"
        )
    segments = tuple(_segment(item) for item in dataset.get("SegmentSequence", []))
    if not any(s.structure for s in segments) and any(s.algorithm_type == "AUTOMATIC" for s in segments):
        raise DicomInputError(
            "the SEG's kidney and mass segments are AUTOMATIC (an algorithm's): only a radiologist's MANUAL or "
            "SEMIAUTOMATIC segmentation replaces the model's masks"
        )
    if not any(s.structure for s in segments):
        found = ", ".join(f"{s.number} {s.label!r} ({s.code} {s.meaning})" for s in segments) or "none"
        raise DicomInputError(
            "the SEG has no kidney, renal tumour or renal cyst segment (mapped by SNOMED CT property type: kidney "
            f"64033007/9846003/18639004, tumour 108369006/4147007/52988006, cyst 367643001); its segments: {found}"
        )
    return ExpertSegInfo(
        sop_instance_uid=str(dataset.SOPInstanceUID),
        study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
        referenced_series_uid=referenced[0],
        patient_id=str(dataset.get("PatientID", "") or ""),
        author=_author(dataset),
        content_label=str(dataset.get("ContentLabel", "") or ""),
        segments=segments,
    )


def read_expert_labels(dataset: Dataset, info: ExpertSegInfo, reference: Volume) -> Volume:
    """The SEG's used segments as a label map on ``reference``'s grid (values and names ``EXPERT_LABELS``)."""
    dataset = copy.deepcopy(dataset)
    for item in dataset.SegmentSequence:  # so read_dicom_seg labels voxels by segment number, whoever wrote it
        item.SegmentDescription = ""
    try:
        segmentation = hd.seg.Segmentation.from_dataset(dataset, copy=False)
        by_number = read_dicom_seg(segmentation, reference)
    except (ValueError, AttributeError, KeyError) as exc:
        raise DicomInputError(f"the SEG cannot be placed on the analysed series' grid: {exc}") from None
    # read_dicom_seg labels an expert SEG's voxels by segment number (no twin-imaging label values recorded)
    lookup = np.zeros(max(int(by_number.array.max()), max(s.number for s in info.segments)) + 1, dtype=np.uint8)
    for segment in info.used():
        lookup[segment.number] = _VALUE_OF[segment.structure]
    array = lookup[by_number.array]
    if not np.any(array):
        raise DicomInputError("the SEG's kidney, tumour and cyst segments hold no voxel on the analysed series")
    present = {int(v) for v in np.unique(array) if v}
    return reference.with_array(array, label_names={v: EXPERT_LABELS[v] for v in sorted(present)})


def _segment(item: Dataset) -> ExpertSegment:
    number = int(item.SegmentNumber)
    label = str(item.get("SegmentLabel", "") or "")
    algorithm = str(item.get("SegmentAlgorithmType", "") or "").upper()
    types = item.get("SegmentedPropertyTypeCodeSequence") or []
    if not types:
        return ExpertSegment(number, label, "", "", None, algorithm)
    concept = types[0]
    code, scheme = str(concept.get("CodeValue", "")), str(concept.get("CodingSchemeDesignator", ""))
    meaning = str(concept.get("CodeMeaning", ""))
    if scheme not in _SCHEMES or algorithm not in _BY_A_PERSON:
        return ExpertSegment(number, label, code, meaning, None, algorithm)
    modifiers = {str(m.get("CodeValue", "")) for m in concept.get("SegmentedPropertyTypeModifierCodeSequence", [])}
    structure = None
    if code == _RIGHT_KIDNEY or (code == _KIDNEY and _RIGHT in modifiers):
        structure = "kidney_right"
    elif code == _LEFT_KIDNEY or (code == _KIDNEY and _LEFT in modifiers):
        structure = "kidney_left"
    elif code == _KIDNEY:
        structure = "kidney"
    elif code in _TUMOUR_CODES:
        structure = "renal_tumor"
    elif code in _CYST_CODES:
        structure = "renal_cyst"
    return ExpertSegment(number, label, code, meaning, structure, algorithm)


def _author(dataset: Dataset) -> str:
    for keyword in ("ContentCreatorName", "OperatorsName"):
        value = str(dataset.get(keyword, "") or "").strip()
        if value:
            return value.replace("^", " ").strip()
    manufacturer = str(dataset.get("Manufacturer", "") or "").strip()
    return f"not named (made with {manufacturer})" if manufacturer else "not named"
