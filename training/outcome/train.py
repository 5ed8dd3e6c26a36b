"""Train, cross-validate and ship the nephrectomy outcome models (KiTS23).

    python -m training.outcome.train --data ../shared/data/kits23 --out models/nephrectomy_outcomes

Per target, every family (simplest first: base rate, a plain clinical logistic regression, all clinical inputs,
clinical + mask features) is scored by nested cross-validation (training/outcome/nested_cv.py: 5 x repeated
stratified 5-fold outer, the L2 strength chosen by inner 5-fold CV on the outer training part only): AUROC with a
bootstrap 95 % CI, Brier score of out-of-fold probabilities calibrated by Platt scaling, a calibration plot. Each
target ships the simplest family that nested CV does not find worse than the best one (paired bootstrap CI of the
AUROC difference reaching 0), refitted on all cases with its L2 chosen by CV, calibrated, and refitted on bootstrap
resamples for a prediction interval. The new-baseline eGFR model (training/outcome/new_baseline_egfr.py) is fitted
and nested-cross-validated beside them. Everything ships as one ONNX graph (classifiers) and the card (the eGFR
model's few weights). Fixed seeds: the same command on the same data reproduces the card's numbers.

The image network family (a MONAI 3D network on the cropped masks; training/outcome/image_network.py) is shown
from its own cross-validation and ships only where it beats the logistic families (it does not).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from training.outcome.evaluation import save_calibration_plot
from training.outcome.linear import LinearModel, fit_logistic
from training.outcome.nested_cv import NestedResult, best_l2, nested_cross_validate, simplest_not_worse
from training.outcome.new_baseline_egfr import fit_new_baseline
from training.outcome.onnx_export import OPSET, export_outcome_onnx
from training.paths import REPO_ROOT, code_version
from twin_imaging.files import copy_atomic, file_sha256, write_bytes_atomic
from twin_imaging.models.card import OnnxFile
from twin_imaging.models.package import CARD_FILE
from twin_imaging.outcome.card import FamilyMetrics, OutcomeCard, OutcomeTarget
from twin_imaging.outcome.card_markdown import render_outcome_card
from twin_imaging.outcome.clinical import CLINICAL_VECTOR_NAMES
from twin_imaging.outcome.features import FAMILY_FEATURES, MODEL_FEATURES, SCENARIO_SIGNS, feature_matrix
from twin_imaging.outcome.imputation import fit_imputation
from twin_imaging.outcome.kits import load_kits_dataset
from twin_imaging.outcome.targets import TARGETS

log = logging.getLogger(__name__)

MODEL_ID = "nephrectomy_outcomes"
N_BOOTSTRAP = 50
SEED = 2026


def family_fit(family: str, target: str):
    """The fit function of a family: the same bounded logistic regression, on the family's features only, with the
    L2 strength given (chosen by the inner folds of the nested cross-validation)."""
    active = set(FAMILY_FEATURES[family])
    signs = SCENARIO_SIGNS if target == "egfr_decline" else None

    def fit(x: np.ndarray, y: np.ndarray, l2: float) -> LinearModel:
        return fit_logistic(x, y, list(MODEL_FEATURES), l2=l2, signs=signs, active=active)

    return fit


def train(
    data_dir: Path,
    out_dir: Path,
    *,
    cache_dir: Path,
    n_repeats: int,
    workers: int,
    docs_dir: Path = REPO_ROOT / "model_cards",
    evidence_dir: Path = REPO_ROOT / "training" / "evaluations",
    image_network_cv: Path | None = None,
) -> OutcomeCard:
    """Cross-validate the logistic families, ship the best per target. ``image_network_cv``: the cross-validation
    of the 3D image network family (``python -m training.outcome.image_network``), shown side by side; it ships
    only where it beats both logistic families, which needs its ONNX export (not written yet): it is refused then."""
    image_results = json.loads(image_network_cv.read_text())["cv"] if image_network_cv else {}
    dataset = load_kits_dataset(data_dir, workers=workers, cache_dir=cache_dir)
    usable = [c for c in dataset.cases if c.clinical is not None and c.scenario is not None and c.features is not None]
    excluded = {f"{case}: {stage}: {message}" for case, stage, message in dataset.errors()}
    log.info("%d of %d cases usable; %d parts refused", len(usable), len(dataset), len(excluded))
    imputation = fit_imputation([c.clinical for c in usable])
    x = feature_matrix(usable, imputation=imputation)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-12] = 1.0

    targets, models, results_json = [], [], {}
    plots_dir = docs_dir
    for name, target in TARGETS.items():
        y_all = np.array([np.nan if c.targets[name] is None else c.targets[name] for c in usable], dtype=float)
        rows = ~np.isnan(y_all)
        xt, yt = x[rows], y_all[rows].astype(int)
        fits = {family: family_fit(family, name) for family in FAMILY_FEATURES}
        nested, selection = nested_cross_validate(xt, yt, fits, n_repeats=n_repeats, seed=SEED)
        results = list(nested.values())
        shipped, reason = simplest_not_worse(results, yt, seed=SEED)
        plot = save_calibration_plot(results, yt, plots_dir / f"{MODEL_ID}_{name}_calibration.png", title=name)
        l2, _ = best_l2(xt, yt, fits[shipped.family], seed=SEED)
        signs = SCENARIO_SIGNS if name == "egfr_decline" else None
        active = set(FAMILY_FEATURES[shipped.family])

        def refit(indices: np.ndarray, *, signs=signs, active=active, xt=xt, yt=yt, l2=l2) -> LinearModel:
            return fit_logistic(
                xt[indices],
                yt[indices],
                list(MODEL_FEATURES),
                l2=l2,
                signs=signs,
                active=active,
                mean=mean,
                scale=scale,
            )

        rng = np.random.default_rng(SEED)
        members = [refit(np.arange(len(yt)))]
        while len(members) < N_BOOTSTRAP + 1:
            sample = rng.integers(0, len(yt), len(yt))
            if yt[sample].min() != yt[sample].max():
                members.append(refit(sample))
        models.append([shipped.calibration.apply_to(m) for m in members])
        notes = [
            f"shipped: {reason}; its L2 strength ({l2:g}) chosen by 5-fold CV on all cases",
            f"choosing the family in the inner folds as well would have scored AUROC {selection.auroc_mean:.3f} "
            f"(inner choices: {selection.choices})",
        ]
        if name == "egfr_decline":
            notes.append("weights of the scenario features are sign-constrained: radical never predicts less risk")
        families = [_family_metrics(r) for r in results]
        families.append(_family_metrics(selection, family="inner_cv_selection"))
        best = max(results, key=lambda r: r.auroc_mean)
        if name in image_results:
            image = FamilyMetrics(**{k: v for k, v in image_results[name].items() if k in FamilyMetrics.model_fields})
            if image.auroc > best.auroc_mean:
                raise RuntimeError(f"the image network wins {name}: export it to ONNX before shipping this card")
            families.append(image)
            notes.append(
                f"3D image network: AUROC {image.auroc:.3f} ({image.cv}; no choice tuned on the folds), below the "
                f"best logistic family ({best.auroc_mean:.3f}); not shipped"
            )
        targets.append(
            OutcomeTarget(
                name=name,
                description=target.description,
                definition=target.definition,
                shipped_family=shipped.family,
                families=tuple(families),
                monotone_in_scenario=name == "egfr_decline",
                calibration_plot=plot.name,
                notes=tuple(notes),
            )
        )
        results_json[name] = {"families": [r.summary() for r in results], "selection": selection.summary()}
        log.info("%s: %s; ships %s", name, {r.family: round(r.auroc_mean, 3) for r in results}, shipped.family)

    new_baseline, new_baseline_details = fit_new_baseline(usable, imputation)
    results_json["new_baseline_egfr"] = {
        "evaluation": [m.model_dump() for m in new_baseline.evaluation],
        **new_baseline_details,
    }
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = export_outcome_onnx(models, Path(scratch) / f"{MODEL_ID}.onnx")
        out_dir.mkdir(parents=True, exist_ok=True)
        copy_atomic(onnx_path, out_dir / onnx_path.name)
    card = OutcomeCard(
        model_id=MODEL_ID,
        version="0.2.0",
        title="Post-operative outcomes and new-baseline eGFR after nephrectomy (KiTS23)",
        description=(
            "Calibrated probabilities of four post-operative outcomes for a patient with a renal tumour, under a "
            "planned partial or radical nephrectomy, from pre-operative clinical variables and features of the "
            "kidney and tumour masks (including a virtual resection), and the new-baseline eGFR (mL/min/1.73 m²) "
            "from the split renal function of the masks. Logistic models with bootstrap intervals, each the simplest "
            "family that nested cross-validation does not find worse; a constrained linear eGFR model."
        ),
        intended_use=(
            "Research only: exploring surgical scenarios on the patient twin. Not a medical device; not for "
            "clinical decisions. Trained on one institution's cohort (KiTS23); not validated elsewhere."
        ),
        limitations=(
            "Cross-validated on the same 400-case public cohort it was trained on; no external validation.",
            "The 3D image network (MONAI, on the cropped kidney masks, fused with the clinical vector; "
            "training/outcome/image_network.py) was cross-validated the same way (5 x 5-fold, folds stratified on "
            "any_complication x prolonged_stay) and beat neither logistic family for any target: it is not shipped."
            if image_results
            else "The image network family (MONAI 3D network on the masks) is not trained yet in this release.",
            "The masks add little: under nested cross-validation the clinical + mask features family is clearly "
            "better than a simpler family for no target, so none ships it; the aims (egfr_decline AUROC >= 0.85, "
            "any_complication >= 0.70) are not met.",
            "A target shipped as 'base rate' showed no discrimination under nested CV: every patient gets the "
            "cohort's rate, and the prediction says nothing about this patient beyond it.",
            "New-baseline eGFR: KiTS's first post-operative eGFR is taken as the new baseline (median about 4 months "
            "after surgery); KiTS caps eGFR at 90, so high values are compressed. The learned model's edge over the "
            "published split-renal-function formula and a clinical linear regression is small (see the table); "
            "parenchymal volume stands in for function (no renal scan).",
            "Scenario effects are associations learned from which operation patients received, not causal effects.",
        ),
        data="KiTS23 (neheller/kits23 v0.1.4): 400 of 489 public cases, expert masks and clinical records",
        data_licence="CC BY-NC-SA 4.0 (non-commercial, share-alike)",
        n_training_cases=len(usable),
        feature_names=tuple(MODEL_FEATURES),
        imputation={k: v for k, v in imputation.items() if isinstance(v, bool | int | float | str)},
        targets=tuple(targets),
        n_bootstrap=N_BOOTSTRAP,
        new_baseline_egfr=new_baseline,
        onnx=OnnxFile(
            file=f"{MODEL_ID}.onnx",
            sha256=file_sha256(out_dir / f"{MODEL_ID}.onnx"),
            size_bytes=(out_dir / f"{MODEL_ID}.onnx").stat().st_size,
            opset=OPSET,
        ),
        created=datetime.now(UTC).replace(microsecond=0),
        code_version=code_version(),
    )
    write_bytes_atomic(out_dir / CARD_FILE, (card.model_dump_json(indent=2) + "\n").encode())
    evidence = {"excluded": sorted(excluded), "cv": results_json, "clinical_features": list(CLINICAL_VECTOR_NAMES)}
    write_bytes_atomic(evidence_dir / f"{MODEL_ID}_cv.json", (json.dumps(evidence, indent=2) + "\n").encode())
    write_bytes_atomic(docs_dir / f"{MODEL_ID}.md", render_outcome_card(card).encode())
    return card


def _family_metrics(result: NestedResult, *, family: str | None = None) -> FamilyMetrics:
    summary = result.summary()
    return FamilyMetrics(
        family=family or result.family,
        n=result.n,
        events=result.events,
        auroc=summary["auroc"],
        auroc_ci95=tuple(summary["auroc_ci95"]),
        auroc_per_repeat=tuple(summary["auroc_per_repeat"]),
        brier=summary["brier"],
        cv=result.cv,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="KiTS layout: kits23.json and case_*/segmentation.nii.gz"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models" / MODEL_ID)
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "runs" / "kits_features", help="feature cache")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--image-network-cv",
        type=Path,
        default=REPO_ROOT / "training" / "evaluations" / f"{MODEL_ID}_image_network_cv.json",
        help="cross-validation of the image network family, to show beside the others (skipped if absent)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    card = train(
        args.data,
        args.out,
        cache_dir=args.cache,
        n_repeats=args.repeats,
        workers=args.workers,
        image_network_cv=args.image_network_cv if args.image_network_cv.is_file() else None,
    )
    for target in card.targets:
        scores = ", ".join(
            f"{f.family} {f.auroc:.3f} [{f.auroc_ci95[0]:.2f}-{f.auroc_ci95[1]:.2f}]" for f in target.families
        )
        first = target.families[0]
        print(f"{target.name} ({first.events}/{first.n} events): {scores}; ships {target.shipped_family}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
