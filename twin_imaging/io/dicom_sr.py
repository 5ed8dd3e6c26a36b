"""Structure measurements as a DICOM SR measurement report (TID 1500), with highdicom, referencing the SEG.

sr = write_measurement_report(seg, measurements, source_headers, card)

A Comprehensive 3D SR document holding:
- observer context: the model as a device (name = model id, model name = "id version", a UID derived from both);
- procedure reported: CT of abdomen (SNOMED CT 169070004), or "MRI unspecified body region" for an MR model;
- one TID 1411 volumetric ROI group per segment of the SEG: tracking identifier = the structure name, finding
  category/type (and laterality as finding site) = the card's SNOMED codes, the referenced segment (SEG instance +
  segment number, with the source series), the algorithm (model id, version), and the measurements:
  Volume (SCT 118565006, mL); attenuation coefficient (DCM 112031, HU) with derivation Mean (SCT 373098007) and
  Standard Deviation (SCT 386136009); the extents along the principal axes: Major Axis (SCT 131187009), Minor Axis
  (SCT 131188004), Perpendicular Axis (SCT 131189007), mm; for tubular structures Short axis (SCT 103340004, mm)
  with derivation Maximum (SCT 56851009), the largest of the axial cross-sections;
- where the quality review asks for a human look, a qualitative evaluation in the structure's group: "Review
  required" with the reason, both in the project's own coding scheme 99TWIN (DICOM has no concept for them).
The SEG and the source images are its evidence, so the SR takes the patient and study of the source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import twin_imaging
from twin_imaging.io.dicom_uids import derived_uid, tracking_uid
from twin_imaging.measure import StructureMeasurement
from twin_imaging.models.card import CodedConcept, ModelCard, StructureSpec
from twin_imaging.quality_review import UNATTACHED_MASS_LEFT_OUT, ReviewReason

_VERSION = twin_imaging.__version__  # the measurements follow from the SEG and this code
CT_OF_ABDOMEN = hd.sr.CodedConcept("169070004", "SCT", "Computed tomography of abdomen")
MILLILITER = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
ATTENUATION_COEFFICIENT = hd.sr.CodedConcept("112031", "DCM", "Attenuation Coefficient")
REVIEW_REQUIRED = hd.sr.CodedConcept("REVIEW", "99TWIN", "Review required")
REVIEW_REASONS = {  # quality_review codes → the SR's coded reason
    "cut_by_field_of_view": hd.sr.CodedConcept("CUT-FOV", "99TWIN", "Cut by the field of view"),
    "volume_outside_adult_range": hd.sr.CodedConcept("VOL-RANGE", "99TWIN", "Volume outside the adult range"),
    "unexpected_laterality": hd.sr.CodedConcept("LATERALITY", "99TWIN", "Unexpected laterality"),
    "renal_mass_not_validated": hd.sr.CodedConcept("RENAL-MASS", "99TWIN", "Renal mass model not validated"),
    "unattached_mass_left_out": hd.sr.CodedConcept("MASS-LEFT-OUT", "99TWIN", "Mass away from its organ left out"),
}


def write_measurement_report(
    seg: Dataset,
    measurements: Sequence[StructureMeasurement],
    source_headers: Sequence[Dataset],
    card: ModelCard,
    *,
    review: Sequence[ReviewReason] = (),
    series_number: int = 901,
    instance_number: int = 1,
    manufacturer: str = "twin-imaging",
) -> Dataset:
    """A TID 1500 measurement report of ``measurements``, one group per segment of ``seg`` (matched by name).

    Every segment of the SEG needs a measurement; a measurement of a structure the SEG lacks is an error unless it
    counts no voxels (an empty structure, omitted from the SEG), in which case it is left out. ``review``: the
    quality review's reasons, each written into the group of every structure it names (``_review_groups``).
    """
    if not source_headers:
        raise ValueError("the measurement report needs the source images' headers")
    study_uid = str(source_headers[0].StudyInstanceUID)
    if str(seg.StudyInstanceUID) != study_uid:
        raise ValueError(f"the SEG belongs to study {seg.StudyInstanceUID}, the source images to {study_uid}")
    source_series_uid = str(source_headers[0].SeriesInstanceUID)
    segment_numbers = {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}
    by_name = _measurements_by_segment(measurements, segment_numbers)

    algorithm = hd.sr.AlgorithmIdentification(name=card.model_id, version=card.version)
    review_groups = _review_groups(review, set(segment_numbers), card)
    groups = []
    for name, number in sorted(segment_numbers.items(), key=lambda item: item[1]):
        try:
            spec = card.structure(name)
        except KeyError:
            raise ValueError(f"SEG segment {number} ({name!r}) is not a structure of model {card.model_id}") from None
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid(source_headers, name), identifier=name),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.SOPClassUID,
                    sop_instance_uid=seg.SOPInstanceUID,
                    segment_number=number,
                    source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
                ),
                finding_category=_coded(spec.category),
                finding_type=_coded(spec.type),
                finding_sites=_finding_sites(spec),
                algorithm_id=algorithm,
                measurements=_measurements(by_name[name], ct=card.modality == "CT"),
                qualitative_evaluations=_review_items(name, review_groups),
            )
        )

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["twin-imaging model", card.model_id, card.version]),
        name=card.model_id,
        manufacturer_name=manufacturer,
        model_name=f"{card.model_id} {card.version}",
    )
    observation_context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    procedure = CT_OF_ABDOMEN if card.modality == "CT" else codes.cid100.MRIUnspecifiedBodyRegion
    report = hd.sr.MeasurementReport(
        observation_context=observation_context, procedure_reported=procedure, imaging_measurements=groups
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[seg, *source_headers],
        content=report[0],
        series_instance_uid=derived_uid(source_headers, card, "sr.series"),
        series_number=series_number,
        sop_instance_uid=derived_uid(source_headers, card, "sr.instance", str(seg.SOPInstanceUID), _VERSION),
        instance_number=instance_number,
        manufacturer=manufacturer,
        is_complete=True,
        series_description=f"Measurements {card.model_id} {card.version}"[:64],
    )


def _measurements_by_segment(
    measurements: Sequence[StructureMeasurement], segment_numbers: dict[str, int]
) -> dict[str, StructureMeasurement]:
    by_name: dict[str, StructureMeasurement] = {}
    for measurement in measurements:
        if measurement.name in by_name:
            raise ValueError(f"two measurements of {measurement.name!r}")
        if measurement.name not in segment_numbers:
            if measurement.voxel_count == 0:
                continue
            raise ValueError(
                f"{measurement.name!r} was measured ({measurement.voxel_count} voxels) but the SEG has no such segment"
            )
        by_name[measurement.name] = measurement
    missing = sorted(set(segment_numbers) - set(by_name))
    if missing:
        raise ValueError(f"no measurements for the SEG segments {missing}")
    return by_name


def _measurements(measurement: StructureMeasurement, *, ct: bool) -> list[hd.sr.Measurement]:
    out = [hd.sr.Measurement(name=codes.SCT.Volume, value=_finite(measurement.volume_ml), unit=MILLILITER)]
    if ct:
        for value, derivation in (
            (measurement.hu_mean, codes.SCT.Mean),
            (measurement.hu_std, codes.SCT.StandardDeviation),
        ):
            if value is not None:
                out.append(
                    hd.sr.Measurement(
                        name=ATTENUATION_COEFFICIENT,
                        value=_finite(value),
                        unit=codes.UCUM.HounsfieldUnit,
                        derivation=derivation,
                    )
                )
    extents = measurement.principal_extents
    for axis, value in (
        (codes.SCT.MajorAxis, extents.major_axis_mm),
        (codes.SCT.MinorAxis, extents.minor_axis_mm),
        (codes.SCT.PerpendicularAxis, extents.perpendicular_axis_mm),
    ):
        out.append(hd.sr.Measurement(name=axis, value=_finite(value), unit=codes.UCUM.Millimeter))
    if measurement.short_axis_mm is not None:
        out.append(
            hd.sr.Measurement(
                name=codes.SCT.ShortAxis,
                value=_finite(measurement.short_axis_mm),
                unit=codes.UCUM.Millimeter,
                derivation=codes.SCT.Maximum,
            )
        )
    return out


def _review_groups(
    review: Sequence[ReviewReason], segment_names: set[str], card: ModelCard
) -> list[tuple[ReviewReason, set[str]]]:
    """Each reason with the groups it is written into: those of the structures it names. A mass left out of the
    masks (``unattached_mass_left_out``) has no segment of its own, or only the part that was kept: its reason goes
    to the structures it had to touch (the kidneys). A reason with no group left goes into every group: none is lost.
    """
    known = {s.name: s for s in card.structures}
    out = []
    for reason in review:
        names = set(reason.structures) & segment_names
        if reason.code == UNATTACHED_MASS_LEFT_OUT:
            names = {a for n in reason.structures if n in known for a in known[n].attached_to} & segment_names
        out.append((reason, names or set(segment_names)))
    return out


def _review_items(name: str, review_groups: list[tuple[ReviewReason, set[str]]]) -> list | None:
    items = [
        hd.sr.QualitativeEvaluation(name=REVIEW_REQUIRED, value=REVIEW_REASONS[reason.code])
        for reason, names in review_groups
        if name in names
    ]
    return items or None


def _finding_sites(spec: StructureSpec) -> list[hd.sr.FindingSite] | None:
    if spec.type_modifier is None:
        return None
    return [hd.sr.FindingSite(anatomic_location=_coded(spec.type), laterality=_coded(spec.type_modifier))]


def _coded(concept: CodedConcept) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=concept.value, scheme_designator=concept.scheme, meaning=concept.meaning)


def _finite(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"a measurement value must be finite, got {value}")
    return value
