"""Labels back on the source grid two ways, on a real labelled volume: nearest neighbour from the model grid's argmax
(the old way) and the class scores resampled to the source grid with the argmax taken there (what serving does).

    .venv/bin/python benchmarks/compare_label_resampling.py MODEL DATALIST CASE_ID [--data-root DIR]

e.g. ``abdomen_ct_fast training/datalists/btcv.json img0001``. Prints, per structure, the reference volume, each
way's volume and its Dice against the reference (source grid), and the seconds each way took. Not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from twin_imaging.datalist import label_lookup, read_datalist
from twin_imaging.inference.postprocess import keep_largest_components
from twin_imaging.inference.segment import Segmenter
from twin_imaging.io import read_image
from twin_imaging.models import load_model_package
from twin_imaging.settings import get_settings
from twin_imaging.transforms import labels_to_source_grid, preprocess_image, resample_to_grid
from twin_imaging.transforms.logits_to_source import argmax_on_source_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("datalist")
    parser.add_argument("case_id")
    parser.add_argument("--data-root")
    args = parser.parse_args()
    path = Path(args.model)
    package = load_model_package(path if path.exists() else get_settings().models_dir / args.model)
    datalist = read_datalist(args.datalist, data_root=args.data_root)
    (case,) = [c for c in datalist.cases() if c.case_id == args.case_id]
    image, reference = read_image(case.image), read_image(case.label)
    if reference.shape != image.shape:
        reference = resample_to_grid(reference, image.shape, image.affine_ras, order=0)
    card = package.card
    lookup = label_lookup(datalist.label_names, [s.name for s in card.structures])
    truth = lookup[np.asarray(reference.array, dtype=np.int64).clip(0, 255)]

    segmenter = Segmenter(package)
    prepared = preprocess_image(image, card.preprocessing)
    logits = segmenter.predict_logits(prepared.array)
    largest = [s.label for s in card.structures if s.keep_largest_component]
    start = time.perf_counter()
    nearest = keep_largest_components(labels_to_source_grid(np.argmax(logits, axis=0), prepared), largest)
    nearest_s = time.perf_counter() - start
    start = time.perf_counter()
    resampled = keep_largest_components(argmax_on_source_grid(logits, prepared), largest)
    resampled_s = time.perf_counter() - start

    voxel_ml = float(np.prod(image.spacing_mm)) / 1000.0
    print(
        f"\n{card.model_id} {card.version} on {case.case_id} ({datalist.name}); source grid "
        f"{' x '.join(f'{s:.2f}' for s in image.spacing_mm)} mm, model grid "
        f"{' x '.join(f'{s:g}' for s in card.preprocessing.spacing_mm)} mm; back to the source: "
        f"nearest {nearest_s:.2f} s, "
        f"scores resampled {resampled_s:.2f} s"
    )
    print("| structure | reference mL | nearest mL | resampled mL | Dice nearest | Dice resampled |")
    print("|---|---|---|---|---|---|")
    for spec in card.structures:
        ref = truth == spec.label
        if not ref.any():
            continue
        a, b = nearest == spec.label, resampled == spec.label
        print(
            f"| {spec.name} | {ref.sum() * voxel_ml:.1f} | {a.sum() * voxel_ml:.1f} | {b.sum() * voxel_ml:.1f} | "
            f"{_dice(a, ref):.3f} | {_dice(b, ref):.3f} |"
        )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * np.sum(a & b) / total) if total else 1.0


if __name__ == "__main__":
    main()
