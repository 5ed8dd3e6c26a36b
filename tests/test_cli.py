"""The command line as a user runs it: the console script in a subprocess for bad input, click's runner otherwise."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from twin_imaging.cli import cli
from twin_imaging.models import default_segmentation_package
from twin_imaging.testing import (
    PHANTOM_LABELS,
    PatientSpec,
    PhantomGeometry,
    SeriesSpec,
    make_phantom,
    write_phantom_study,
)

SMALL = PhantomGeometry(shape=(48, 40, 16), spacing_mm=(7.0, 7.0, 6.0))
CONSOLE_SCRIPT = Path(sys.executable).with_name("twin-imaging")


def run_console(*args: str) -> subprocess.CompletedProcess:
    assert CONSOLE_SCRIPT.exists(), "the package is not installed with its console script"
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=120)


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_demo_analyses_the_phantom_study_and_keeps_its_exact_labels(tmp_path):
    result = invoke("demo", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "CHOSEN: best of 2 usable series: most slices" in result.output
    assert "| liver |" in result.output
    truth = make_phantom()  # the demo's default geometry and seed
    labels = np.asanyarray(nib.load(tmp_path / "phantom_labels.nii.gz").dataobj)
    card = default_segmentation_package().card
    # in the model's label values (the phantom's own table numbers the aorta 5, the model another value)
    for value, name in PHANTOM_LABELS.items():
        expected = card.structure(name).label if name in card.label_names().values() else 0
        assert np.all(labels[truth.labels.array == value] == expected), name
    assert "phantom structures the model does not label" in result.output and "vertebrae" in result.output
    analysed = nib.load(tmp_path / "analysis" / "labels.nii.gz")
    assert analysed.shape == truth.image.shape
    assert np.allclose(analysed.affine, truth.image.affine_ras, atol=1e-4)
    for name in ("seg.dcm", "sr.dcm", "results.json", "overlay_axial.png"):
        assert (tmp_path / "analysis" / name).is_file()
    assert len(list((tmp_path / "phantom_study").iterdir())) == 2 + 80 + 40  # localizer, thin, thick
    # Running it again replaces the study rather than mixing two.
    assert invoke("demo", "--out", str(tmp_path)).exit_code == 0
    assert len(list((tmp_path / "phantom_study").iterdir())) == 122


def test_inspect_json_reports_every_series_and_the_choice(tmp_path):
    study = write_phantom_study(
        tmp_path,
        series=(
            SeriesSpec(geometry=SMALL, kind="localizer", series_number=1),
            SeriesSpec(geometry=SMALL, series_number=2),
        ),
    )
    (tmp_path / "notes.txt").write_text("not DICOM")
    result = invoke("inspect", str(tmp_path), "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["format"] == "DICOM"
    assert report["files_skipped"] == [{"file": "notes.txt", "reason": "not a DICOM file"}]
    chosen = [s for s in report["series"] if s["chosen"]]
    assert len(chosen) == 1 and study.series[1].series_instance_uid in chosen[0]["series"]
    assert all("localizer" in s["reason"] for s in report["series"] if not s["chosen"])
    image = report["image"]
    assert image["shape"] == [48, 40, 16] and image["spacing_mm"] == [7.0, 7.0, 6.0]
    assert image["orientation"] == "LPS" and image["value_unit"] == "HU"
    phantom = study.series[1].phantom.image.array
    assert image["value_range"] == [int(phantom.min()), int(phantom.max())]


def test_inspect_and_convert_never_print_patient_identifiers(tmp_path):
    patient = PatientSpec(patient_id="MRN-5550123", patient_name="Doe^Jane")
    write_phantom_study(tmp_path / "study", series=(SeriesSpec(geometry=SMALL),), patient=patient)
    for args in (
        ("inspect", str(tmp_path / "study")),
        ("inspect", str(tmp_path / "study"), "--json"),
        ("convert", str(tmp_path / "study"), str(tmp_path / "ct.nii.gz")),
    ):
        result = run_console(*args)
        assert result.returncode == 0, result.stderr
        for secret in ("MRN-5550123", "Doe^Jane", "Doe"):
            assert secret not in result.stdout and secret not in result.stderr


def test_convert_a_zip_and_a_nifti(tmp_path):
    study = write_phantom_study(tmp_path / "study", series=(SeriesSpec(geometry=SMALL, compression="jpeg2000"),))
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in study.paths:
            zipped.write(path, path.name)
    assert invoke("convert", str(archive), str(tmp_path / "a.nii.gz")).exit_code == 0
    assert invoke("convert", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii")).exit_code == 0
    expected = study.series[0].phantom.image
    for name in ("a.nii.gz", "b.nii"):
        image = nib.load(tmp_path / name)
        assert np.array_equal(np.asanyarray(image.dataobj), expected.array)
        assert np.allclose(image.affine, expected.affine_ras, atol=1e-4)


def test_phantom_command_writes_what_it_says(tmp_path):
    result = invoke(
        "phantom",
        str(tmp_path / "study"),
        "--shape",
        "32",
        "32",
        "10",
        "--spacing",
        "9",
        "9",
        "8",
        "--orientation",
        "coronal",
        "--compression",
        "rle",
        "--extra-series",
        "--labels",
        str(tmp_path / "labels.nii.gz"),
    )
    assert result.exit_code == 0, result.output
    files = list((tmp_path / "study").iterdir())
    syntaxes = {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files}
    assert "1.2.840.10008.1.2.5" in syntaxes  # RLE
    assert nib.load(tmp_path / "labels.nii.gz").shape == (32, 32, 10)
    assert nib.aff2axcodes(nib.load(tmp_path / "labels.nii.gz").affine) == ("L", "I", "P")  # coronal: rows go down


@pytest.fixture
def bad_inputs(tmp_path):
    """Named bad inputs, each built from a small phantom series."""
    study = write_phantom_study(tmp_path / "good", series=(SeriesSpec(geometry=SMALL),))
    files = list(study.paths)
    cases = {}
    (tmp_path / "empty").mkdir()
    cases["empty"] = (tmp_path / "empty", "is empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("hello")
    cases["not dicom"] = (tmp_path / "text", "no DICOM images found")
    cases["single slice"] = (files[0], "only 1 image")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tmp_path / "good", corrupt)
    ds = pydicom.dcmread(corrupt / files[3].name)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(corrupt / files[3].name)
    cases["corrupt pixels"] = (corrupt, "pixel data cannot be decoded")
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../../etc/cron.d/evil", files[0].read_bytes())
    cases["zip slip"] = (archive, "would escape the archive")
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "good", mixed)
    write_phantom_study(mixed, series=(SeriesSpec(geometry=SMALL),), patient=PatientSpec(patient_id="OTHER-42"), seed=9)
    cases["two patients"] = (mixed, "2 different patients")
    return cases


@pytest.mark.parametrize("case", ["empty", "not dicom", "single slice", "corrupt pixels", "zip slip", "two patients"])
@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_bad_input_exits_1_with_the_reason_and_no_traceback(bad_inputs, tmp_path, case, command):
    path, reason = bad_inputs[case]
    args = (command, str(path)) + ((str(tmp_path / "out.nii.gz"),) if command == "convert" else ())
    result = run_console(*args)
    assert result.returncode == 1
    assert reason in result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert "OTHER-42" not in result.stderr
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_non_nifti_output_name_is_a_usage_error(tmp_path):
    result = run_console("convert", str(tmp_path), str(tmp_path / "out.png"))
    assert result.returncode == 2 and "must end in .nii or .nii.gz" in result.stderr


def test_the_phantom_grows_a_renal_tumour_and_cyst_with_their_truth(tmp_path):
    from twin_imaging.io.nifti import read_nifti

    labels_path = tmp_path / "truth.nii.gz"
    result = CliRunner().invoke(
        cli,
        [
            "phantom", str(tmp_path / "study"), "--shape", "160", "160", "64", "--spacing", "2.5", "2.0", "3.0",
            "--renal-mass", "both", "--labels", str(labels_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    labels = read_nifti(labels_path)
    voxel_ml = 2.5 * 2.0 * 3.0 / 1000
    tumour_ml = float((labels.array == 9).sum()) * voxel_ml
    cyst_ml = float((labels.array == 10).sum()) * voxel_ml
    assert tumour_ml == pytest.approx(4 / 3 * np.pi * 14**3 / 1000, rel=0.1)  # a 28 mm sphere
    assert cyst_ml == pytest.approx(4 / 3 * np.pi * 10**3 / 1000, rel=0.15)  # a 20 mm sphere
    kidney_left = np.argwhere(labels.array == 4).mean(0)
    tumour = np.argwhere(labels.array == 9).mean(0)
    assert np.linalg.norm((tumour - kidney_left) * [2.5, 2.0, 3.0]) < 40  # at the left kidney
