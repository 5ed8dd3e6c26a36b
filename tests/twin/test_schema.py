"""The twin's schema as the migrations build it, on SQLite and PostgreSQL: equal to the models, repeatable,
reversible, with the constraints and cascades the store relies on."""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from twin_imaging.errors import TwinError
from twin_imaging.settings import Settings
from twin_imaging.twin.database import (
    MIGRATIONS_DIR,
    alembic_config,
    create_twin_engine,
    current_revision,
    database_url,
    head_revision,
    upgrade_database,
)
from twin_imaging.twin.schema import (
    Analysis,
    AnalysisGrant,
    Base,
    Measurement,
    Patient,
    Prediction,
    Series,
    Study,
)
from twin_imaging.twin.store import TwinStore


@pytest.fixture
def engine(database_url):
    upgrade_database(database_url)
    engine = create_twin_engine(database_url)
    yield engine
    engine.dispose()


def _analysis(series_id: int, **overrides) -> Analysis:
    now = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
    fields = dict(
        series_id=series_id,
        model_id="m",
        model_version="1",
        onnx_sha256="0" * 64,
        code_version="0.1.0",
        input_uids=["1.2.3"],
        input_set_sha256="a" * 64,
        structures_not_found=[],
        started_at=now,
        finished_at=now,
        status="completed",
    )
    return Analysis(**(fields | overrides))


def _patient_with_analysis(session: Session) -> Analysis:
    patient = Patient(patient_key="P1", pseudonymous=False)
    study = Study(study_instance_uid="1.2.1", study_date=date(2024, 1, 15), patient=patient)
    series = Series(series_instance_uid="1.2.1.1", study=study)
    session.add_all([patient, study, series])
    session.flush()
    analysis = _analysis(series.id)
    analysis.measurements = [
        Measurement(
            structure="liver", label=1, snomed_code="10200004", snomed_meaning="Liver", voxel_count=10, volume_ml=1.5
        )
    ]
    session.add(analysis)
    session.flush()
    return analysis


def test_migrated_schema_equals_the_models(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
    assert current_revision(engine) == head_revision() == "0008"
    # compare_metadata does not look at ON DELETE: compare the foreign keys in full
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        expected = {
            (tuple(fk.parent.name for fk in c.elements), c.referred_table.name, (c.ondelete or "").upper())
            for c in table.foreign_key_constraints
        }
        found = {
            (tuple(fk["constrained_columns"]), fk["referred_table"], (fk["options"].get("ondelete") or "").upper())
            for fk in inspector.get_foreign_keys(table.name)
        }
        assert found == expected, table.name


def test_migrations_are_repeatable_and_reversible(engine, database_url):
    upgrade_database(database_url)  # at head already: nothing to do, no error
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade_database(engine)
    assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}


_ROWS_AT_0001 = (  # one analysis as revision 0001 stored it, written in plain SQL (the models are at head)
    "INSERT INTO patient (id, patient_key, pseudonymous, created_at) VALUES (1, 'P1', false, :at)",
    "INSERT INTO imaging_study (id, patient_id, study_instance_uid, description, created_at) "
    "VALUES (1, 1, '1.2.1', '', :at)",
    "INSERT INTO imaging_series (id, study_id, series_instance_uid, modality, series_description, n_instances) "
    "VALUES (1, 1, '1.2.1.1', 'CT', '', 1)",
    "INSERT INTO analysis (id, series_id, model_id, model_version, onnx_sha256, code_version, input_uids, "
    "structures_not_found, started_at, finished_at, status, created_at) "
    "VALUES (1, 1, 'm', '1', :sha, '0.1.0', '[]', '[]', :at, :at, 'completed', :at)",
    "INSERT INTO measurement (id, analysis_id, structure, label, snomed_code, snomed_meaning, voxel_count, "
    "volume_ml, max_diameter_mm) VALUES (1, 1, 'aorta', 1, '15825003', 'Aorta', 10, 70.0, 199.0)",
    "INSERT INTO prediction (id, patient_id, analysis_id, target, scenario, probability, model_id, model_version, "
    "created_at) VALUES (1, 1, 1, 'egfr_decline', 'partial_nephrectomy', 0.3, 'outcome', '0.1.0', :at)",
    "INSERT INTO audit_log (at, actor, action, patient_key, object_type, object_id) "
    "VALUES (:at, 'api:router-a', 'attach_analysis', 'P1', 'analysis', '1')",
    "INSERT INTO audit_log (at, actor, action, patient_key, object_type, object_id) "
    "VALUES (:at, 'api:clinic', 'read_analysis', 'P1', 'analysis', '1')",
)


