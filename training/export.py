"""Checkpoint → ONNX (dynamic batch and spatial axes) → parity check against torch → model package with its card.

    python -m training.export runs/abdomen_ct_organs/.../best.ckpt --out models/abdomen_ct_organs \
        --parity-image ../shared/data/totalsegmentator/example_ct.nii.gz \
        --evaluate training/datalists/abdomen_ct_organs.json --eval-folds 1 --eval-split "held out: ..."

The parity check fails the export (non-zero exit, no package written) when max |torch − ONNX| exceeds the
tolerance on a random input or on a patch of a real image. The human-readable card in ``model_cards/`` is
rendered from the same card data.
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
import torch

from training.data import preprocessing_spec
from training.module import SegmentationModule, read_card_words
from training.networks import divisible_by
from training.paths import REPO_ROOT, code_version
from twin_imaging.datalist import read_datalist
from twin_imaging.evaluation.evaluate import evaluate_package, evaluation_record, format_summary_table
from twin_imaging.inference.sessions import create_session, run_session
from twin_imaging.io import read_image
from twin_imaging.models.card import (
    DatasetReference,
    EvaluationRecord,
    InferenceSpec,
    ModelCard,
    OnnxFile,
    PublishedResult,
    TrainingRecord,
)
from twin_imaging.models.card_markdown import write_markdown_card
from twin_imaging.models.package import ModelPackage, write_model_package
from twin_imaging.models.structures import BUILTIN_STRUCTURES, read_structure_table, structure_specs
from twin_imaging.transforms import preprocess_image

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-3


class ParityError(RuntimeError):
    """ONNX and torch disagree beyond the tolerance."""


def export_onnx(module: SegmentationModule, path: Path) -> None:
    """The network as ONNX with dynamic batch and spatial axes (legacy exporter: fast, same outputs here)."""
    network = module.net.eval().cpu()
    example = torch.zeros((1, 1, *module.hparams.patch_size), dtype=torch.float32)
    dynamic = {0: "batch", 2: "x", 3: "y", 4: "z"}
    with torch.no_grad():
        torch.onnx.export(
            network,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": dynamic, "logits": dynamic},
            opset_version=OPSET,
            dynamo=False,
        )


def parity_inputs(module: SegmentationModule, real_image: str | None, *, seed: int = 0) -> dict[str, np.ndarray]:
    """A random batch of two patches, a patch of another size, and (if given) the centre patch of a real image."""
    hp = module.hparams
    rng = np.random.default_rng(seed)
    factor = divisible_by(hp.network, hp.network_kwargs)
    inputs = {
        "random batch": rng.random((2, 1, *hp.patch_size), dtype=np.float32),
        "random other size": rng.random((1, 1, *(p + factor for p in hp.patch_size)), dtype=np.float32),
    }
    if real_image:
        prepared = preprocess_image(read_image(real_image), preprocessing_spec(hp.spacing_mm, hp.window_hu))
        array = prepared.array
        patch = np.zeros((1, *hp.patch_size), dtype=np.float32)
        starts = [max(0, (n - p) // 2) for n, p in zip(array.shape[1:], hp.patch_size, strict=True)]
        crop = array[:, starts[0] : starts[0] + hp.patch_size[0], starts[1] : starts[1] + hp.patch_size[1]]
        crop = crop[..., starts[2] : starts[2] + hp.patch_size[2]]
        patch[:, : crop.shape[1], : crop.shape[2], : crop.shape[3]] = crop
        inputs[f"real patch of {Path(real_image).name}"] = patch[None]
    return inputs


def check_parity(
    module: SegmentationModule, onnx_path: Path, inputs: dict[str, np.ndarray], tolerance: float
) -> tuple[float, float]:
    """Max |torch − ONNX| of the class probabilities (softmax over the channels: what decides the labels) over
    ``inputs``, and of the logits for the record; raises ParityError where the probabilities differ by more than
    ``tolerance``. (Logits of a well-trained network reach tens; two float32 implementations of the same network
    differ there by ~1e-3 absolute, ~1e-5 relative, which moves no probability by 1e-3.)"""
    session = create_session(onnx_path, providers="CPUExecutionProvider")
    worst = worst_logit = 0.0
    network = module.net.eval().cpu()
    for name, batch in inputs.items():
        with torch.no_grad():
            expected = network(torch.from_numpy(batch))
        actual = run_session(session, batch, input_name="image", output_name="logits")
        logit_difference = float(np.max(np.abs(expected.numpy() - actual)))
        probabilities = torch.softmax(expected, dim=1).numpy()
        difference = float(np.max(np.abs(probabilities - torch.softmax(torch.from_numpy(actual), dim=1).numpy())))
        log.info("parity on %s %s: probabilities %.2e, logits %.2e", name, batch.shape, difference, logit_difference)
        print(f"parity: {name} {tuple(batch.shape)}: max |torch - ONNX| probabilities {difference:.2e}, logits "
              f"{logit_difference:.2e}")  # fmt: skip
        if difference > tolerance:
            raise ParityError(
                f"ONNX class probabilities differ from torch by {difference:.2e} on {name} (tolerance {tolerance:.0e})"
            )
        worst, worst_logit = max(worst, difference), max(worst_logit, logit_difference)
    return worst, worst_logit


def build_card(
    module: SegmentationModule,
    checkpoint: dict,
    card_words: dict,
    *,
    onnx_file: str,
    parity: float,
    logit_parity: float | None = None,
) -> ModelCard:
    hp = module.hparams
    words = dict(card_words)
    table = read_structure_table(hp.structure_table) if hp.structure_table else BUILTIN_STRUCTURES
    structures = structure_specs(
        hp.structures,
        table,
        keep_largest_component=hp.keep_largest_component or (),
        attached_to=hp.attached_to,
    )
    data = tuple(DatasetReference(**entry) for entry in words.pop("training_data", []))
    published = tuple(PublishedResult(**entry) for entry in words.pop("published_comparison", []))
    card = ModelCard(
        model_id=hp.model_id,
        version=str(hp.version),
        modality=hp.modality,
        title=words.pop("title", hp.model_id),
        description=words.pop("description", ""),
        intended_use=words.pop("intended_use", "Research only; not for clinical use."),
        out_of_scope=tuple(words.pop("out_of_scope", ())),
        limitations=tuple(words.pop("limitations", ())),
        ethical_considerations=tuple(words.pop("ethical_considerations", ())),
        structures=structures,
        published_comparison=published,
        preprocessing=preprocessing_spec(hp.spacing_mm, hp.window_hu),
        inference=InferenceSpec(
            num_classes=len(hp.structures) + 1,
            patch_size_voxels=tuple(hp.patch_size),
            divisible_by=divisible_by(hp.network, hp.network_kwargs),
            overlap=hp.overlap,
        ),
        training=TrainingRecord(
            data=data,
            recipe=words.pop("recipe", ""),
            network=f"MONAI {hp.network} {dict(hp.network_kwargs or {})}",
            parameters=module.parameter_count,
            max_steps=int(checkpoint.get("global_step", 0)),
            seed=int(checkpoint.get("seed", 0)),
            duration_s=round(float(checkpoint.get("training_seconds", 0.0)), 1),
            hardware=str(checkpoint.get("hardware", "unknown")),
            code_version=code_version(),
            extra_runs=tuple(words.pop("extra_runs", ())),
        ),
        onnx=OnnxFile(
            file=f"{hp.model_id}.onnx",
            sha256="0" * 64,
            size_bytes=0,
            opset=OPSET,
            parity_max_abs_diff=parity,
            parity_quantity="probabilities",
            parity_max_logit_diff=logit_parity,
        ),
        created=datetime.now(UTC).replace(microsecond=0),
    )
    if words:
        raise ValueError(f"unknown keys in the config's model.card: {sorted(words)}")
    return card


def export_package(
    checkpoint_path: str | Path,
    out: str | Path,
    *,
    parity_image: str | None = None,
    tolerance: float = PARITY_TOLERANCE,
    card_file: str | None = None,
) -> ModelPackage:
    """Export, check parity and write the package. The card's words come from ``card_file``, else from the
    config's card_file as it is now, else from the copy saved in the checkpoint."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    module = SegmentationModule.load_from_checkpoint(checkpoint_path, map_location="cpu")
    if card_file:
        card_words = read_card_words(card_file)
    elif module.hparams.card_file:
        card_words = module.card_words  # read again when the module was rebuilt from the checkpoint
    else:
        card_words = checkpoint.get("card_words", {})
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / f"{module.hparams.model_id}.onnx"
        export_onnx(module, onnx_path)
        parity, logit_parity = check_parity(module, onnx_path, parity_inputs(module, parity_image), tolerance)
        card = build_card(
            module, checkpoint, card_words, onnx_file=onnx_path.name, parity=parity, logit_parity=logit_parity
        )
        return write_model_package(out, card, onnx_path)


