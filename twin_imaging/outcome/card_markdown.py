"""The outcome model's human-readable card, rendered from its machine-readable card."""

from __future__ import annotations

from twin_imaging.outcome.card import OutcomeCard

FAMILY_NAMES = {
    "clinical_only": "clinical only",
    "clinical_mask": "clinical + mask features",
    "image_network": "3D image network + clinical",
}


def render_outcome_card(card: OutcomeCard) -> str:
    lines = [
        f"# {card.title}",
        "",
        f"`{card.model_id}` version {card.version} · created {card.created:%Y-%m-%d} · code {card.code_version}",
        "",
        "> Generated from the package's `card.json` by `training/outcome/train.py`; never edit this file.",
        "",
        card.description,
        "",
        "## Intended use",
        "",
        card.intended_use,
        "",
        "## Data",
        "",
        f"{card.data}; {card.n_training_cases} cases usable. Licence: **{card.data_licence}**.",
        "",
        "Inputs are only what is known before the operation (clinical variables, the masks, the planned operation);",
        "never pathology, intra- or post-operative fields.",
        "",
        "## Targets and cross-validated metrics (all families side by side)",
        "",
        "Repeated stratified cross-validation on the training cohort; AUROC mean over repeats with a bootstrap 95 % "
        "CI over patients; Brier score of the out-of-fold probabilities after Platt calibration fitted on those "
        "out-of-fold predictions. Reproduce: `python -m training.outcome.train --data ../shared/data/kits23`.",
        "",
        "| target | definition | family | n | events | AUROC (95 % CI) | Brier | shipped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target in card.targets:
        for family in target.families:
            shipped = "yes" if family.family == target.shipped_family else ""
            lines.append(
                f"| {target.name} | {target.definition} | {FAMILY_NAMES.get(family.family, family.family)} | "
                f"{family.n} | {family.events} | {family.auroc:.3f} ({family.auroc_ci95[0]:.3f}-"
                f"{family.auroc_ci95[1]:.3f}) | {family.brier:.3f} | {shipped} |"
            )
        if not any(f.family == "image_network" for f in target.families):
            lines.append(f"| {target.name} | | {FAMILY_NAMES['image_network']} | | | not trained yet | | |")
    notes = [f"- {t.name}: {note}" for t in card.targets for note in t.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", "Calibration plots: " + ", ".join(f"`{t.calibration_plot}`" for t in card.targets), ""]
    lines += [
        "## Predictions",
        "",
        f"Each target's probability comes with a {card.interval_level:.0%} interval: the spread of "
        f"{card.n_bootstrap} bootstrap refits of the shipped family. Per-feature contributions (log-odds against the "
        "average training patient) say what drove it. Scenario-monotone targets: "
        + (", ".join(t.name for t in card.targets if t.monotone_in_scenario) or "none")
        + " (radical nephrectomy never predicts a lower risk than partial).",
        "",
    ]
    if card.limitations:
        lines += ["## Limitations", "", *[f"- {item}" for item in card.limitations], ""]
    return "\n".join(lines)
