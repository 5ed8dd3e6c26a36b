"""DICOM SEG out and back: dciodvfy finds no errors, per-frame source references are right, the label map returns
exactly, on phantom studies (axial, coronal, JPEG 2000) and on the real TotalSegmentator series."""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.conftest import require_tool, shared_file
from twin_imaging.io.dicom_reader import load_series, scan_dicom
from twin_imaging.io.dicom_seg import read_dicom_seg, write_dicom_seg
from twin_imaging.io.nifti import read_nifti
from twin_imaging.models.card import (
    InferenceSpec,
    IntensitySpec,
    ModelCard,
    OnnxFile,
    PreprocessingSpec,
    TrainingRecord,
)
from twin_imaging.models.structures import BUILTIN_STRUCTURES, structure_specs
from twin_imaging.testing import PHANTOM_LABELS, PhantomGeometry, SeriesSpec, write_phantom_study
from twin_imaging.testing.real_series import copy_series_with_uids
from twin_imaging.volume import Volume

PHANTOM_ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "aorta")
REAL_ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "pancreas", "stomach", "gallbladder", "aorta")
SMALL = (64, 64, 24)
PHANTOM_CASES = {
    "axial": SeriesSpec(PhantomGeometry(SMALL, (6.0, 5.5, 8.0))),
    "coronal": SeriesSpec(PhantomGeometry((64, 40, 32), (6.0, 8.0, 6.5), "coronal")),
    "jpeg2000": SeriesSpec(PhantomGeometry(SMALL, (6.0, 5.5, 8.0)), compression="jpeg2000"),
    "enhanced": SeriesSpec(PhantomGeometry(SMALL, (6.0, 5.5, 8.0)), multiframe=True),
}


def organ_card(names: tuple[str, ...], model_id: str = "organs_test") -> ModelCard:
    """A card for a model that does not exist, labelling ``names`` 1..N with the built-in SNOMED codes."""
    return ModelCard(
        model_id=model_id,
        version="1.2.0",
        modality="CT",
        title="Abdominal organs (tests only)",
        description="A card for tests of the DICOM outputs.",
        intended_use="tests only",
        structures=structure_specs(names, BUILTIN_STRUCTURES),
        preprocessing=PreprocessingSpec(
            spacing_mm=(1.5, 1.5, 1.5), intensity=IntensitySpec(window_min_hu=-200, window_max_hu=300)
        ),
        inference=InferenceSpec(num_classes=len(names) + 1, patch_size_voxels=(32, 32, 32)),
        training=TrainingRecord(
            data=(), recipe="none", network="none", parameters=0, max_steps=0, seed=0, duration_s=0, hardware="none"
        ),
        onnx=OnnxFile(file=f"{model_id}.onnx", sha256="0" * 64, size_bytes=0, opset=17),
        created=datetime(2024, 1, 1, tzinfo=UTC),
    )


@dataclass(frozen=True, eq=False)
class SegCase:
    """A loaded series, its headers in volume order, a label map of the card's values on it, and the card."""

    volume: Volume
    headers: list[pydicom.Dataset]
    labels: Volume
    card: ModelCard


def remap(array: np.ndarray, names_by_value: dict[int, str], card: ModelCard) -> np.ndarray:
    """Label values of another table → the card's values (structures the card lacks → 0)."""
    lookup = np.zeros(max(max(names_by_value), int(array.max())) + 1, dtype=np.uint8)
    for value, name in names_by_value.items():
        if name in card.label_names().values():
            lookup[value] = card.structure(name).label
    return lookup[array]


def load_case(folder: Path) -> tuple[Volume, list[pydicom.Dataset]]:
    scan = scan_dicom(folder)
    return load_series(scan.chosen), [frame.instance.header for frame in scan.chosen.frames]


def phantom_case(folder: Path, spec: SeriesSpec) -> SegCase:
    study = write_phantom_study(folder, (spec,))
    volume, headers = load_case(folder)
    phantom_labels = study.series[0].phantom.labels
    assert [s.sop_instance_uid for s in phantom_labels.sources] == [s.sop_instance_uid for s in volume.sources]
    assert np.allclose(phantom_labels.affine_ras, volume.affine_ras)
    card = organ_card(PHANTOM_ORGANS)
    return SegCase(volume, headers, volume.with_array(remap(phantom_labels.array, PHANTOM_LABELS, card)), card)


def real_case(shared_data: Path, folder: Path) -> SegCase:
    copy_series_with_uids(shared_file(shared_data, "totalsegmentator/example_ct_dicom"), folder)
    volume, headers = load_case(folder)
    nifti = read_nifti(shared_file(shared_data, "totalsegmentator/example_seg_dicom.nii.gz")).reoriented(
        volume.orientation
    )
    assert nifti.shape == volume.shape
    assert np.allclose(nifti.affine_ras, volume.affine_ras, atol=0.01)
    class_map = json.loads(shared_file(shared_data, "totalsegmentator/class_map.json").read_text())["total"]
    card = organ_card(REAL_ORGANS, model_id="totalseg_subset")
    labels = remap(nifti.array, {int(k): v for k, v in class_map.items()}, card)
    return SegCase(volume, headers, volume.with_array(labels), card)


