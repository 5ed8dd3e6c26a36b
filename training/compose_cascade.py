"""Two model packages → one cascade package: the first network labels the whole volume, the refinement network
relabels its structures on a crop around structures the first one found (``RefinementStage``).

    python -m training.compose_cascade models/abdomen_ct_fast PATH/renal_ct_region --around kidney_right \
        kidney_left --margin-mm 30 --version 1.0.0 --model-id abdomen_ct_fast_renal \
        --card-file training/cards/abdomen_ct_fast_renal.yaml --out models/abdomen_ct_fast_renal \
        --attached renal_tumor=kidney_right,kidney_left --external-evaluation EVALUATION.json "how it was measured"

The cascade keeps the first package's structures and labels (and its model id, unless given another); the
refinement's structures that the first lacks (renal tumour and cyst) are appended with the next labels, with their
codes, colours and post-processing from the refinement's card. Both ONNX files are copied and hashed into the card,
which holds both training records.
Evaluations are not carried over (neither package's numbers are the cascade's): score the cascade itself.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from training.export import add_evaluation_arguments, check_evaluation_arguments, finish_package
from training.module import read_card_words
from twin_imaging.files import copy_atomic
from twin_imaging.models.card import DatasetReference, ModelCard, RefinementStage
from twin_imaging.models.package import ModelPackage, load_model_package, write_model_package

log = logging.getLogger(__name__)


def cascade_card(
    first: ModelCard,
    refinement: ModelCard,
    *,
    around: list[str],
    margin_mm: float,
    version: str,
    words: dict,
    attached_to: dict[str, list[str]] | None = None,
    model_id: str | None = None,
) -> ModelCard:
    """The cascade's card (ONNX hashes still the sources' until the package is written). ``attached_to``: post-
    processing of the cascade's structures (``StructureSpec.attached_to``), over what their cards say."""
    ordered = sorted(refinement.structures, key=lambda s: s.label)
    if [s.label for s in ordered] != list(range(1, len(ordered) + 1)):
        raise ValueError(f"{refinement.model_id}'s labels must run 1..N in its output order")
    names = {s.name for s in first.structures}
    added = [s for s in refinement.structures if s.name not in names]
    # past every class of the first network, named or not: its argmax never writes the refinement's labels
    next_label = max(first.inference.num_classes, max(s.label for s in first.structures) + 1)
    structures = [
        *first.structures,
        *(s.model_copy(update={"label": next_label + i}) for i, s in enumerate(added)),
    ]
    attached_to = attached_to or {}
    unknown = sorted(set(attached_to) - {s.name for s in structures})
    if unknown:
        raise ValueError(f"attached_to names structures the cascade lacks: {unknown}")
    structures = tuple(
        s.model_copy(update={"attached_to": tuple(attached_to[s.name])}) if s.name in attached_to else s
        for s in structures
    )
    stage = RefinementStage(
        around=tuple(around),
        margin_mm=margin_mm,
        structures=tuple(s.name for s in ordered),
        preprocessing=refinement.preprocessing,
        inference=refinement.inference,
        onnx=refinement.onnx.model_copy(update={"file": f"{refinement.model_id}.onnx"}),
        training=refinement.training,
    )
    words = dict(words)
    data = tuple(DatasetReference(**entry) for entry in words.pop("training_data", [])) or first.training.data
    training = first.training.model_copy(
        update={
            "data": data,
            "recipe": words.pop("recipe", first.training.recipe),
            "extra_runs": (*first.training.extra_runs, *words.pop("extra_runs", ())),
        }
    )
    model_id = model_id or first.model_id
    update = {
        "model_id": model_id,
        "onnx": first.onnx.model_copy(update={"file": f"{model_id}.onnx"}),
        "version": version,
        "structures": structures,
        "refinement": stage,
        "training": training,
        "evaluations": (),
        "published_comparison": (),
        "created": datetime.now(UTC).replace(microsecond=0),
        **{key: tuple(value) if isinstance(value, list) else value for key, value in words.items()},
    }
    unknown = set(update) - set(ModelCard.model_fields)
    if unknown:
        raise ValueError(f"unknown card words: {sorted(unknown)}")
    return ModelCard.model_validate({**first.model_dump(), **update})


def compose_package(
    first: ModelPackage,
    refinement: ModelPackage,
    out: str | Path,
    *,
    around: list[str],
    margin_mm: float,
    version: str,
    card_file: str | None = None,
    attached_to: dict[str, list[str]] | None = None,
    model_id: str | None = None,
) -> ModelPackage:
    if first.card.refinement is not None or refinement.card.refinement is not None:
        raise ValueError("a cascade is made of two single-network packages")
    words = read_card_words(card_file) if card_file else {}
    card = cascade_card(
        first.card,
        refinement.card,
        around=around,
        margin_mm=margin_mm,
        version=version,
        words=words,
        attached_to=attached_to,
        model_id=model_id,
    )
    with tempfile.TemporaryDirectory() as scratch:  # the sources may live in ``out`` itself
        first_onnx = copy_atomic(first.onnx_path, Path(scratch) / card.onnx.file)
        second_onnx = copy_atomic(refinement.onnx_path, Path(scratch) / card.refinement.onnx.file)
        return write_model_package(out, card, first_onnx, refinement_onnx_source=second_onnx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="the package that labels the whole volume")
    parser.add_argument("refinement", help="the package run on the crop")
    parser.add_argument("--around", nargs="+", required=True, help="structures whose box is the crop")
    parser.add_argument("--margin-mm", type=float, default=25.0)
    parser.add_argument("--version", required=True, help="the cascade's version")
    parser.add_argument("--model-id", help="the cascade's model id (default: the first package's)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--card-file", help="the cascade's card words (YAML), over the first package's")
    parser.add_argument(
        "--attached",
        action="append",
        default=[],
        metavar="STRUCTURE=ANCHOR[,ANCHOR]",
        help="keep only the components of STRUCTURE that touch an ANCHOR, e.g. renal_tumor=kidney_right,kidney_left",
    )
    add_evaluation_arguments(parser)
    args = parser.parse_args(argv)
    check_evaluation_arguments(parser, args)
    attached = {}
    for item in args.attached:
        name, _, anchors = item.partition("=")
        if not name or not anchors:
            parser.error(f"--attached {item!r}: write STRUCTURE=ANCHOR[,ANCHOR]")
        attached[name] = anchors.split(",")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        package = compose_package(
            load_model_package(args.first),
            load_model_package(args.refinement),
            args.out,
            around=args.around,
            margin_mm=args.margin_mm,
            version=args.version,
            card_file=args.card_file,
            attached_to=attached,
            model_id=args.model_id,
        )
    except ValueError as exc:
        print(f"compose failed: {exc}", file=sys.stderr)
        return 1
    finish_package(package, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
