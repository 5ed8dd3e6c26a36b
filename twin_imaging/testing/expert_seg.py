"""A radiologist's DICOM SEG made from a phantom's own labels, as a reading workstation would write it (highdicom):
manual segments coded by SNOMED CT, the content creator named, referencing the phantom series' instances."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from twin_imaging.volume import Volume

# structure → (property category, property type (value, meaning), laterality modifier or None)
SEGMENT_CODES: dict[str, tuple[hd.sr.CodedConcept, tuple[str, str], tuple[str, str] | None]] = {
    "kidney_right": (codes.SCT.Organ, ("9846003", "Right kidney"), None),
    "kidney_left": (codes.SCT.Organ, ("64033007", "Kidney"), ("7771000", "Left")),
    "renal_tumor": (codes.SCT.MorphologicallyAbnormalStructure, ("108369006", "Neoplasm"), None),
    "renal_cyst": (codes.SCT.MorphologicallyAbnormalStructure, ("367643001", "Cyst"), None),
    "liver": (codes.SCT.Organ, ("10200004", "Liver"), None),
}


def radiologist_seg(
    sources: Sequence[Dataset],
    labels: Volume,
    structures: Mapping[str, str],
    *,
    author: str = "Radiologist^Rita",
    patient_id: str | None = None,
) -> Dataset:
    """A SEG of ``labels`` (on the grid of ``sources``, slice k the k-th source along the slice normal) holding the
    structures named in ``structures`` (label map name → ``SEGMENT_CODES`` key). ``patient_id`` overrides the
    source's Patient ID (to build a SEG of the wrong patient)."""
    normal = np.cross(*np.array(sources[0].ImageOrientationPatient, dtype=float).reshape(2, 3))
    ordered = sorted(sources, key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal)))
    by_name = {name: value for value, name in (labels.label_names or {}).items()}
    masks, descriptions = [], []
    for number, (name, kind) in enumerate(structures.items(), start=1):
        category, (code, meaning), modifier = SEGMENT_CODES[kind]
        masks.append(np.transpose(labels.array == by_name[name], (2, 1, 0)))  # [i, j, k] → frames, rows, columns
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=meaning if modifier is None else f"{modifier[1]} {meaning.lower()}",
            segmented_property_category=category,
            segmented_property_type=hd.sr.CodedConcept(code, "SCT", meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        if modifier is not None:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(modifier[0], "SCT", modifier[1])
            ]
        descriptions.append(description)
    seg = hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=np.stack(masks, axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=901,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Reading Workstation Inc.",
        manufacturer_model_name="Contour",
        software_versions="4.2",
        device_serial_number="RW-1",
        content_label="KIDNEY_MASS",
        content_creator_name=author,
    )
    if patient_id is not None:
        seg.PatientID = patient_id
    return seg