def dciodvfy_messages(ds: pydicom.Dataset, folder: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) that dciodvfy reports for ``ds`` written as a file."""
    tool = require_tool("dciodvfy")
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


def through_bytes(ds: pydicom.Dataset) -> pydicom.Dataset:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


@pytest.fixture(scope="module", params=list(PHANTOM_CASES))
def phantom(request, tmp_path_factory) -> SegCase:
    return phantom_case(tmp_path_factory.mktemp(f"phantom_{request.param}"), PHANTOM_CASES[request.param])


@pytest.fixture(scope="module")
def phantom_seg(phantom) -> pydicom.Dataset:
    return write_dicom_seg(phantom.labels, phantom.headers, phantom.card)


def test_seg_passes_dciodvfy(phantom_seg, tmp_path):
    errors, _ = dciodvfy_messages(phantom_seg, tmp_path)
    assert errors == []


def test_seg_reads_back_exactly(phantom, phantom_seg):
    for seg in (phantom_seg, through_bytes(phantom_seg)):
        back = read_dicom_seg(seg, phantom.volume)
        assert back.array.dtype == np.uint8
        assert np.array_equal(back.array, phantom.labels.array)
        assert back.label_names == phantom.card.label_names()
        assert np.array_equal(back.affine_ras, phantom.volume.affine_ras)


def test_seg_reads_back_by_geometry_without_source_references(phantom, phantom_seg):
    seg = through_bytes(phantom_seg)
    back = read_dicom_seg(seg, replace(phantom.volume, sources=()))
    assert np.array_equal(back.array, phantom.labels.array)
    # a reoriented copy keeps its source references (the slice axis is unchanged) but not the pixel layout
    canonical = phantom.volume.reoriented("RAS")
    assert np.array_equal(read_dicom_seg(seg, canonical).array, phantom.labels.reoriented("RAS").array)


def test_seg_on_another_frame_of_reference_is_refused(phantom, phantom_seg):
    other = replace(phantom.volume, info=replace(phantom.volume.info, frame_of_reference_uid=hd.UID()))
    with pytest.raises(ValueError, match="frame of reference"):
        read_dicom_seg(phantom_seg, other)


def test_seg_reads_from_a_file(phantom, phantom_seg, tmp_path):
    path = tmp_path / "seg.dcm"
    phantom_seg.save_as(path, enforce_file_format=True)
    assert np.array_equal(read_dicom_seg(path, phantom.volume).array, phantom.labels.array)


def test_segments_carry_the_card_codes_colours_and_algorithm(phantom, phantom_seg):
    seg = through_bytes(phantom_seg)
    assert seg.SegmentationType == "BINARY"
    assert seg.ContentLabel == "ORGANS"
    assert seg.StudyInstanceUID == phantom.headers[0].StudyInstanceUID
    assert seg.PatientID == phantom.headers[0].PatientID
    assert seg.FrameOfReferenceUID == phantom.headers[0].FrameOfReferenceUID
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3, 4, 5]
    for item, spec in zip(seg.SegmentSequence, phantom.card.structures, strict=True):
        assert item.SegmentLabel == spec.name
        category, kind = item.SegmentedPropertyCategoryCodeSequence[0], item.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == (spec.category.value, spec.category.scheme)
        assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == (
            spec.type.value,
            spec.type.scheme,
            spec.type.meaning,
        )
        if spec.type_modifier is None:
            assert "SegmentedPropertyTypeModifierCodeSequence" not in kind
        else:
            assert kind.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == spec.type_modifier.value
        assert list(item.RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor.from_rgb(*spec.color_rgb).value)
        assert hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb() == spec.color_rgb
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("organs_test", "1.2.0")
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # DCM Artificial Intelligence


def test_each_frame_references_its_source_slice(phantom, phantom_seg):
    seg = through_bytes(phantom_seg)
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    slice_of = {(s.sop_instance_uid, s.frame_number): k for k, s in enumerate(phantom.volume.sources)}
    label_of = {
        int(s.SegmentNumber): spec.label for s, spec in zip(seg.SegmentSequence, phantom.card.structures, strict=True)
    }
    slices_by_segment: dict[int, list[int]] = {}
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        frame_number = int(source.ReferencedFrameNumber) if "ReferencedFrameNumber" in source else None
        k = slice_of[(source.ReferencedSOPInstanceUID, frame_number)]
        header = phantom.headers[k]
        assert source.ReferencedSOPClassUID == header.SOPClassUID
        position = item.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose([float(v) for v in position], source_position(header, frame_number))
        expected = np.equal(phantom.labels.array[:, :, k].T, label_of[number])
        assert expected.any()  # empty frames are omitted
        assert np.array_equal(frame.astype(bool), expected)
        slices_by_segment.setdefault(number, []).append(k)
    for number, slices in slices_by_segment.items():
        label = label_of[number]
        # one frame per slice, in spatial order: highdicom stacks along -normal (its row/column index convention)
        assert slices == sorted(slices, reverse=True)
        present = [k for k in range(phantom.labels.shape[2]) if (phantom.labels.array[:, :, k] == label).any()]
        assert slices == present[::-1]


def test_empty_structures_are_omitted(phantom, tmp_path):
    spleen = phantom.card.structure("spleen").label
    array = phantom.labels.array.copy()
    array[array == spleen] = 0
    labels = phantom.volume.with_array(array)
    seg = through_bytes(write_dicom_seg(labels, phantom.headers, phantom.card, series_number=7))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "kidney_right", "kidney_left", "aorta"]
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3, 4]
    back = read_dicom_seg(seg, phantom.volume)
    assert np.array_equal(back.array, array)  # card values restored: kidney_right stays 3 though segment 2
    assert spleen not in back.label_names
    assert dciodvfy_messages(seg, tmp_path)[0] == []


def source_position(header: pydicom.Dataset, frame_number: int | None) -> list[float]:
    if frame_number is None:
        return [float(v) for v in header.ImagePositionPatient]
    item = header.PerFrameFunctionalGroupsSequence[frame_number - 1]
    return [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]


def test_refuses_labels_that_do_not_match_the_sources(phantom):
    labels, headers, card = phantom.labels, phantom.headers, phantom.card
    with pytest.raises(ValueError, match="slices but"):
        write_dicom_seg(labels, headers[:-1], card)
    if labels.sources[0].frame_number is not None:  # one multi-frame instance: the frames named by the sources
        one_slice_up = np.eye(4)
        one_slice_up[2, 3] = 1.0
        with pytest.raises(ValueError, match="lies at"):
            write_dicom_seg(replace(labels, affine_ras=labels.affine_ras @ one_slice_up), headers, card)
        shuffled = (*labels.sources[1:], labels.sources[0])
        with pytest.raises(ValueError, match="lies at"):
            write_dicom_seg(replace(labels, sources=shuffled), headers, card)
        with pytest.raises(ValueError, match="do not name their frames"):
            write_dicom_seg(replace(labels, sources=()), headers, card)
        return
    with pytest.raises(ValueError, match="do not match the headers in order"):
        write_dicom_seg(labels, headers[::-1], card)
    with pytest.raises(ValueError, match="do not match the headers in order"):
        write_dicom_seg(labels, [*headers[1:], headers[0]], card)
    with pytest.raises(ValueError, match=r"label values \[9\]"):
        write_dicom_seg(labels.with_array(np.where(labels.array == 1, 9, labels.array).astype(np.uint8)), headers, card)
    with pytest.raises(ValueError, match="empty"):
        write_dicom_seg(labels.with_array(np.zeros_like(labels.array)), headers, card)
    unlinked = replace(labels, sources=())  # without source references, the grid must still sit on the images
    one_slice_up = np.eye(4)
    one_slice_up[2, 3] = 1.0
    shifted = replace(unlinked, affine_ras=unlinked.affine_ras @ one_slice_up)
    with pytest.raises(ValueError, match="lies at"):
        write_dicom_seg(shifted, headers, card)
    assert write_dicom_seg(unlinked, headers, card).NumberOfFrames > 0
    flipped = labels.reoriented("RAS")  # keeps its source references where the slice axis is unchanged
    if flipped.orientation != labels.orientation:
        with pytest.raises(ValueError, match=r"reorient the labels back|slices but"):
            write_dicom_seg(flipped, headers, card)
    with pytest.raises(ValueError, match="integers"):
        write_dicom_seg(labels.with_array(labels.array.astype(np.float32)), headers, card)


def test_seg_of_the_real_series(shared_data, tmp_path_factory):
    case = real_case(shared_data, tmp_path_factory.mktemp("real_series"))
    seg = write_dicom_seg(case.labels, case.headers, case.card)
    assert dciodvfy_messages(seg, tmp_path_factory.mktemp("real_seg"))[0] == []
    present = {int(v) for v in np.unique(case.labels.array)} - {0}
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [
        spec.name for spec in case.card.structures if spec.label in present
    ]
    back = read_dicom_seg(through_bytes(seg), case.volume)
    assert np.array_equal(back.array, case.labels.array)


def test_seg_and_sr_uids_are_derived_from_the_sources_and_the_model(tmp_path):
    """The same series analysed by the same model gives the same UIDs (a repeat files the same objects into the
    PACS); another model version, or other source images, other UIDs."""
    from twin_imaging.io.dicom_uids import derived_uid
    from twin_imaging.models.package import default_segmentation_package

    card = default_segmentation_package().card
    headers = [pydicom.Dataset() for _ in range(3)]
    for number, header in enumerate(headers):
        header.SOPInstanceUID = f"1.2.3.{number}"
    first = derived_uid(headers, card, "seg.instance")
    assert first == derived_uid(headers, card, "seg.instance")
    assert first != derived_uid(headers, card, "seg.series")
    assert first != derived_uid(headers[:2], card, "seg.instance")
    newer = card.model_copy(update={"version": card.version + "-next"})
    assert first != derived_uid(headers, newer, "seg.instance")
    assert first.startswith("2.25.") and len(first) <= 64
