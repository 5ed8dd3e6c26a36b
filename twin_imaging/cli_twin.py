"""`twin-imaging twin …`: the patient twin from the command line (show, timeline, compare, trend, alerts, import).

PATIENT is the twin's patient key, or the PatientID as the PACS knows it (turned into its pseudonym where the twin
pseudonymises). Every command is written to the twin's audit log as the calling user (``cli:<login>``).
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name in some containers
        return "cli:unknown"


def open_store(db: str | None, *, data_dir: Path | None = None):
    """The twin store: ``db`` (a URL) or settings; ``data_dir`` puts the database and artifacts there instead."""
    from twin_imaging.twin.store import TwinStore

    if data_dir is not None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        url = db or f"sqlite:///{data_dir.resolve() / 'twin.sqlite3'}"
        return TwinStore(url, artifacts_dir=data_dir / "artifacts")
    return TwinStore(db) if db else TwinStore()


def to_json(value) -> str:
    from twin_imaging.twin.views import to_jsonable

    return json.dumps(to_jsonable(value), indent=2)


_db_option = click.option(
    "--db", metavar="URL", help="Twin database URL (default: settings, TWIN_IMAGING_DATABASE_URL)."
)


@click.group()
def twin() -> None:
    """The patient twin: a longitudinal record of studies, analyses, labs, procedures, predictions and alerts."""


@twin.command()
@click.argument("patient")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "fhir"]), default="text", show_default=True)
@_db_option
def show(patient: str, fmt: str, db: str | None) -> None:
    """A patient's twin: studies, analyses with their model and measurements, labs, procedures, alerts."""
    with open_store(db) as store:
        key = store.resolve_patient_key(patient)
        summary = store.summary(key, actor=actor())
    if fmt == "json":
        click.echo(to_json(summary))
        return
    if fmt == "fhir":
        from twin_imaging.twin.fhir import export_bundle

        click.echo(json.dumps(export_bundle(summary), indent=2))
        return
    p = summary.patient
    click.echo(f"patient {p.patient_key}{' (pseudonymous key)' if p.pseudonymous else ''}")
    for study in summary.studies:
        click.echo(f"study {study.study_date or 'undated'} {study.description or ''} {study.study_instance_uid}")
        for analysis in (a for a in summary.analyses if a.study_instance_uid == study.study_instance_uid):
            click.echo(
                f"  analysis {analysis.analysis_id}: {analysis.model_id} {analysis.model_version} ({analysis.status})"
            )
            for reason in analysis.review_reasons or ():
                click.echo(f"    REVIEW REQUIRED: {reason.message}")
            for m in analysis.measurements:
                hu = "" if m.hu_mean is None else f", {m.hu_mean:.0f} HU"
                click.echo(f"    {m.structure}: {m.volume_ml:.1f} mL{hu}")
    for o in summary.observations:
        click.echo(f"lab {o.effective_at:%Y-%m-%d} {o.display}: {o.value:g} {o.unit}")
    for pr in summary.procedures:
        click.echo(f"procedure {pr.performed_on} {pr.display}")
    for pred in summary.predictions:
        click.echo(f"prediction {pred.target} under {pred.scenario}: {pred.probability:.2f}")
    for alert in summary.alerts:
        click.echo(f"ALERT [{alert.severity}] {alert.message}")


@twin.command()
@click.argument("patient")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_db_option
def timeline(patient: str, as_json: bool, db: str | None) -> None:
    """Everything that happened to the patient's twin, oldest first."""
    with open_store(db) as store:
        events = store.timeline(store.resolve_patient_key(patient), actor=actor())
    if as_json:
        click.echo(to_json(events))
        return
    for event in events:
        click.echo(f"{event.at:%Y-%m-%d %H:%M}  {event.kind:<11} {event.summary}")


