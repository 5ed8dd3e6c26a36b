"""`twin-imaging batch MANIFEST`: build the twin for a whole cohort on Ray, the model loaded once per worker."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import click


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--workers", type=click.IntRange(min=1), help="Ray actors, each with the model loaded once (default: settings)."
)
@click.option("--ray-address", help="A Ray cluster ('auto', ray://head:10001); default: a local Ray instance.")
@click.option("--model", help="Model package folder or id (default: the shipped organ model).")
@click.option("--db", metavar="URL", help="Twin database URL (default: settings; PostgreSQL for a cluster).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Twin database and artifacts here.")
@click.option("--dicomweb-url", help="Where dicomweb:<StudyInstanceUID> rows are retrieved from.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N studies of the manifest.")
@click.option("--dry-run", is_flag=True, help="Say what would be analysed or skipped; analyse nothing.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON report.")
def batch(manifest, workers, ray_address, model, db, data_dir, dicomweb_url, limit, dry_run, report_path) -> None:
    """Analyse every study of MANIFEST (CSV with a 'source' column and optional 'patient_id', or JSON) and attach
    the results to the twin. Resumable: a study already attached (same series, model, version and instances) is
    skipped, found from its headers alone; a study that fails is reported with its reason and never stops the others."""
    from twin_imaging.batch.manifest import read_manifest
    from twin_imaging.batch.ray_runner import BatchConfig, run_on_ray
    from twin_imaging.settings import get_settings

    settings = get_settings()
    items = read_manifest(manifest)[:limit]
    if data_dir is not None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    database_url = db or (f"sqlite:///{data_dir.resolve() / 'twin.sqlite3'}" if data_dir else settings.database_url)
    artifacts_dir = str((data_dir / "artifacts").resolve() if data_dir else settings.artifacts_dir)
    package_dir = _package_dir(model)
    if any(i.is_dicomweb for i in items) and not dicomweb_url:
        raise click.UsageError("the manifest lists dicomweb: studies; give --dicomweb-url")
    if dry_run:
        _dry_run(items, package_dir, database_url, artifacts_dir)
        return
    config = BatchConfig(
        workers=workers or settings.batch_workers,
        database_url=database_url,
        artifacts_dir=artifacts_dir,
        package_dir=package_dir,
        dicomweb_url=dicomweb_url,
        ray_address=ray_address,
        cpus_per_worker=settings.batch_cpus_per_worker,
        gpus_per_worker=settings.batch_gpus_per_worker,
    )
    from tqdm import tqdm

    with tqdm(total=len(items), unit="study", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:
        outcomes = run_on_ray(items, config, on_done=lambda outcome: bar.update(1))
    counts = Counter(o.status for o in outcomes)
    click.echo(
        f"{len(outcomes)} studies: {counts['analysed']} analysed, {counts['skipped']} skipped (already attached), "
        f"{counts['failed']} failed"
    )
    for o in outcomes:
        if o.status == "failed":
            click.echo(f"FAILED {o.label}: {o.reason}")
    if report_path is not None:
        report = {"counts": dict(counts), "studies": [o.__dict__ for o in outcomes]}
        report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if counts["failed"]:
        sys.exit(1)


def _package_dir(model: str | None) -> str | None:
    if not model:
        return None
    from twin_imaging.settings import get_settings

    path = Path(model)
    return str((path if path.exists() else get_settings().models_dir / model).resolve())


def _dry_run(items, package_dir, database_url, artifacts_dir) -> None:
    from twin_imaging.batch.work import attached_analysis_id
    from twin_imaging.models.package import default_segmentation_package, load_model_package
    from twin_imaging.settings import get_settings
    from twin_imaging.twin.store import TwinStore

    card = (load_model_package(Path(package_dir)) if package_dir else default_segmentation_package()).card
    with TwinStore(database_url, artifacts_dir=Path(artifacts_dir), settings=get_settings()) as store:
        todo = 0
        for item in items:
            if item.is_dicomweb:
                click.echo(f"would retrieve and analyse {item.label} (unless attached already)")
                todo += 1
                continue
            try:
                existing = attached_analysis_id(store, card, Path(item.source))
            except Exception as exc:  # reported, as the real run would
                click.echo(f"would fail {item.label}: {exc}")
                continue
            if existing:
                click.echo(f"would skip {item.label}: already attached as analysis {existing}")
            else:
                click.echo(f"would analyse {item.label}")
                todo += 1
    click.echo(f"dry run: {todo} of {len(items)} studies would be analysed with {card.model_id} {card.version}")
