"""`twin-imaging`: the command line for people and scripts.

Bad input ends with one line naming the problem on stderr and exit status 1, never a traceback (``--debug`` shows
it). Nothing here holds logic of its own: each command calls the library.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import ClassVar

import click
import numpy as np

from twin_imaging import __version__
from twin_imaging.errors import TwinImagingError
from twin_imaging.io import is_nifti_path, load_series, read_image, read_nifti, scan_dicom, write_nifti
from twin_imaging.volume import Volume

log = logging.getLogger("twin_imaging")


class _Group(click.Group):
    """Turns library errors into clean CLI errors."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TwinImagingError as exc:
            raise click.ClickException(str(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OSError as exc:
            if ctx.meta.get("debug"):
                raise
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None
        except Exception as exc:
            if ctx.meta.get("debug"):
                raise
            raise click.ClickException(
                f"internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback"
            ) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="twin-imaging")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """twin-imaging: the imaging layer of a patient digital twin."""
    ctx.meta["debug"] = debug
    _configure_logging(logging.WARNING - 10 * verbose)


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--series", "series_uid", metavar="UID", help="Read this SeriesInstanceUID instead of choosing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
def inspect(input_path: Path, series_uid: str | None, as_json: bool) -> None:
    """What INPUT holds (a DICOM folder, zip or file, or a NIfTI): series found, the one chosen and why, shape,
    spacing, orientation and intensity range."""
    if is_nifti_path(input_path):
        volume = read_nifti(input_path)
        report = {"input": str(input_path), "format": "NIfTI", "image": _describe(volume)}
    else:
        scan = scan_dicom(input_path, series_instance_uid=series_uid)
        volume = load_series(scan.chosen)
        report = {
            "input": str(input_path),
            "format": "DICOM",
            "images_found": len(scan.collected.instances),
            "files_skipped": [{"file": loc, "reason": why} for loc, why in scan.collected.skipped],
            "series": [
                {
                    "series": c.label,
                    "modality": c.info.modality,
                    "plane": c.plane,
                    "images": c.n_slices,
                    "slice_spacing_mm": c.geometry.slice_spacing_mm,
                    "chosen": c is scan.chosen,
                    "reason": c.choice_reason if c is scan.chosen else c.rejection_reason,
                }
                for c in scan.selection.candidates
            ],
            "chosen": scan.chosen.label,
            "chosen_because": scan.chosen.choice_reason,
            "image": _describe(volume),
            "warnings": scan.warnings,
        }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUTPUT.nii.gz", type=click.Path(path_type=Path))
@click.option("--series", "series_uid", metavar="UID", help="Read this SeriesInstanceUID instead of choosing.")
def convert(input_path: Path, output_path: Path, series_uid: str | None) -> None:
    """Convert INPUT (a DICOM folder, zip or file, or a NIfTI) to a NIfTI file, keeping the patient-space affine."""
    if not is_nifti_path(output_path):
        raise click.BadParameter("the output must end in .nii or .nii.gz", param_hint="OUTPUT.nii.gz")
    volume = read_image(input_path, series_instance_uid=series_uid)
    write_nifti(volume, output_path)
    click.echo(
        f"wrote {output_path}: {' x '.join(map(str, volume.shape))} voxels of "
        f"{' x '.join(f'{s:.4g}' for s in volume.spacing_mm)} mm, orientation {volume.orientation}"
    )


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder."
)
@click.option(
    "--model", "model", metavar="MODEL", help="Model package folder or id (default: the shipped organ model)."
)
@click.option("--series", "series_uid", metavar="UID", help="Analyse this SeriesInstanceUID instead of choosing.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on stderr.")
@click.option("--twin/--no-twin", "attach", default=True, show_default=True, help="Attach the result to the twin.")
@click.option("--db", metavar="URL", help="Twin database URL (default: settings, TWIN_IMAGING_DATABASE_URL).")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Twin database and artifacts in this folder."
)
@click.option("--patient", "patient_id", help="PatientID for a NIfTI input (DICOM carries its own).")
def analyze(input_path, out_dir, model, series_uid, progress, attach, db, data_dir, patient_id) -> None:
    """Segment and measure INPUT (a DICOM folder, zip or file, or a NIfTI) and write labels.nii.gz, seg.dcm and
    sr.dcm (DICOM input), overlay_*.png and results.json into OUT; attach the result to the patient's twin."""
    from twin_imaging.pipeline import analyze_study

    package = _load_package(model) if model else None
    with _ProgressBar(enabled=progress and sys.stderr.isatty()) as bar:
        result = analyze_study(input_path, out_dir, package=package, series_instance_uid=series_uid, progress=bar)
    attached = scenarios = None
    if attach:
        from twin_imaging.cli_twin import actor, open_store

        if result.input.report.format == "NIfTI" and not patient_id:
            raise click.UsageError("a NIfTI input carries no patient: give --patient, or --no-twin")
        with open_store(db, data_dir=data_dir) as store:
            attached = store.attach_analysis(result, actor=actor(), patient_identifier=patient_id)
            from twin_imaging.outcome.twin_scenarios import scenarios_after_attach

            scenarios = scenarios_after_attach(store, result, attached, actor=actor())
    document = result.document
    click.echo(
        f"series: {document.input.series_description or document.input.path} "
        f"({document.input.shape[0]} x {document.input.shape[1]} x {document.input.shape[2]}, "
        f"{' x '.join(f'{s:g}' for s in document.input.spacing_mm)} mm)"
    )
    click.echo(f"model: {document.model.model_id} {document.model.version} on {', '.join(document.model.providers)}")
    click.echo("| structure | volume (mL) | mean HU | principal extents (mm) | short axis (mm) |")
    click.echo("|---|---|---|---|---|")
    for s in document.structures:
        hu = "n/a" if s.hu_mean is None else f"{s.hu_mean:.1f}"
        e = s.principal_extents_mm
        extents = f"{e.major_axis_mm:.0f} x {e.minor_axis_mm:.0f} x {e.perpendicular_axis_mm:.0f}"
        short = "" if s.short_axis_mm is None else f"{s.short_axis_mm:.1f}"
        click.echo(f"| {s.name} | {s.volume_ml:.1f} | {hu} | {extents} | {short} |")
    if document.structures_not_found:
        click.echo(f"not found: {', '.join(document.structures_not_found)}")
    for reason in document.review.reasons:
        click.echo(f"REVIEW REQUIRED: {reason.message}")
    click.echo(f"outputs in {out_dir}/: " + ", ".join(o.file for o in document.outputs) + ", results.json")
    if attached is not None:
        click.echo(f"attached to the twin as analysis {attached.analysis_id} (study {attached.study_instance_uid})")
    if scenarios is not None:
        from twin_imaging.cli_outcome import echo_scenarios

        echo_scenarios(scenarios)
    click.echo("Research use only: the model is not validated for clinical use (see its model card).")


