"""Train, cross-validate and ship the nephrectomy outcome models (KiTS23).

    python -m training.outcome.train --data ../shared/data/kits23 --out models/nephrectomy_outcomes

Per target, each model family is scored by repeated stratified 5-fold cross-validation (AUROC with a bootstrap
95 % CI, Brier score of out-of-fold probabilities calibrated by Platt scaling fitted on those out-of-fold
predictions, a calibration plot); the best family per target is refitted on all cases, calibrated, and refitted on
bootstrap resamples for a prediction interval; everything ships as one ONNX graph with its card. Fixed seeds: the
same command on the same data reproduces the card's numbers.

Families: ``clinical_only`` (pre-operative clinical variables and the planned operation), ``clinical_mask`` (plus
features of the kidney/tumour masks and the virtual resection under the planned operation). The image network
family (a MONAI 3D network on the cropped masks) is not trained yet: the card says so.
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

from training.outcome.evaluation import CrossValidation, cross_validate, save_calibration_plot
from training.outcome.linear import LinearModel, fit_logistic
from training.outcome.onnx_export import OPSET, export_outcome_onnx
from training.paths import REPO_ROOT, code_version
from twin_imaging.files import copy_atomic, write_bytes_atomic
from twin_imaging.models.card import OnnxFile
from twin_imaging.models.package import CARD_FILE, file_sha256
from twin_imaging.outcome.card import FamilyMetrics, OutcomeCard, OutcomeTarget
from twin_imaging.outcome.card_markdown import render_outcome_card
from twin_imaging.outcome.clinical import CLINICAL_VECTOR_NAMES
from twin_imaging.outcome.features import FAMILY_FEATURES, MODEL_FEATURES, SCENARIO_SIGNS, feature_matrix
from twin_imaging.outcome.imputation import fit_imputation
from twin_imaging.outcome.kits import load_kits_dataset
from twin_imaging.outcome.targets import TARGETS

log = logging.getLogger(__name__)

MODEL_ID = "nephrectomy_outcomes"
L2 = 10.0
N_BOOTSTRAP = 50
SEED = 2026


def family_fit(family: str, target: str):
    """The fit function of a family: the same bounded logistic regression, on the family's features only."""
    active = set(FAMILY_FEATURES[family])
    signs = SCENARIO_SIGNS if target == "egfr_decline" else None

    def fit(x: np.ndarray, y: np.ndarray) -> LinearModel:
        return fit_logistic(x, y, list(MODEL_FEATURES), l2=L2, signs=signs, active=active)

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
        results: list[CrossValidation] = [
            cross_validate(xt, yt, family_fit(family, name), family=family, target=name, n_repeats=n_repeats, seed=SEED)
            for family in FAMILY_FEATURES
        ]
        best = max(results, key=lambda r: r.auroc_mean)
        plot = save_calibration_plot(results, yt, plots_dir / f"{MODEL_ID}_{name}_calibration.png", title=name)
        fit = family_fit(best.family, name)
        signs = SCENARIO_SIGNS if name == "egfr_decline" else None
        active = set(FAMILY_FEATURES[best.family])

        def refit(indices: np.ndarray, *, signs=signs, active=active, xt=xt, yt=yt) -> LinearModel:
            return fit_logistic(
                xt[indices],
                yt[indices],
                list(MODEL_FEATURES),
                l2=L2,
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
        models.append([best.calibration.apply_to(m) for m in members])
        del fit
        notes = []
        if name == "egfr_decline":
            notes.append("weights of the scenario features are sign-constrained: radical never predicts less risk")
        families = [_family_metrics(r) for r in results]
        if name in image_results:
            image = FamilyMetrics(**{k: v for k, v in image_results[name].items() if k in FamilyMetrics.model_fields})
            if image.auroc > best.auroc_mean:
                raise RuntimeError(f"the image network wins {name}: export it to ONNX before shipping this card")
            families.append(image)
            notes.append(
                f"3D image network: AUROC {image.auroc:.3f} ({image.cv}), below the shipped "
                f"{best.family.replace('_', ' ')} family ({best.auroc_mean:.3f}); not shipped"
            )
        targets.append(
            OutcomeTarget(
                name=name,
                description=target.description,
                definition=target.definition,
                shipped_family=best.family,
                families=tuple(families),
                monotone_in_scenario=name == "egfr_decline",
                calibration_plot=plot.name,
                notes=tuple(notes),
            )
        )
        results_json[name] = [r.summary() for r in results]
        log.info("%s: %s", name, {r.family: round(r.auroc_mean, 3) for r in results})

    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = export_outcome_onnx(models, Path(scratch) / f"{MODEL_ID}.onnx")
        out_dir.mkdir(parents=True, exist_ok=True)
        copy_atomic(onnx_path, out_dir / onnx_path.name)
    card = OutcomeCard(
        model_id=MODEL_ID,
        version="0.1.0",
        title="Post-operative outcomes after nephrectomy (KiTS23), first release",
        description=(
            "Calibrated probabilities of four post-operative outcomes for a patient with a renal tumour, under a "
            "planned partial or radical nephrectomy, from pre-operative clinical variables and features of the "
            "kidney and tumour masks (including a virtual resection). Logistic models with bootstrap intervals."
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
            "The masks add little: the clinical + mask features family beats clinical only clearly for no target "
            "(see the table); the aims (egfr_decline AUROC >= 0.85, any_complication >= 0.70) are not met.",
            "Scenario effects are associations learned from which operation patients received, not causal effects.",
        ),
        data="KiTS23 (neheller/kits23 v0.1.4): 400 of 489 public cases, expert masks and clinical records",
        data_licence="CC BY-NC-SA 4.0 (non-commercial, share-alike)",
        n_training_cases=len(usable),
        feature_names=tuple(MODEL_FEATURES),
        imputation={k: v for k, v in imputation.items() if isinstance(v, bool | int | float | str)},
        targets=tuple(targets),
        n_bootstrap=N_BOOTSTRAP,
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


def _family_metrics(result: CrossValidation) -> FamilyMetrics:
    summary = result.summary()
    return FamilyMetrics(
        family=result.family,
        n=result.n,
        events=result.events,
        auroc=summary["auroc"],
        auroc_ci95=tuple(summary["auroc_ci95"]),
        auroc_per_repeat=tuple(summary["auroc_per_repeat"]),
        brier=summary["brier"],
        cv=summary["cv"],
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
