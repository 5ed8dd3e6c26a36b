"""The outcome model's human-readable card, rendered from its machine-readable card."""

from __future__ import annotations

from twin_imaging.outcome.card import OutcomeCard

FAMILY_NAMES = {
    "base_rate": "base rate (no input)",
    "clinical_plain": "plain clinical logistic regression",
    "clinical_only": "clinical only",
    "clinical_mask": "clinical + mask features",
    "image_network": "3D image network + clinical",
    "inner_cv_selection": "(family chosen in the inner folds)",
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
        "Nested cross-validation on the training cohort (in-distribution; see each row's validation): 5 x repeated "
        "stratified 5-fold outer, every choice (L2 strength; for the selection row also the family) made by inner "
        "5-fold CV on the outer training part. Families are listed simplest first; each target ships the simplest "
        "family not found worse than the best (paired bootstrap CI of the AUROC difference reaching 0). AUROC mean "
        "over repeats with a bootstrap 95 % CI over patients; Brier score of the out-of-fold probabilities after "
        "Platt calibration fitted on those out-of-fold predictions. Reproduce: "
        "`python -m training.outcome.train --data ../shared/data/kits23`.",
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
    if card.new_baseline_egfr is not None:
        lines += _new_baseline_section(card)
    if card.limitations:
        lines += ["## Limitations", "", *[f"- {item}" for item in card.limitations], ""]
    return "\n".join(lines)


EGFR_METHOD_NAMES = {
    "learned_split_renal_function": "this model (split renal function, compensation learned on KiTS)",
    "published_split_renal_function": "published split-renal-function formula, same masks (no fitting)",
    "no_change": "no change (new baseline = pre-operative eGFR)",
    "clinical_linear": "linear regression on clinical fields and the procedure",
}


def _new_baseline_section(card: OutcomeCard) -> list[str]:
    model = card.new_baseline_egfr
    low, high = model.residual_interval_90
    lines = [
        "## New-baseline eGFR per scenario",
        "",
        model.definition,
        "",
        "Nested cross-validation on KiTS23 (in-distribution: the cohort it was fitted on; no external validation). "
        "MAE in mL/min/1.73 m² with a bootstrap 95 % CI over patients; within 10: share of patients predicted within "
        "10. Reproduce: `python -m training.outcome.new_baseline_egfr --data ../shared/data/kits23`.",
        "",
        "| method | MAE (95 % CI) | within 10 | n | 90 % interval coverage | validation |",
        "|---|---|---|---|---|---|",
    ]
    for m in model.evaluation:
        coverage = "" if m.interval_coverage is None else f"{m.interval_coverage:.0%}"
        lines.append(
            f"| {EGFR_METHOD_NAMES.get(m.method, m.method)} | {m.mae:.2f} ({m.mae_ci95[0]:.2f}-{m.mae_ci95[1]:.2f}) "
            f"| {m.within_10:.0%} | {m.n} | {coverage} | {m.cv} |"
        )
    weights = ", ".join(f"{t} {c:+.4g}" for t, c in zip(model.terms, model.coefficients, strict=True))
    lines += [
        "",
        f"Shipped terms: {model.selection}. Weights: {weights}. The 90 % interval is the prediction "
        f"{low:+.1f} to {high:+.1f} (5th and 95th percentiles of the cross-validated residuals). A radical "
        "nephrectomy never predicts a higher new baseline than a partial one (the scenario weights are bounded; "
        "see twin_imaging/outcome/new_baseline_egfr.py). A measured pre-operative eGFR is required: it is never "
        "imputed for this prediction.",
        "",
        *[f"- {note}" for note in model.notes],
        "",
    ]
    return lines