@cli.command()
def schema() -> None:
    """Print the JSON Schema of results.json (twin-imaging/analysis-result)."""
    from twin_imaging.results import AnalysisDocument

    click.echo(json.dumps(AnalysisDocument.model_json_schema(by_alias=True), indent=2))


def _load_package(model: str):
    from twin_imaging.models.package import load_model_package
    from twin_imaging.settings import get_settings

    path = Path(model)
    return load_model_package(path if path.exists() else get_settings().models_dir / model)


class _ProgressBar:
    """A tqdm bar over the analysis stages; the segmentation stage advances window by window."""

    # Share of the bar per stage, and where each starts (per cent).
    _WEIGHTS: ClassVar[dict[str, int]] = {"read": 10, "segment": 70, "measure": 5, "write": 15}
    _STARTS: ClassVar[dict[str, int]] = {"read": 0, "segment": 10, "measure": 80, "write": 85, "done": 100}

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=100, unit="%", bar_format="{desc:<10} {percentage:3.0f}%|{bar}| {elapsed}", leave=False
            )
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.bar is None:
            return
        position = self._STARTS.get(stage, 0) + self._WEIGHTS.get(stage, 0) * (done / max(total, 1))
        self.bar.set_description_str(stage)
        self.bar.update(max(0.0, position - self.bar.n))

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


