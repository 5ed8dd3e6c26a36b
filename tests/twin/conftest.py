"""Fixtures of the twin tests.

``database_url`` runs a test twice: on a SQLite file and on a throwaway PostgreSQL server (``postgres_server``, in
the root conftest), one fresh database per test. Without the binaries the PostgreSQL half skips, except under CI
(``CI`` set), where it fails. ``phantom_case`` analyses a pre- and a post-operative phantom study of one patient
(the left kidney scaled by 0.8) with the shipped model, once per session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select

from twin_imaging.inference.segment import Segmenter
from twin_imaging.models import default_segmentation_package
from twin_imaging.pipeline import AnalysisResult, analyze_study
from twin_imaging.settings import Settings
from twin_imaging.testing import (
    PatientSpec,
    PhantomAnatomy,
    PhantomGeometry,
    PhantomStudy,
    SeriesSpec,
    StudySpec,
    write_phantom_study,
    write_threshold_model_package,
)
from twin_imaging.twin.database import database_url as parse_url
from twin_imaging.twin.store import TwinStore

# Small enough to analyse in a few seconds, fine enough (2.5 x 2 x 3 mm) for the kidney volumes to be measured well.
GEOMETRY = PhantomGeometry(shape=(160, 160, 64), spacing_mm=(2.5, 2.0, 3.0))
PATIENT = PatientSpec(
    patient_id="TWIN-PAT-0042", patient_name="Doe^Jane", patient_birth_date="19610304", patient_sex="F"
)
PRE_DATE, POST_DATE = "20240115", "20240415"
KIDNEY_SCALE = 0.8


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'twin.sqlite3'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def store(database_url, tmp_path):
    with TwinStore(database_url, artifacts_dir=tmp_path / "artifacts", settings=Settings()) as twin:
        yield twin


def count_rows(url: str, table) -> int:
    """Rows in a table (a schema model class), read on a connection of its own."""
    engine = create_engine(parse_url(url))
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(table))
    finally:
        engine.dispose()


# --- phantom analyses --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomCase:
    """A patient's pre- and post-operative phantom studies and their analyses by the shipped model; the pre study
    also analysed by the threshold test model."""

    pre_study: PhantomStudy
    post_study: PhantomStudy
    pre: AnalysisResult
    post: AnalysisResult
    pre_threshold: AnalysisResult

    def true_volume_ml(self, study: PhantomStudy, structure: str) -> float:
        """The phantom's own volume of a structure: its label's voxel count times the voxel volume."""
        labels = study.series[0].phantom.labels
        label = next(value for value, name in labels.label_names.items() if name == structure)
        voxel_ml = abs(float(np.linalg.det(labels.affine_ras[:3, :3]))) / 1000.0
        return int(np.count_nonzero(labels.array == label)) * voxel_ml


@pytest.fixture(scope="session")
def phantom_case(tmp_path_factory) -> PhantomCase:
    root = tmp_path_factory.mktemp("twin_phantoms")
    series = (SeriesSpec(geometry=GEOMETRY),)
    pre_study = write_phantom_study(root / "pre", series, patient=PATIENT, study=StudySpec(study_date=PRE_DATE))
    post_study = write_phantom_study(
        root / "post",
        series,
        patient=PATIENT,
        study=StudySpec(study_date=POST_DATE, accession_number="PHA0002"),
        anatomy=PhantomAnatomy().with_scaled("kidney_left", KIDNEY_SCALE),
    )
    segmenter = Segmenter(default_segmentation_package())
    pre = analyze_study(root / "pre", root / "pre_out", segmenter=segmenter)
    post = analyze_study(root / "post", root / "post_out", segmenter=segmenter)
    threshold = write_threshold_model_package(root / "threshold_model")
    pre_threshold = analyze_study(root / "pre", root / "pre_threshold_out", package=threshold)
    return PhantomCase(pre_study, post_study, pre, post, pre_threshold)