def test_upgrading_old_rows_keeps_them_and_fills_what_is_new(database_url):
    """0002: the old extent kept under its right name, old analyses unreviewed (NULL); 0003: a random public id
    for each analysis and a read grant for whoever attached it, from the audit log (not for mere readers)."""
    upgrade_database(database_url, "0001")
    engine = create_twin_engine(database_url)
    try:
        with engine.begin() as connection:
            for statement in _ROWS_AT_0001:
                connection.execute(text(statement), {"at": datetime(2024, 1, 15, 10, tzinfo=UTC), "sha": "0" * 64})
        upgrade_database(engine)
        with Session(engine) as session:
            measurement = session.scalar(select(Measurement))
            assert measurement.greatest_extent_mm == 199.0  # what it always was: the farthest two voxels
            assert measurement.short_axis_mm is None and measurement.major_axis_mm is None
            analysis = session.scalar(select(Analysis))
            assert analysis.review_reasons is None  # unknown, not "fine"
            assert len(analysis.public_id) == 32 and int(analysis.public_id, 16) >= 0
            assert [g.actor for g in session.scalars(select(AnalysisGrant))] == ["api:router-a"]
            prediction = session.scalar(select(Prediction))  # 0005: a probability stays one
            assert (prediction.probability, prediction.value, prediction.unit) == (0.3, None, None)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("probability", "value", "unit"),
    [(0.4, 61.0, "mL/min/{1.73_m2}"), (None, None, None), (None, 61.0, None), (1.5, None, None), (0.4, None, "%")],
)
def test_the_database_holds_a_prediction_as_exactly_one_of_a_probability_or_a_value(engine, probability, value, unit):
    with Session(engine) as session, session.begin():
        patient_id = _patient_with_analysis(session).series.study.patient_id
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(
            Prediction(
                patient_id=patient_id,
                target="t",
                scenario="s",
                probability=probability,
                value=value,
                unit=unit,
                model_id="m",
                model_version="1",
            )
        )
    with Session(engine) as session, session.begin():  # the two good shapes
        session.add(
            Prediction(
                patient_id=patient_id, target="t", scenario="s", probability=0.4, model_id="m", model_version="1"
            )
        )
        session.add(
            Prediction(
                patient_id=patient_id,
                target="t",
                scenario="s",
                value=61.0,
                unit="mL/min/{1.73_m2}",
                model_id="m",
                model_version="1",
            )
        )


def test_migrations_ship_inside_the_package():
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0002_clinical_measures_and_review.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0005_predicted_values.py").is_file()


def test_deleting_a_patient_cascades_to_everything_it_owns(engine):
    with Session(engine) as session, session.begin():
        _patient_with_analysis(session)
    with engine.begin() as connection:  # plain SQL: the database's ON DELETE CASCADE, not the ORM's
        connection.execute(delete(Patient))
    with engine.connect() as connection:
        for model in (Study, Series, Analysis, Measurement):
            assert connection.scalar(select(func.count()).select_from(model)) == 0, model.__tablename__


def test_a_series_has_one_analysis_per_model_version_and_input_set(engine):
    with Session(engine) as session, session.begin():
        series_id = _patient_with_analysis(session).series_id
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(_analysis(series_id))
    with Session(engine) as session, session.begin():
        session.add(_analysis(series_id, model_version="2"))  # another version is another analysis
        session.add(_analysis(series_id, input_set_sha256="b" * 64))  # so are more instances


def test_foreign_keys_are_enforced(engine):
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(_analysis(series_id=999))


def test_sqlite_runs_with_foreign_keys_and_write_ahead_logging(tmp_path):
    engine = create_twin_engine(f"sqlite:///{tmp_path / 'deep' / 'folder' / 'twin.sqlite3'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()
    assert (tmp_path / "deep" / "folder" / "twin.sqlite3").is_file()


def test_database_urls():
    assert database_url("postgresql://twin@db.example/twin").drivername == "postgresql+psycopg"
    assert database_url("sqlite:///twin.sqlite3").drivername == "sqlite"
    with pytest.raises(TwinError, match="SQLite or PostgreSQL"):
        database_url("mysql://twin@db.example/twin")
    with pytest.raises(TwinError, match="not a database URL"):
        database_url("twin.sqlite3")


def test_an_unusable_database_is_a_clear_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TwinError, match="the twin database failed: OperationalError"):
        TwinStore(f"postgresql://twin@127.0.0.1:{port}/twin", artifacts_dir=tmp_path, settings=Settings())
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(TwinError, match="cannot create the twin database's folder"):
        TwinStore(f"sqlite:///{blocker / 'twin.sqlite3'}", artifacts_dir=tmp_path, settings=Settings())
