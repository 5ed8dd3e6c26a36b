"""The TID 1500 measurement report: dciodvfy finds no errors, one group per SEG segment with the given numbers, and
references to the SEG and the source series, in the source's study."""

from __future__ import annotations

import copy
from dataclasses import replace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from tests.io.test_dicom_seg import (
    PHANTOM_CASES,
    SegCase,
    dciodvfy_messages,
    phantom_case,
    real_case,
    through_bytes,
)
from twin_imaging.clinical_measures import PrincipalExtents
from twin_imaging.io.dicom_seg import write_dicom_seg
from twin_imaging.io.dicom_sr import REVIEW_REQUIRED, write_measurement_report
from twin_imaging.measure import StructureMeasurement
from twin_imaging.quality_review import ReviewReason


def measurements_of(case: SegCase) -> list[StructureMeasurement]:
    """Hand-made measurements: volume from voxel counts, HU statistics of the image, a made-up diameter."""
    voxel_ml = float(np.prod(case.volume.spacing_mm)) / 1000.0
    out = []
    for spec in case.card.structures:
        mask = case.labels.array == spec.label
        count = int(mask.sum())
        hu = case.volume.array[mask].astype(np.float64)
        out.append(
            StructureMeasurement(
                name=spec.name,
                label=spec.label,
                voxel_count=count,
                volume_ml=count * voxel_ml,
                hu_mean=float(hu.mean()) if count else None,
                hu_std=float(hu.std()) if count else None,
                hu_percentiles={},
                bbox_min_ras_mm=(0.0, 0.0, 0.0),
                bbox_max_ras_mm=(0.0, 0.0, 0.0),
                bbox_min_ijk=(0, 0, 0),
                bbox_max_ijk=(0, 0, 0),
                centroid_ras_mm=(0.0, 0.0, 0.0),
                greatest_extent_mm=50.0 + 10.5 * spec.label,
                principal_extents=PrincipalExtents(40.0 + spec.label, 30.0 + spec.label, 20.0 + spec.label),
                short_axis_mm=21.5 if spec.name == "aorta" else None,
            )
        )
    return out


@pytest.fixture(scope="module", params=["phantom", "real"])
def case(request, tmp_path_factory) -> SegCase:
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "real":
        return real_case(request.getfixturevalue("shared_data"), folder)
    return phantom_case(folder, PHANTOM_CASES["axial"])


@pytest.fixture(scope="module")
def seg(case) -> pydicom.Dataset:
    return write_dicom_seg(case.labels, case.headers, case.card)


@pytest.fixture(scope="module")
def sr(case, seg) -> pydicom.Dataset:
    return write_measurement_report(seg, measurements_of(case), case.headers, case.card)


def test_sr_passes_dciodvfy(sr, tmp_path):
    errors, _ = dciodvfy_messages(sr, tmp_path)
    assert errors == []


def test_sr_is_in_the_source_study_and_references_the_seg(case, seg, sr):
    document = through_bytes(sr)
    source = case.headers[0]
    assert document.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR Storage
    assert document.StudyInstanceUID == source.StudyInstanceUID
    assert document.PatientID == source.PatientID
    assert document.SeriesNumber == 901
    assert document.SeriesInstanceUID not in (source.SeriesInstanceUID, seg.SeriesInstanceUID)
    evidence = {
        item.SeriesInstanceUID: {ref.ReferencedSOPInstanceUID for ref in item.ReferencedSOPSequence}
        for study in document.CurrentRequestedProcedureEvidenceSequence
        for item in study.ReferencedSeriesSequence
    }
    assert seg.SOPInstanceUID in evidence[seg.SeriesInstanceUID]
    assert evidence[source.SeriesInstanceUID] == {h.SOPInstanceUID for h in case.headers}


