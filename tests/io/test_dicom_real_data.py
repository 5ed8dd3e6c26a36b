"""The reader on real DICOM written by others: a JPEG 2000 CT from a Siemens scanner (checked against dcm2niix and
TotalSegmentator's label grid), pydicom's bundled dicomdirtests, and a series with duplicate and missing slices."""

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom.data
import pytest

from twin_imaging.errors import DicomInputError
from twin_imaging.io import read_dicom_series, scan_dicom

from ..conftest import require_tool, shared_file

DICOMDIR_TESTS = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"


def dcm2niix_volume(dicom_dir: Path, out_dir: Path) -> nib.Nifti1Image:
    """dcm2niix's conversion of ``dicom_dir``, reoriented to RAS."""
    subprocess.run(
        [require_tool("dcm2niix"), "-z", "n", "-b", "n", "-f", "reference", "-o", str(out_dir), str(dicom_dir)],
        check=True,
        capture_output=True,
    )
    outputs = sorted(out_dir.glob("reference*.nii"))
    assert len(outputs) == 1, f"dcm2niix wrote {outputs}"
    return nib.as_closest_canonical(nib.load(outputs[0]))


@pytest.fixture(scope="module")
def real_ct_dir(shared_data):
    return shared_file(shared_data, "totalsegmentator/example_ct_dicom")


def test_jpeg2000_ct_equals_dcm2niix_in_ras(real_ct_dir, tmp_path):
    reference = dcm2niix_volume(real_ct_dir, tmp_path)
    volume = read_dicom_series(real_ct_dir).reoriented("RAS")
    assert volume.shape == reference.shape == (512, 512, 20)
    # dcm2niix stores raw values with scl_slope/scl_inter (or HU directly): compare rescaled values.
    assert np.array_equal(volume.array, np.asanyarray(reference.dataobj))
    assert np.max(np.abs(volume.affine_ras - reference.affine)) < 0.01


def test_jpeg2000_ct_matches_the_grid_of_its_label_map(real_ct_dir, shared_data):
    labels = nib.load(shared_file(shared_data, "totalsegmentator/example_seg_dicom.nii.gz"))
    volume = read_dicom_series(real_ct_dir)
    on_label_grid = volume.reoriented("".join(nib.aff2axcodes(labels.affine)))
    assert on_label_grid.shape == labels.shape
    assert np.max(np.abs(on_label_grid.affine_ras - labels.affine)) < 0.01
    # The label map is TotalSegmentator's own segmentation of this CT: air must be unlabelled, the labelled
    # voxels must be tissue. Both fail if the slices or rows were read in the wrong order.
    label_array = np.asanyarray(labels.dataobj)
    assert np.median(on_label_grid.array[label_array > 0]) > -200
    assert np.median(on_label_grid.array[label_array == 0]) < np.median(on_label_grid.array[label_array > 0])


def test_jpeg2000_ct_header_facts(real_ct_dir):
    scan = scan_dicom(real_ct_dir)
    volume = read_dicom_series(real_ct_dir)
    assert volume.info.modality == "CT"
    assert volume.spacing_mm == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert volume.array.dtype == np.int16 and volume.array.min() >= -1024
    assert len(volume.sources) == 20
    # Blank UIDs in this anonymised series are reported, not hidden.
    assert any("no SeriesInstanceUID" in w for w in scan.warnings)
    # Slices go up along the normal (+z, superior) whatever the InstanceNumbers say.
    positions = [volume.index_to_ras([0, 0, k])[2] for k in range(volume.shape[2])]
    assert np.all(np.diff(positions) > 0)


def test_duplicate_and_missing_positions_are_refused_naming_them(shared_data):
    zip_path = shared_file(shared_data, "dicom-edge/dupe-positions.zip")
    with pytest.raises(DicomInputError) as refused:
        read_dicom_series(zip_path)
    message = str(refused.value)
    assert "duplicate slice position" in message and "-90.00 mm" in message
    assert "CT26.dcm" in message and "CT28.dcm" in message
    assert "missing slice position" in message and "between -512.50 and -400.00 mm" in message


@pytest.mark.parametrize(
    ("folder", "refusal"),
    [
        ("77654033/CR1", "modality CR is not CT or MR"),
        ("77654033/CR2", "modality CR is not CT or MR"),
        ("77654033/CT2", "missing slice position"),
        ("98892001/CT2N", "localizer"),
        ("98892003/MR1", "localizer"),
        ("98892003/MR2", "only 1 image"),
        ("98892003/MR700", "derived series"),
        ("TINY_ALPHA", "no Rows/Columns"),
        (".", "2 different patients"),
    ],
)
def test_dicomdir_series_that_cannot_be_volumes_are_refused_with_the_reason(folder, refusal):
    with pytest.raises(DicomInputError, match=refusal):
        read_dicom_series(DICOMDIR_TESTS / folder)


def test_dicomdir_axial_ct_reads_and_matches_dcm2niix(tmp_path):
    folder = DICOMDIR_TESTS / "98892001" / "CT5N"
    volume = read_dicom_series(folder)
    assert volume.shape == (16, 16, 5)
    assert volume.spacing_mm[2] == pytest.approx(2.5)
    reference = dcm2niix_volume(folder, tmp_path)
    turned = volume.reoriented("RAS")
    assert np.array_equal(turned.array, np.asanyarray(reference.dataobj))
    assert np.max(np.abs(turned.affine_ras - reference.affine)) < 0.01


def test_a_patient_folder_with_a_localizer_and_an_axial_series_picks_the_axial_one():
    scan = scan_dicom(DICOMDIR_TESTS / "98892001")
    assert scan.chosen.info.series_description != "Scout"
    assert scan.chosen.n_slices == 5
    refused = [c for c in scan.selection.candidates if c is not scan.chosen]
    assert refused and all("localizer" in "; ".join(c.problems) for c in refused)
