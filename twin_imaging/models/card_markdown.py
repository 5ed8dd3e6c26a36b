"""The human-readable model card, rendered from the machine-readable one so the two cannot disagree."""

from __future__ import annotations

import os
from pathlib import Path

from twin_imaging.models.card import SEPARATE_CROPS_APART_MM, ModelCard, TrainingRecord


def render_markdown_card(card: ModelCard) -> str:
    t = card.training
    maker, again = ("compose_cascade", "compose it again") if card.refinement else ("export", "re-export")
    lines = [
        f"# {card.title}",
        "",
        f"`{card.model_id}` version {card.version} · {card.modality} {card.task} · created {card.created:%Y-%m-%d}",
        "",
        f"> Generated from the package's `card.json` by `training/{maker}.py`; to change the words, edit "
        f"`training/cards/{card.model_id}.yaml` and {again}, never this file.",
        "",
        card.description,
        "",
        "## Intended use",
        "",
        card.intended_use,
        "",
    ]
    if card.out_of_scope:
        lines += ["Out of scope:", "", *[f"- {item}" for item in card.out_of_scope], ""]
    lines += [
        "## Structures",
        "",
        "| label | structure | SNOMED CT | colour | post-processing |",
        "|---|---|---|---|---|",
    ]
    for s in card.structures:
        code = f"{s.type.value} {s.type.meaning}" + (f" ({s.type_modifier.meaning})" if s.type_modifier else "")
        post = ", ".join(
            (["largest component"] if s.keep_largest_component else [])
            + ([f"only where it touches {' or '.join(s.attached_to)}"] if s.attached_to else [])
        )
        lines.append(f"| {s.label} | {s.name} | {code} | rgb{tuple(s.color_rgb)} | {post} |")
    p, i = card.preprocessing, card.inference
    lines += [
        "",
        "## Input and preprocessing",
        "",
        f"- Reoriented to {p.orientation}, resampled to {' × '.join(f'{v:g}' for v in p.spacing_mm)} mm (trilinear).",
        f"- Intensity: HU window [{p.intensity.window_min_hu:g}, {p.intensity.window_max_hu:g}] → "
        f"[{p.intensity.output_min:g}, {p.intensity.output_max:g}]" + (", clipped." if p.intensity.clip else "."),
        f"- Sliding window of {' × '.join(map(str, i.patch_size_voxels))} voxels, overlap {i.overlap:g}, Gaussian "
        f"blending (σ = {i.sigma_scale:g} × patch); class scores resampled (trilinear) to the input's own grid and "
        "the argmax taken there.",
        "",
        *_refinement(card),
        "## Evaluation",
        "",
    ]
    if not card.evaluations:
        lines += ["No evaluation is recorded for this package.", ""]
    for e in card.evaluations:
        lines += [
            f"**{e.dataset}** — {e.split}. {e.n_cases} case(s). Reference labels: {e.reference}.",
            "",
            f"| structure | cases | Dice | NSD ({e.nsd_tolerance_mm:g} mm) | HD95 (mm) |",
            "|---|---|---|---|---|",
        ]
        for m in e.structures:
            lines.append(f"| {m.structure} | {m.n_cases} | {_f(m.dice)} | {_f(m.nsd)} | {_f(m.hd95_mm, 1)} |")
        lines.append("")
        lines += _published_comparison(card, e)
    lines += ["## Training", ""]
    for d in t.data:
        lines.append(f"- **{d.name}** ({d.n_cases} case(s); licence {d.licence}): {d.description}. Labels: {d.labels}.")
    lines += [
        *_training_lines(t),
        f"- ONNX: `{card.onnx.file}`, {card.onnx.size_bytes / 1e6:.1f} MB, opset {card.onnx.opset}, sha256 "
        f"`{card.onnx.sha256}`" + _parity(card),
        "",
    ]
    if card.limitations:
        lines += ["## Limitations", "", *[f"- {item}" for item in card.limitations], ""]
    if card.ethical_considerations:
        lines += ["## Ethical considerations", "", *[f"- {item}" for item in card.ethical_considerations], ""]
    return "\n".join(lines)


def _training_lines(t: TrainingRecord) -> list[str]:
    """A training record as list items: recipe and network, time and hardware, other runs."""
    return [
        f"- Recipe: `{t.recipe}`; network {t.network}, {t.parameters:,} parameters; "
        f"{t.max_steps} steps, seed {t.seed}.",
        f"- Trained in {t.duration_s / 60:.1f} min on {t.hardware}"
        + (f", code {t.code_version}." if t.code_version else "."),
        *[f"- {run}" for run in t.extra_runs],
    ]


def _refinement(card: ModelCard) -> list[str]:
    stage = card.refinement
    if stage is None:
        return []
    p, i = stage.preprocessing, stage.inference
    return [
        "## Refinement stage (a cascade)",
        "",
        f"- A second network runs on the box around {', '.join(stage.around)} (plus {stage.margin_mm:g} mm on every "
        f"side; a box each where they lie over {SEPARATE_CROPS_APART_MM:g} mm apart) as the first network found them, "
        "resampled to "
        f"{' × '.join(f'{v:g}' for v in p.spacing_mm)} mm, "
        f"HU window [{p.intensity.window_min_hu:g}, {p.intensity.window_max_hu:g}], sliding window of "
        f"{' × '.join(map(str, i.patch_size_voxels))} voxels. Inside that box its labels win: a voxel it gives "
        f"{', '.join(stage.structures)} is that structure, whatever the first network said, and one the first gave "
        "them and it calls background becomes background; outside the box, the first network's labels stand.",
        "- Its training:",
        *(f"  {line}" for line in _training_lines(stage.training)),
        f"- ONNX: `{stage.onnx.file}`, {stage.onnx.size_bytes / 1e6:.1f} MB, opset {stage.onnx.opset}, sha256 "
        f"`{stage.onnx.sha256}`.",
        "",
    ]


def write_markdown_card(card: ModelCard, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown_card(card), encoding="utf-8")
    return path


def _published_comparison(card: ModelCard, evaluation) -> list[str]:
    """Dice of this model beside published methods on the same split, over the structures they all report."""
    published = [p for p in card.published_comparison if p.split == evaluation.split]
    if not published:
        return []
    ours = {m.structure: m.dice for m in evaluation.structures}
    names = [n for n in published[0].dice if all(n in p.dice for p in published) and ours.get(n) is not None]
    if not names:
        return []
    header = ["structure", f"this model ({card.model_id})", *[p.method for p in published]]
    lines = [
        "Compared with published results on the same split (their numbers as published, not re-run here; "
        + "; ".join(f"{p.method}: {p.source}" for p in published)
        + "):",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name in names:
        lines.append(f"| {name} | {_f(ours[name])} | " + " | ".join(_f(p.dice[name]) for p in published) + " |")
    mean = sum(ours[n] for n in names) / len(names)
    means = [sum(p.dice[n] for n in names) / len(names) for p in published]
    lines += [f"| **mean of {len(names)}** | **{mean:.3f}** | " + " | ".join(f"{m:.3f}" for m in means) + " |", ""]
    return lines


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _parity(card: ModelCard) -> str:
    onnx = card.onnx
    if onnx.parity_max_abs_diff is None:
        return "."
    if onnx.parity_quantity == "logits":
        return f"; max |torch − ONNX| at export {onnx.parity_max_abs_diff:.1e}."
    logits = f" (logits {onnx.parity_max_logit_diff:.1e})" if onnx.parity_max_logit_diff is not None else ""
    return f"; max |torch − ONNX| of the class probabilities at export {onnx.parity_max_abs_diff:.1e}{logits}."
