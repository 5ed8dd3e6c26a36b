"""A CT with a renal tumour goes from DICOM to surgical scenarios on the twin with no step by hand, as a hospital runs
it: the patient's eGFR arrives as a FHIR bundle, `twin-imaging analyze` (the console script) segments the study with
the site's model that labels renal masses (the default, or the opt-in renal cascade set as the site's default),
which labels the tumour; the analysis is flagged for review, the outcome models run for
partial and radical nephrectomy with the inputs from the twin, and a radiologist's SEG sent afterwards replaces the
model's masks and the scenarios are recomputed. The phantom's own truth is the reference for the tumour mask."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom

from tests.conftest import NEEDS_RENAL_MASS_MODEL, renal_mass_model
from twin_imaging.expert_intake import receive_expert_seg
from twin_imaging.io import read_nifti
from twin_imaging.models import load_model_package
from twin_imaging.outcome.model import OutcomeModel
from twin_imaging.outcome.twin_scenarios import current_scenarios
from twin_imaging.settings import get_settings
from twin_imaging.testing import PatientSpec, PhantomGeometry, SeriesSpec, StudySpec, write_phantom_study
from twin_imaging.testing.expert_seg import radiologist_seg
from twin_imaging.testing.fhir_labs import write_egfr_bundle
from twin_imaging.testing.phantom import RENAL_TUMOUR, PhantomAnatomy
from twin_imaging.twin.store import TwinStore

CONSOLE_SCRIPT = Path(sys.executable).parent / "twin-imaging"
GEOMETRY = PhantomGeometry(shape=(160, 160, 64), spacing_mm=(2.5, 2.0, 3.0))
PATIENT = PatientSpec(patient_id="E2E-MASS-3", patient_name="Poe^Pat", patient_birth_date="19610305", patient_sex="F")


pytestmark = NEEDS_RENAL_MASS_MODEL


def _egfr_bundle(path: Path, value: float = 68.0, when: str = "2025-02-20T08:00:00Z") -> Path:
    return write_egfr_bundle(path, [(when, value)])


def _console(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    """The console script with the twin's home in ``data_dir``, as a site configures it once."""
    env = {**os.environ, "TWIN_IMAGING_DATA_DIR": str(data_dir)}
    env["TWIN_IMAGING_DEFAULT_SEGMENTATION_MODEL"] = renal_mass_model()
    env.pop("TWIN_IMAGING_DATABASE_URL", None)
    env.pop("TWIN_IMAGING_ARTIFACTS_DIR", None)
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env)


def test_a_ct_with_a_renal_tumour_reaches_scenarios_on_the_twin_and_a_radiologists_seg_replaces_the_masks(tmp_path):
    study = write_phantom_study(
        tmp_path / "study",
        (SeriesSpec(geometry=GEOMETRY),),
        patient=PATIENT,
        study=StudySpec(study_date="20250301", accession_number="E2E01"),
        anatomy=PhantomAnatomy().with_structure(RENAL_TUMOUR),
        seed=5,
    )
    data_dir = tmp_path / "twin"
    data_dir.mkdir()
    bundle = _egfr_bundle(tmp_path / "labs.json")
    labs = _console("twin", "import-fhir", str(bundle), "--patient", PATIENT.patient_id, data_dir=data_dir)
    assert labs.returncode == 0, labs.stderr
    out = tmp_path / "out"
    analysed = _console("analyze", str(tmp_path / "study"), "--out", str(out), "--no-progress", data_dir=data_dir)
    assert analysed.returncode == 0, analysed.stderr
    assert "surgical scenarios (model masks" in analysed.stdout, analysed.stdout
    assert "new-baseline eGFR" in analysed.stdout

    # the model's tumour, scored against the phantom's truth (same grid: the label map is on the source grid)
    package = load_model_package(get_settings().models_dir / renal_mass_model(), verify=False)
    names = {s.name: s.label for s in package.card.structures}
    predicted = np.asarray(read_nifti(out / "labels.nii.gz").array) == names["renal_tumor"]
    truth_labels = study.series[0].phantom.labels
    truth = np.asarray(truth_labels.array) == {v: k for k, v in truth_labels.label_names.items()}["renal_tumor"]
    dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    assert dice >= 0.5, f"tumour Dice {dice:.2f} against the phantom's truth"
    results = json.loads((out / "results.json").read_text())
    assert results["review"]["required"]
    assert "renal_mass_not_validated" in [reason["code"] for reason in results["review"]["reasons"]]

    # a later pre-operative eGFR: the scenarios run again with it, on the same masks
    later = _console(
        "twin",
        "import-fhir",
        str(_egfr_bundle(tmp_path / "labs2.json", 55.0, "2025-02-27T08:00:00Z")),
        "--patient",
        PATIENT.patient_id,
        data_dir=data_dir,
    )
    assert later.returncode == 0, later.stderr
    assert "surgical scenarios recomputed with the new inputs for 1 analysis" in later.stdout, later.stdout

    with TwinStore(f"sqlite:///{data_dir / 'twin.sqlite3'}", artifacts_dir=data_dir / "artifacts") as store:
        key = store.patient_key_for(PATIENT.patient_id)
        (shown,) = current_scenarios(store.summary(key, actor="test"))
        assert shown["mask_source"] == "model"
        assert "preop_egfr_ml_min_1_73m2" not in " ".join(shown["imputed"])  # the eGFR came from the twin
        egfr = {p["scenario"]: p["value"] for p in shown["predictions"] if p["target"] == "new_baseline_egfr"}
        assert 0 < egfr["radical_nephrectomy"] < egfr["partial_nephrectomy"] <= 55.0 * 1.3  # from the later eGFR

        sources = [pydicom.dcmread(p) for p in study.series[0].paths]
        seg = radiologist_seg(
            sources,
            truth_labels,
            {"kidney_right": "kidney_right", "kidney_left": "kidney_left", "renal_tumor": "renal_tumor"},
        )
        buffer = io.BytesIO()
        seg.save_as(buffer, enforce_file_format=True)
        receipt = receive_expert_seg(
            store, buffer.getvalue(), via="c-store", actor="pacs:reading-room", outcome_model=OutcomeModel()
        )
        assert receipt["scenarios"]["computed"], receipt["scenarios"]
        (now,) = current_scenarios(store.summary(key, actor="test"))
        assert now["mask_source"] == receipt["scenarios"]["mask_source"] != "model"
        assert now["other_mask_sources"] == ["model"]
