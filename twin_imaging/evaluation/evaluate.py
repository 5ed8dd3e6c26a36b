"""Score a model package on a labelled dataset: per case and per structure Dice, NSD and HD95, on each image's own
grid (the prediction is brought back to the source grid, as a user receives it; the reference is never resampled
unless it lies on another grid).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from twin_imaging.datalist import Datalist, label_lookup
from twin_imaging.evaluation.metrics import StructureScore, score_label_maps, summarize_scores
from twin_imaging.inference.segment import Segmenter
from twin_imaging.io import read_image
from twin_imaging.models.card import EvaluationRecord, StructureMetrics
from twin_imaging.models.package import ModelPackage
from twin_imaging.transforms import resample_to_grid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    model_id: str
    dataset: str
    case_ids: tuple[str, ...]
    per_case: dict[str, dict[str, StructureScore]]
    summary: dict[str, dict]  # structure → {dice, nsd, hd95_mm, n_cases, ...}
    tolerance_mm: float

    def to_record(self, *, dataset: str, split: str, reference: str) -> EvaluationRecord:
        """The card's form of this result."""
        return evaluation_record(
            self.summary,
            dataset=dataset,
            split=split,
            reference=reference,
            tolerance_mm=self.tolerance_mm,
            n_cases=len(self.case_ids),
        )


def evaluation_record(
    summary: Mapping[str, Mapping], *, dataset: str, split: str, reference: str, tolerance_mm: float, n_cases: int
) -> EvaluationRecord:
    """An EvaluationRecord for a model card from a ``summarize_scores`` summary (metrics rounded to 4 digits)."""
    return EvaluationRecord(
        dataset=dataset,
        split=split,
        reference=reference,
        nsd_tolerance_mm=tolerance_mm,
        n_cases=n_cases,
        structures=tuple(
            StructureMetrics(
                structure=name,
                dice=_rounded(values.get("dice")),
                nsd=_rounded(values.get("nsd")),
                hd95_mm=_rounded(values.get("hd95_mm")),
                n_cases=int(values.get("n_cases", 0)),
            )
            for name, values in summary.items()
        ),
    )


def evaluate_package(
    package: ModelPackage,
    datalist: Datalist,
    *,
    folds: Sequence[int] | None = None,
    section: str = "training",
    label_mapping: Mapping[int, str] | None = None,
    tolerance_mm: float = 2.0,
    segmenter: Segmenter | None = None,
    on_case: Callable[[str, dict[str, StructureScore]], None] | None = None,
) -> EvaluationResult:
    """Segment every labelled case of ``datalist`` (optionally only ``folds``) and score it against its label map."""
    card = package.card
    structures = [s.name for s in sorted(card.structures, key=lambda s: s.label)]
    lookup = label_lookup(datalist.model_label_names(), structures, mapping=label_mapping)
    segmenter = segmenter or Segmenter(package)
    per_case: dict[str, dict[str, StructureScore]] = {}
    cases = [c for c in datalist.cases(section=section, folds=folds) if c.label is not None]
    if not cases:
        raise ValueError(f"no labelled cases in {datalist.name} ({section}, folds {folds})")
    for case in cases:
        image = read_image(case.image)
        reference = read_image(case.label)
        if reference.shape != image.shape or not np.allclose(reference.affine_ras, image.affine_ras, atol=1e-3):
            reference = resample_to_grid(reference, image.shape, image.affine_ras, order=0)
        reference_labels = lookup[np.asarray(reference.array, dtype=np.int64).clip(0, 255)]
        predicted = segmenter.segment(image).labels.array
        scores = score_label_maps(
            predicted, reference_labels, image.spacing_mm, label_names=card.label_names(), tolerance_mm=tolerance_mm
        )
        per_case[case.case_id] = scores
        log.info("evaluated case %s", case.case_id)
        if on_case is not None:
            on_case(case.case_id, scores)
    return EvaluationResult(
        model_id=card.model_id,
        dataset=datalist.name,
        case_ids=tuple(per_case),
        per_case=per_case,
        summary=summarize_scores(list(per_case.values())),
        tolerance_mm=tolerance_mm,
    )


def format_summary_table(summary: Mapping[str, Mapping], *, tolerance_mm: float = 2.0) -> str:
    """A Markdown table: structure | cases | Dice | NSD | HD95."""
    lines = [
        f"| structure | cases | Dice | NSD ({tolerance_mm:g} mm) | HD95 (mm) |",
        "|---|---|---|---|---|",
    ]
    for name, values in summary.items():
        lines.append(
            f"| {name} | {values.get('n_cases', 0)} | {_fmt(values.get('dice'))} | {_fmt(values.get('nsd'))} "
            f"| {_fmt(values.get('hd95_mm'), 1)} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