def add_evaluation(package: ModelPackage, record: EvaluationRecord) -> ModelPackage:
    """The package with ``record`` appended to its card's evaluations (the ONNX file is unchanged)."""
    card = package.card.model_copy(update={"evaluations": (*package.card.evaluations, record)})
    return write_model_package(
        package.root, card, package.onnx_path, refinement_onnx_source=package.refinement_onnx_path
    )


def evaluation_record_from_json(path: str | Path, *, split: str) -> EvaluationRecord:
    """An EvaluationRecord from the JSON that ``twin-imaging evaluate --json`` writes."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    return evaluation_record(
        document["summary"],
        dataset=f"{document['dataset']} (folds {document.get('folds') or 'all'})",
        split=split,
        reference=document.get("reference", "see the dataset"),
        tolerance_mm=float(document.get("nsd_tolerance_mm", 2.0)),
        n_cases=len(document.get("per_case", {})),
    )


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that score a new package and write its human card (export and compose_cascade)."""
    parser.add_argument("--evaluate", help="datalist to score the package on")
    parser.add_argument("--data-root", help="folder the datalist's paths are under (default: shared data)")
    parser.add_argument("--eval-folds", type=int, nargs="*", help="folds of the datalist to score")
    parser.add_argument("--eval-split", help="how the scored cases relate to training, for the card")
    parser.add_argument("--eval-dataset", help="what the scored data is, for the card (default: the datalist name)")
    parser.add_argument(
        "--external-evaluation",
        nargs=2,
        action="append",
        default=[],
        metavar=("JSON", "SPLIT"),
        help="add an evaluation written by `twin-imaging evaluate --json` of another model of this recipe (e.g. a "
        "leave-one-volume-out fold) and say what it is",
    )
    parser.add_argument("--card-markdown", help="where to write the human card (default: model_cards/<id>.md)")