@cli.command()
@click.argument("model", metavar="MODEL")
@click.argument("datalist_path", metavar="DATALIST", type=click.Path(path_type=Path))
@click.option("--data-root", type=click.Path(path_type=Path), help="Folder the datalist's relative paths are under.")
@click.option("--fold", "folds", type=int, multiple=True, help="Score only this fold (repeatable).")
@click.option("--section", type=click.Choice(["training", "test"]), default="training", show_default=True)
@click.option("--tolerance-mm", type=float, default=2.0, show_default=True, help="NSD tolerance.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write per-case scores as JSON.")
def evaluate(model, datalist_path, data_root, folds, section, tolerance_mm, json_path) -> None:
    """Score MODEL (a package folder, or a model id in the models folder) on the labelled cases of DATALIST (an
    MSD-style dataset.json; images NIfTI or DICOM, label maps NIfTI): per-structure Dice, NSD and HD95."""
    from twin_imaging.datalist import read_datalist
    from twin_imaging.evaluation.evaluate import evaluate_package, format_summary_table

    package = _load_package(model)
    datalist = read_datalist(datalist_path, data_root=data_root)

    def report(case_id: str, scores) -> None:
        dice = ", ".join(f"{name} {s.dice:.3f}" for name, s in scores.items() if s.reference_present)
        click.echo(f"{case_id}: Dice {dice or '(no reference structures)'}", err=True)

    result = evaluate_package(
        package, datalist, folds=list(folds) or None, section=section, tolerance_mm=tolerance_mm, on_case=report
    )
    click.echo(
        f"model {package.card.model_id} {package.card.version} on {datalist.name}, "
        f"{len(result.case_ids)} case(s) ({section}, folds {list(folds) or 'all'}); reference: {datalist.reference}"
    )
    click.echo(format_summary_table(result.summary, tolerance_mm=tolerance_mm))
    if json_path:
        document = {
            "model_id": package.card.model_id,
            "model_version": package.card.version,
            "onnx_sha256": package.card.weights_sha256,
            "dataset": datalist.name,
            "reference": datalist.reference,
            "folds": list(folds) or None,
            "section": section,
            "nsd_tolerance_mm": tolerance_mm,
            "summary": result.summary,
            "per_case": {
                case: {name: _score_json(score) for name, score in scores.items()}
                for case, scores in result.per_case.items()
            },
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        click.echo(f"wrote {json_path}")


def _score_json(score) -> dict:
    def finite(value: float) -> float | None:
        return float(value) if np.isfinite(value) else None

    return {
        "dice": finite(score.dice),
        "nsd": finite(score.nsd),
        "hd95_mm": finite(score.hd95_mm),
        "reference_voxels": score.reference_voxels,
        "predicted_voxels": score.predicted_voxels,
    }


def _describe(volume: Volume) -> dict:
    values = volume.array
    unit = "HU" if volume.info.modality == "CT" else "value"
    return {
        "modality": volume.info.modality or None,
        "shape": list(volume.shape),
        "spacing_mm": [round(s, 6) for s in volume.spacing_mm],
        "orientation": volume.orientation,
        "dtype": str(values.dtype),
        "value_unit": unit,
        "value_range": [_plain(np.min(values)), _plain(np.max(values))],
        "affine_ras": np.round(volume.affine_ras, 6).tolist(),
    }


def _plain(value) -> float | int:
    return value.item() if hasattr(value, "item") else value


def _print_report(report: dict) -> None:
    echo = click.echo
    echo(f"input: {report['input']} ({report['format']})")
    if report["format"] == "DICOM":
        skipped = report["files_skipped"]
        echo(f"images found: {report['images_found']}" + (f", files skipped: {len(skipped)}" if skipped else ""))
        for item in skipped[:10]:
            echo(f"  skipped {item['file']}: {item['reason']}")
        echo(f"series found: {len(report['series'])}")
        for series in report["series"]:
            mark = "CHOSEN" if series["chosen"] else "not chosen"
            spacing = f" at {series['slice_spacing_mm']:.3g} mm" if series["slice_spacing_mm"] else ""
            echo(f"  - {series['series']}: {series['images']} {series['plane']} image(s){spacing}")
            echo(f"      {mark}: {series['reason']}")
    image = report["image"]
    echo("image:")
    echo(f"  shape (i x j x k): {' x '.join(map(str, image['shape']))}")
    echo(f"  spacing (mm):      {' x '.join(f'{s:.4g}' for s in image['spacing_mm'])}")
    echo(f"  orientation:       {image['orientation']} (voxel axes i, j, k point to these patient directions)")
    low, high = image["value_range"]
    echo(f"  {(image['value_unit'] + ' range:'):<19}{low:g} .. {high:g} ({image['dtype']})")


def _configure_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(max(level, logging.DEBUG))
    log.propagate = False


def _register_groups() -> None:
    from twin_imaging.cli_access import api_key
    from twin_imaging.cli_batch import batch
    from twin_imaging.cli_dev import demo, phantom
    from twin_imaging.cli_mesh import mesh
    from twin_imaging.cli_outcome import outcome
    from twin_imaging.cli_pacs import listen, pacs
    from twin_imaging.cli_twin import twin

    cli.add_command(twin)
    cli.add_command(outcome)
    cli.add_command(api_key)
    cli.add_command(pacs)
    cli.add_command(listen)
    cli.add_command(phantom)
    cli.add_command(demo)
    cli.add_command(mesh)
    cli.add_command(batch)


_register_groups()


def main() -> None:
    cli(prog_name="twin-imaging")


if __name__ == "__main__":
    main()
