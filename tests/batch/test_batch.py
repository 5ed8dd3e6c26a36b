"""`twin-imaging batch` on a real local Ray instance (2 workers) and a throwaway PostgreSQL twin: a manifest of 6
phantom studies (one retrieved from a real Orthanc by DICOMweb, one corrupt, one attached before) gives 4 analysed,
1 skipped, 1 failed with its reason; a second run analyses nothing; the twin holds exactly 5 analyses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from twin_imaging.inference.segment import Segmenter
from twin_imaging.models import default_segmentation_package
from twin_imaging.pipeline import analyze_study
from twin_imaging.settings import Settings
from twin_imaging.testing import PhantomGeometry, write_phantom_cohort
from twin_imaging.testing.orthanc import OrthancServer, orthanc_available
from twin_imaging.twin.store import TwinStore

GEOMETRY = PhantomGeometry(shape=(128, 112, 48), spacing_mm=(3.0, 2.5, 4.0))
CLI = str(Path(sys.executable).parent / "twin-imaging")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    reason = orthanc_available()
    if reason:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, orthanc):
    pytest.importorskip("ray", reason="ray is not installed (scripts/test.sh installs the batch extra)")
    root = tmp_path_factory.mktemp("cohort")
    written = write_phantom_cohort(root, 5, GEOMETRY)
    corrupt = root / "study5"
    corrupt.mkdir()
    (corrupt / "IM0001.dcm").write_bytes(b"DICM" + os.urandom(2048))  # not a DICOM file
    manifest = root / "cohort.csv"
    pacs_study = written[4]  # in the PACS only: retrieved by its StudyInstanceUID
    orthanc.upload(pacs_study.series[0].paths)
    rows = [f"study{n}" for n in range(4)] + [f"dicomweb:{pacs_study.study_instance_uid}", "study5"]
    manifest.write_text("source,patient_id\n" + "".join(f"{row},\n" for row in rows), encoding="utf-8")
    return root, manifest


def run_batch(
    manifest: Path, database_url: str, data_dir: Path, report: Path, pacs: str
) -> subprocess.CompletedProcess:
    env = {**os.environ, "TWIN_IMAGING_DATA_DIR": str(data_dir), "TWIN_IMAGING_BATCH_WORKERS": "2"}
    command = [CLI, "batch", str(manifest), "--db", database_url, "--data-dir", str(data_dir), "--report", str(report)]
    command += ["--dicomweb-url", pacs]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def analyses_in(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT COUNT(*) FROM analysis")).scalar_one()
    finally:
        engine.dispose()


def test_a_cohort_on_ray_is_analysed_once_resumably_and_one_bad_study_stops_nothing(
    cohort, postgres_server, orthanc, tmp_path
):
    root, manifest = cohort
    database_url = postgres_server.create_database()
    data_dir = tmp_path / "twin"
    store = TwinStore(database_url, artifacts_dir=data_dir / "artifacts", settings=Settings())
    result = analyze_study(root / "study2", tmp_path / "before", segmenter=Segmenter(default_segmentation_package()))
    attached_before = store.attach_analysis(result, actor="pacs").analysis_id
    store.close()

    first = run_batch(manifest, database_url, data_dir, tmp_path / "first.json", orthanc.dicomweb_url)
    assert first.returncode == 1, first.stdout + first.stderr  # one study failed
    assert "6 studies: 4 analysed, 1 skipped (already attached), 1 failed" in first.stdout, first.stdout
    assert "FAILED row 6 (study5)" in first.stdout and "no DICOM images found" in first.stdout
    report = json.loads((tmp_path / "first.json").read_text())
    by_row = {s["row"]: s for s in report["studies"]}
    assert by_row[3]["status"] == "skipped" and by_row[3]["analysis_id"] == attached_before
    assert {by_row[r]["status"] for r in (1, 2, 4, 5)} == {"analysed"}  # row 5 retrieved from the PACS
    assert {s["worker"] for s in report["studies"]} == {"worker-0", "worker-1"}  # both workers took studies
    assert analyses_in(database_url) == 5

    second = run_batch(manifest, database_url, data_dir, tmp_path / "second.json", orthanc.dicomweb_url)
    assert "6 studies: 0 analysed, 5 skipped (already attached), 1 failed" in second.stdout, second.stdout
    assert analyses_in(database_url) == 5

    dry = subprocess.run(
        [CLI, "batch", str(manifest), "--db", database_url, "--data-dir", str(data_dir), "--dry-run", "--limit", "2"],
        env={**os.environ, "TWIN_IMAGING_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr
    assert "would skip row 1 (study0)" in dry.stdout and "dry run: 0 of 2 studies would be analysed" in dry.stdout