def check_evaluation_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.evaluate and not args.eval_split:
        parser.error("--eval-split is required with --evaluate: say how the scored cases relate to training")


def finish_package(package: ModelPackage, args: argparse.Namespace) -> ModelPackage:
    """Score the package where asked, record the evaluations in its card and write the human card."""
    if args.evaluate:
        datalist = read_datalist(args.evaluate, data_root=args.data_root)
        result = evaluate_package(package, datalist, folds=args.eval_folds)
        print(format_summary_table(result.summary))
        record = result.to_record(
            dataset=args.eval_dataset or f"{datalist.name} (folds {args.eval_folds or 'all'})",
            split=args.eval_split,
            reference=datalist.reference,
        )
        package = add_evaluation(package, record)
    for json_path, split in args.external_evaluation:
        package = add_evaluation(package, evaluation_record_from_json(json_path, split=split))
    markdown = Path(args.card_markdown) if args.card_markdown else REPO_ROOT / "model_cards" / f"{package.model_id}.md"
    write_markdown_card(package.card, markdown)
    print(f"wrote {package.root / 'card.json'} and {markdown}")
    return package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", required=True, help="package folder, e.g. models/<model_id>")
    parser.add_argument("--parity-image", help="a real image (NIfTI or DICOM) whose centre patch is checked too")
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE)
    add_evaluation_arguments(parser)
    parser.add_argument("--card-file", help="the card's words (YAML) instead of the file the training config named")
    args = parser.parse_args(argv)
    check_evaluation_arguments(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        package = export_package(
            args.checkpoint,
            args.out,
            parity_image=args.parity_image,
            tolerance=args.tolerance,
            card_file=args.card_file,
        )
    except ParityError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {package.onnx_path} ({package.card.onnx.size_bytes / 1e6:.1f} MB), sha256 {package.card.onnx.sha256}")
    finish_package(package, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