@twin.command()
@click.argument("patient")
@click.argument("study_a")
@click.argument("study_b")
@click.option("--model", "model_id", help="Compare the measurements of this model id (default: one that did both).")
@click.option("--model-version", help="... and this version.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_db_option
def compare(patient, study_a, study_b, model_id, model_version, as_json, db) -> None:
    """Volume change per structure from STUDY_A to STUDY_B (StudyInstanceUIDs), by the same model on both."""
    with open_store(db) as store:
        changes = store.compare_studies(
            store.resolve_patient_key(patient),
            study_a,
            study_b,
            actor=actor(),
            model_id=model_id,
            model_version=model_version,
        )
    if as_json:
        click.echo(to_json(changes))
        return
    if changes:
        first = changes[0]
        click.echo(f"from {first.study_a_date or study_a} to {first.study_b_date or study_b}")
    click.echo("| structure | before (mL) | after (mL) | change (mL) | change (%) |")
    click.echo("|---|---|---|---|---|")
    for c in changes:
        percent = "n/a" if c.change_percent is None else f"{c.change_percent:+.1f}"
        click.echo(f"| {c.structure} | {c.volume_a_ml:.1f} | {c.volume_b_ml:.1f} | {c.change_ml:+.1f} | {percent} |")


@twin.command()
@click.argument("patient")
@click.argument("code")
@_db_option
def trend(patient: str, code: str, db: str | None) -> None:
    """The values of one observation CODE (e.g. LOINC 98979-8, eGFR) over time, and their change."""
    with open_store(db) as store:
        result = store.observation_trend(store.resolve_patient_key(patient), code, actor=actor())
    for o in result.observations:
        click.echo(f"{o.effective_at:%Y-%m-%d}  {o.value:g} {o.unit}")
    if result.change is not None:
        percent = "" if result.change_percent is None else f" ({result.change_percent:+.1f} %)"
        click.echo(f"change: {result.change:+g} {result.unit}{percent}")


@twin.command()
@click.argument("patient")
@_db_option
def alerts(patient: str, db: str | None) -> None:
    """The patient's alerts (e.g. a post-operative volume loss beyond the configured threshold)."""
    with open_store(db) as store:
        found = store.alerts(store.resolve_patient_key(patient), actor=actor())
    for alert in found:
        click.echo(f"{alert.created_at:%Y-%m-%d} [{alert.severity}] {alert.message}")
    if not found:
        click.echo("no alerts")


@twin.command("import-fhir")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--patient", help="PatientID to file the records under (default: the bundle's Patient identifier).")
@_db_option
def import_fhir(file: Path, patient: str | None, db: str | None) -> None:
    """Import Observations (eGFR, creatinine, ...) and Procedures from a FHIR Bundle (JSON) into a patient's twin."""
    from twin_imaging.twin.fhir import parse_bundle

    records = parse_bundle(file.read_bytes())
    identifier = patient or records.patient_identifier
    if not identifier:
        raise click.UsageError("the bundle names no patient: give --patient")
    with open_store(db) as store:
        key = store.register_patient(identifier, actor=actor()).patient_key  # idempotent: labs may come first
        store.import_records(records, patient_key=key, actor=actor())
        recomputed = _refresh_scenarios(store, key) if _feeds_scenarios(records) else []
    click.echo(f"imported {len(records.observations)} observation(s) and {len(records.procedures)} procedure(s)")
    for reason in records.skipped:
        click.echo(f"skipped: {reason}")
    if recomputed:
        from twin_imaging.cli_outcome import echo_scenarios

        click.echo(f"surgical scenarios recomputed with the new inputs for {len(recomputed)} analysis(es):")
        for run in recomputed:
            echo_scenarios(run)


def _feeds_scenarios(records) -> bool:
    from twin_imaging.outcome.twin_inputs import is_scenario_input

    return any(is_scenario_input(o.code) for o in records.observations)


def _refresh_scenarios(store, patient_key: str) -> list:
    """The patient's scenarios run again where the imported records change them (none without an outcome model)."""
    from twin_imaging.errors import ModelError
    from twin_imaging.outcome.model import OutcomeModel
    from twin_imaging.scenario_refresh import refresh_scenarios

    if not any(p.mask_source for p in store.summary(patient_key, actor=actor()).predictions):
        return []  # no scenarios to refresh: the outcome model need not load
    try:
        model = OutcomeModel()
    except ModelError as exc:
        click.echo(f"surgical scenarios not recomputed: no outcome model ({exc})")
        return []
    return [run for run in refresh_scenarios(store, patient_key, actor=actor(), outcome_model=model) if run.computed]