def test_one_group_per_segment_with_the_given_numbers(case, seg, sr):
    report = hd.sr.Comprehensive3DSR.from_dataset(through_bytes(sr)).content
    groups = report.get_volumetric_roi_measurement_groups()
    segments = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert len(groups) == len(segments)
    observer = report.get_observer_contexts(observer_type=codes.DCM.Device)[0]
    assert observer.observer_identifying_attributes.name == case.card.model_id
    assert observer.observer_identifying_attributes.model_name == f"{case.card.model_id} {case.card.version}"
    procedure = report[0].ContentSequence.find(codes.DCM.ProcedureReported)[0].value
    assert (procedure.value, procedure.scheme_designator) == ("169070004", "SCT")

    by_name = {m.name: m for m in measurements_of(case)}
    for group, (number, name) in zip(groups, sorted(segments.items()), strict=True):
        spec, expected = case.card.structure(name), by_name[name]
        assert group.tracking_identifier == name
        assert group.finding_type == hd.sr.CodedConcept(spec.type.value, spec.type.scheme, spec.type.meaning)
        if spec.type_modifier is not None:
            assert group.finding_sites[0].laterality.value == spec.type_modifier.value
        referenced = group.referenced_segment
        assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert referenced.referenced_segment_numbers == [number]
        assert referenced.source_series_for_segmentation.value == case.headers[0].SeriesInstanceUID

        volume = group.get_measurements(name=codes.SCT.Volume)[0]
        assert volume.value == pytest.approx(expected.volume_ml, rel=1e-9)
        assert volume.unit.value == "ml"
        stats = {
            m.derivation.value: m
            for m in group.get_measurements(name=hd.sr.CodedConcept("112031", "DCM", "Attenuation Coefficient"))
        }
        assert stats["373098007"].value == pytest.approx(expected.hu_mean, rel=1e-9, abs=1e-9)  # Mean
        assert stats["386136009"].value == pytest.approx(expected.hu_std, rel=1e-9, abs=1e-9)  # Standard Deviation
        assert stats["373098007"].unit.value == "[hnsf'U]"
        extents = expected.principal_extents
        for code, value in (
            (codes.SCT.MajorAxis, extents.major_axis_mm),
            (codes.SCT.MinorAxis, extents.minor_axis_mm),
            (codes.SCT.PerpendicularAxis, extents.perpendicular_axis_mm),
        ):
            (axis,) = group.get_measurements(name=code)
            assert axis.value == pytest.approx(value) and axis.unit.value == "mm"
        assert not group.get_measurements(name=hd.sr.CodedConcept("81827009", "SCT", "Diameter"))  # not a diameter
        short = group.get_measurements(name=codes.SCT.ShortAxis)
        if expected.short_axis_mm is None:
            assert not short
        else:
            assert short[0].value == pytest.approx(expected.short_axis_mm)
            assert short[0].derivation.value == "56851009"  # Maximum
        assert not group.get_qualitative_evaluations(name=REVIEW_REQUIRED)  # no review was asked for


def test_review_reasons_are_written_into_the_groups_of_the_structures_they_name(case, seg, tmp_path):
    first, second, third, *others = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    reasons = [
        ReviewReason("cut_by_field_of_view", (first,), f"{first} touches the superior edge"),
        ReviewReason("unexpected_laterality", (second, third), "mirrored"),
    ]
    sr = write_measurement_report(seg, measurements_of(case), case.headers, case.card, review=reasons)
    groups = hd.sr.Comprehensive3DSR.from_dataset(through_bytes(sr)).content.get_volumetric_roi_measurement_groups()
    evaluations = {
        group.tracking_identifier: [
            (e.name.value, e.value.value) for e in group.get_qualitative_evaluations(name=REVIEW_REQUIRED)
        ]
        for group in groups
    }
    assert evaluations[first] == [("REVIEW", "CUT-FOV")]
    assert evaluations[second] == evaluations[third] == [("REVIEW", "LATERALITY")]
    assert all(not evaluations[name] for name in others)
    errors, _ = dciodvfy_messages(sr, tmp_path)
    assert errors == []


def test_a_mass_left_out_of_the_masks_is_reported_in_the_groups_of_the_organs_it_had_to_touch(case, seg):
    """The left-out mass has no segment of its own: its reason goes to its anchors, or, with none in the SEG, to
    every group; it is never dropped from the report the PACS receives."""
    from twin_imaging.models.structures import BUILTIN_STRUCTURES, structure_specs

    first, second, *others = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    (tumour,) = structure_specs(["renal_tumor"], BUILTIN_STRUCTURES)
    label = max(s.label for s in case.card.structures) + 1

    def evaluations(anchors: tuple[str, ...]) -> dict[str, list]:
        spec = tumour.model_copy(update={"label": label, "attached_to": anchors})
        card = case.card.model_copy(update={"structures": (*case.card.structures, spec)})
        reasons = [ReviewReason("unattached_mass_left_out", ("renal_tumor",), "left out: 2.0 mL of renal tumour")]
        sr = write_measurement_report(seg, measurements_of(case), case.headers, card, review=reasons)
        groups = hd.sr.Comprehensive3DSR.from_dataset(through_bytes(sr)).content.get_volumetric_roi_measurement_groups()
        return {
            g.tracking_identifier: [e.value.value for e in g.get_qualitative_evaluations(name=REVIEW_REQUIRED)]
            for g in groups
        }

    by_anchor = evaluations((first, second))
    assert by_anchor[first] == by_anchor[second] == ["MASS-LEFT-OUT"] and not any(by_anchor[n] for n in others)
    everywhere = evaluations(("not_in_this_seg",))
    assert all(v == ["MASS-LEFT-OUT"] for v in everywhere.values()) and len(everywhere) == 2 + len(others)


