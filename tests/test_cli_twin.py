"""The twin from the command line: analyse a pre- and a post-operative study of one patient, then show, compare,
export to FHIR, import labs and read the timeline — each through `twin-imaging`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from twin_imaging.cli import cli
from twin_imaging.testing import (
    PatientSpec,
    PhantomAnatomy,
    PhantomGeometry,
    SeriesSpec,
    StudySpec,
    write_phantom_study,
)
from twin_imaging.testing.fhir_labs import write_egfr_bundle

PATIENT = PatientSpec(patient_id="TWIN-CLI-1", patient_name="Cli^Test")
GEOMETRY = PhantomGeometry(shape=(160, 128, 48), spacing_mm=(2.5, 2.5, 4.0))


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("twin_cli")
    pre = write_phantom_study(
        root / "pre", series=(SeriesSpec(geometry=GEOMETRY),), patient=PATIENT, study=StudySpec(study_date="20240115")
    )
    post = write_phantom_study(
        root / "post",
        series=(SeriesSpec(geometry=GEOMETRY),),
        patient=PATIENT,
        study=StudySpec(study_date="20240601", accession_number="PHA0002"),
        anatomy=PhantomAnatomy().with_scaled("kidney_left", 0.8),
        seed=1,
    )
    data = root / "twin"
    for name in ("pre", "post"):
        result = invoke("analyze", str(root / name), "--out", str(root / f"out_{name}"), "--data-dir", str(data))
        assert result.exit_code == 0, result.output
        assert "attached to the twin as analysis" in result.output
    db = f"sqlite:///{data / 'twin.sqlite3'}"
    return root, db, pre, post


def test_analysing_again_leaves_one_analysis(twin):
    root, db, *_ = twin
    again = invoke(
        "analyze", str(root / "pre"), "--out", str(root / "again"), "--db", db, "--data-dir", str(root / "twin")
    )
    assert again.exit_code == 0, again.output
    summary = json.loads(invoke("twin", "show", PATIENT.patient_id, "--format", "json", "--db", db).output)
    assert len(summary["analyses"]) == 2
    assert len(summary["studies"]) == 2


def test_compare_reports_the_smaller_kidney(twin):
    _, db, pre, post = twin
    result = invoke(
        "twin", "compare", PATIENT.patient_id, pre.study_instance_uid, post.study_instance_uid, "--json", "--db", db
    )
    assert result.exit_code == 0, result.output
    changes = {c["structure"]: c for c in json.loads(result.output)}
    kidney = changes["kidney_left"]
    assert kidney["change_ml"] < 0
    assert -55 < kidney["change_percent"] < -40  # the phantom's kidney shrank to 0.8^3 = 51 % of its volume
    assert abs(changes["liver"]["change_percent"]) < 5
    table = invoke("twin", "compare", PATIENT.patient_id, pre.study_instance_uid, post.study_instance_uid, "--db", db)
    assert "| kidney_left |" in table.output


def test_the_volume_loss_alert_fires(twin):
    _, db, *_ = twin
    result = invoke("twin", "alerts", PATIENT.patient_id, "--db", db)
    assert result.exit_code == 0, result.output
    assert "kidney_left" in result.output


def test_fhir_export_parses(twin):
    from fhir.resources.bundle import Bundle

    _, db, *_ = twin
    result = invoke("twin", "show", PATIENT.patient_id, "--format", "fhir", "--db", db)
    assert result.exit_code == 0, result.output
    bundle = Bundle.model_validate_json(result.output)
    kinds = {entry.resource.__resource_type__ for entry in bundle.entry}
    assert {"Patient", "ImagingStudy", "Observation", "DiagnosticReport", "Device"} <= kinds


def test_imported_labs_appear_in_the_trend_and_the_timeline(twin, tmp_path):
    _, db, *_ = twin
    path = write_egfr_bundle(tmp_path / "labs.json", [("2024-01-10T08:00:00Z", 78.0), ("2024-07-10T08:00:00Z", 61.0)])
    imported = invoke("twin", "import-fhir", str(path), "--patient", PATIENT.patient_id, "--db", db)
    assert imported.exit_code == 0, imported.output
    assert "imported 2 observation(s)" in imported.output
    trend = invoke("twin", "trend", PATIENT.patient_id, "98979-8", "--db", db)
    assert "change: -17" in trend.output
    timeline = invoke("twin", "timeline", PATIENT.patient_id, "--json", "--db", db)
    kinds = [event["kind"] for event in json.loads(timeline.output)]
    assert kinds.count("study") == 2 and kinds.count("observation") >= 2


def test_an_unknown_patient_is_a_clear_error(twin):
    _, db, *_ = twin
    result = invoke("twin", "show", "NOBODY", "--db", db)
    assert result.exit_code == 1
    assert "NOBODY" in result.output and "Traceback" not in result.output
