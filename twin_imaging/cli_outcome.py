"""`twin-imaging outcome …`: post-operative outcome predictions per surgical scenario, and scoring on a dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

SCENARIOS = ("partial_nephrectomy", "radical_nephrectomy")  # as twin_imaging.outcome.scenarios (kept light here)


@click.group()
def outcome() -> None:
    """Post-operative outcomes after nephrectomy (research model trained on KiTS23; not for clinical use)."""


@outcome.command()
@click.option(
    "--mask",
    "mask_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Label map: 1 kidney, 2 tumour, 3 cyst (KiTS convention), NIfTI.",
)
@click.option(
    "--clinical",
    "clinical_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Pre-operative clinical variables, JSON.",
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    type=click.Choice(SCENARIOS),
    help="Planned operation (repeatable; default: both).",
)
@click.option("--margin-mm", type=float, default=5.0, show_default=True, help="Resection margin of a partial.")
@click.option(
    "--approach", type=click.Choice(["robotic", "laparoscopic", "open"]), default="robotic", show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict(mask_path, clinical_path, scenarios, margin_mm, approach, as_json) -> None:
    """Probability of each outcome, with a 90 % interval, per scenario side by side, and what drove it."""
    from twin_imaging.io import read_nifti
    from twin_imaging.outcome.clinical import load_clinical_json
    from twin_imaging.outcome.model import OutcomeModel
    from twin_imaging.outcome.scenarios import predict_scenarios

    model = OutcomeModel()
    report = predict_scenarios(
        model,
        read_nifti(mask_path),
        load_clinical_json(clinical_path),
        scenarios=scenarios or SCENARIOS,
        margin_mm=margin_mm,
        approach=approach,
    )
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    predictions, imputed, cautions = report.predictions, report.imputed, report.cautions
    order = list(report.scenarios)
    click.echo("| outcome | " + " | ".join(order) + " |")
    click.echo("|---|" + "---|" * len(order))
    for target in model.card.targets:
        cells = []
        for scenario in order:
            p = next(x for x in predictions if x.target == target.name and x.scenario == scenario)
            cells.append(f"{p.probability:.0%} ({p.interval[0]:.0%}-{p.interval[1]:.0%})")
        click.echo(f"| {target.name} | " + " | ".join(cells) + " |")
    if report.new_baseline_egfr:
        cells = [
            f"{p.egfr_ml_min_1_73m2:.0f} ({p.interval_90[0]:.0f}-{p.interval_90[1]:.0f})"
            for p in report.new_baseline_egfr
        ]
        click.echo("| new-baseline eGFR, mL/min/1.73 m² | " + " | ".join(cells) + " |")
    else:
        click.echo(f"new-baseline eGFR not predicted: {report.new_baseline_missing}")
    click.echo("\nwhat drove each prediction (log-odds vs the average patient; + raises the risk):")
    base_rate = {t.name for t in model.card.targets if t.shipped_family == "base_rate"}
    for p in predictions:
        drivers = ", ".join(f"{c.feature.split('.', 1)[1]} {c.logit:+.2f}" for c in p.contributions[:4])
        if p.target in base_rate:
            drivers = "the cohort's rate (no input discriminated under nested cross-validation)"
        click.echo(f"  {p.target} / {p.scenario}: {drivers}")
    if imputed:
        click.echo("imputed (missing in the clinical input): " + "; ".join(imputed))
    for caution in cautions:
        click.echo(f"CAUTION: {caution}")
    click.echo("Research model (KiTS23, CC BY-NC-SA): not for clinical decisions.")


@outcome.command()
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="KiTS layout: kits23.json and case_*/segmentation.nii.gz.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--workers", type=int, default=os.cpu_count() or 1, show_default=True)
def evaluate(data_dir: Path, fmt: str, workers: int) -> None:
    """Score the shipped outcome models (no retraining) on DATA: AUROC, Brier, cases and events per target."""
    from twin_imaging.outcome.evaluate import evaluate_outcomes

    scores, excluded, new_baseline = evaluate_outcomes(data_dir, workers=workers)
    if fmt == "json":
        found = {name: score.to_json() for name, score in scores.items()}
        found["new_baseline_egfr"] = None if new_baseline is None else new_baseline.to_json()
        click.echo(json.dumps(found))
        return
    click.echo("| target | AUROC | Brier | n | events |")
    click.echo("|---|---|---|---|---|")
    for name, s in scores.items():
        area = "n/a" if s.auroc is None else f"{s.auroc:.3f}"
        click.echo(f"| {name} | {area} | {s.brier:.3f} | {s.n} | {s.events} |")
    if new_baseline is not None:
        click.echo(
            f"new-baseline eGFR: MAE {new_baseline.mae:.2f} mL/min/1.73 m² over {new_baseline.n} patients "
            f"(partial or radical nephrectomy, both eGFR values); within 10: {new_baseline.within_10:.0%}"
        )
    if excluded:
        click.echo("excluded: " + ", ".join(f"{n} ({why})" for why, n in excluded.items()))


def echo_scenarios(run) -> None:
    """The surgical scenarios of a renal mass, as a table (or why none were computed)."""
    if not run.computed:
        click.echo(f"surgical scenarios not computed: {run.reason}")
        return
    report = run.report
    order = report["scenarios"]
    click.echo("surgical scenarios (" + run.mask_source + " masks; research model, not for clinical decisions):")
    click.echo("| outcome | " + " | ".join(order) + " |")
    click.echo("|---|" + "---|" * len(order))
    for target in dict.fromkeys(p["target"] for p in report["predictions"]):
        cells = []
        for scenario in order:
            p = next(x for x in report["predictions"] if x["target"] == target and x["scenario"] == scenario)
            cells.append(f"{p['probability']:.0%} ({p['interval_90'][0]:.0%}-{p['interval_90'][1]:.0%})")
        click.echo(f"| {target} | " + " | ".join(cells) + " |")
    egfr = {e["scenario"]: e for e in report["new_baseline_egfr"]}
    if egfr:
        cells = [
            f"{egfr[s]['egfr_ml_min_1_73m2']:.0f} ({egfr[s]['interval_90'][0]:.0f}-{egfr[s]['interval_90'][1]:.0f})"
            for s in order
        ]
        click.echo("| new-baseline eGFR, mL/min/1.73 m² | " + " | ".join(cells) + " |")
    else:
        click.echo(f"new-baseline eGFR not predicted: {report['new_baseline_egfr_missing']}")
    missing = run.inputs.get("missing", [])
    if missing:
        click.echo("inputs not on the twin (imputed by the models): " + ", ".join(missing))