def test_measurement_and_segment_mismatches_are_refused(case, seg):
    measurements = measurements_of(case)
    present = {str(s.SegmentLabel) for s in seg.SegmentSequence}
    with pytest.raises(ValueError, match="no measurements for the SEG segments"):
        write_measurement_report(seg, [m for m in measurements if m.name != "liver"], case.headers, case.card)
    with pytest.raises(ValueError, match="two measurements"):
        write_measurement_report(seg, [*measurements, measurements[0]], case.headers, case.card)
    absent = [m for m in measurements if m.name not in present]
    if absent:  # an empty structure's measurement is left out, one with voxels is an error
        assert all(m.voxel_count == 0 for m in absent)
        write_measurement_report(seg, measurements, case.headers, case.card)
    liver = next(m for m in measurements if m.name == "liver")
    ghost = replace(liver, name="stomach" if "stomach" not in present else "bladder", voxel_count=10)
    with pytest.raises(ValueError, match="has no such segment"):
        write_measurement_report(seg, [*measurements, ghost], case.headers, case.card)
    other_study = copy.deepcopy(case.headers[0])
    other_study.StudyInstanceUID = hd.UID()
    with pytest.raises(ValueError, match="belongs to study"):
        write_measurement_report(seg, measurements, [other_study], case.card)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_refused(case, seg, bad):
    measurements = [replace(m, volume_ml=bad) if m.name == "liver" else m for m in measurements_of(case)]
    with pytest.raises(ValueError, match="finite"):
        write_measurement_report(seg, measurements, case.headers, case.card)


def test_requires_headers(case, seg):
    with pytest.raises(ValueError, match="headers"):
        write_measurement_report(seg, measurements_of(case), [], case.card)


def test_instance_uids_follow_the_result_and_tracking_uids_follow_patient_and_structure(case, seg, sr):
    """The same result again: the same SEG and SR UIDs (a repeat files nothing new). A changed result (one voxel of
    one structure): new instance UIDs in the same series, so a PACS does not keep the stale object. Tracking UIDs:
    one per patient and structure, the same in every study of that patient (TID 1500 follows a finding)."""
    again = write_dicom_seg(case.labels, case.headers, case.card)
    assert again.SOPInstanceUID == seg.SOPInstanceUID
    assert write_measurement_report(again, measurements_of(case), case.headers, case.card).SOPInstanceUID == (
        sr.SOPInstanceUID
    )
    changed_array = case.labels.array.copy()
    i, j, k = np.argwhere(changed_array > 0)[0]
    changed_array[i, j, k] = 0
    changed = write_dicom_seg(case.labels.with_array(changed_array), case.headers, case.card)
    assert changed.SOPInstanceUID != seg.SOPInstanceUID and changed.SeriesInstanceUID == seg.SeriesInstanceUID
    changed_sr = write_measurement_report(changed, measurements_of(case), case.headers, case.card)
    assert changed_sr.SOPInstanceUID != sr.SOPInstanceUID and changed_sr.SeriesInstanceUID == sr.SeriesInstanceUID

    def tracking(report) -> dict[str, str]:
        uids = {}
        for group in hd.sr.Comprehensive3DSR.from_dataset(report).content.get_volumetric_roi_measurement_groups():
            uids[group.tracking_identifier] = group.tracking_uid
        return uids

    first = tracking(sr)
    assert len(set(first.values())) == len(first) > 1  # one per structure
    other_study = [copy.deepcopy(h) for h in case.headers]
    for header in other_study:  # the same patient, another study (e.g. after surgery)
        header.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        header.SOPInstanceUID = header.SOPInstanceUID + ".9"
    seg_b = write_dicom_seg(replace(case.labels, sources=()), other_study, case.card)
    sr_b = write_measurement_report(seg_b, measurements_of(case), other_study, case.card)
    assert tracking(sr_b) == first
