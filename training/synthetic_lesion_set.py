"""A test set of synthetic renal lesions: held-out BTCV cases, each with one KiTS tumour or cyst shape inserted on
its own grid (``training.synthetic_lesions``), written as NIfTI with an MSD-style datalist that ``twin-imaging
evaluate`` scores like any other.

    python -m training.synthetic_lesion_set --fold 1 --variants 2     # the 12 standard test cases, 2 copies each
    twin-imaging evaluate PACKAGE <prepared_data_dir>/btcv_lesions_fold1/dataset.json

The lesions are synthetic: a Dice measured here says how well the model finds what it was trained to find, on
patients it never saw, not how it does on real renal tumours. Written outside the repository (prepared data).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from training.synthetic_lesions import InsertionSpec, ShapeBank, check_mass_effect, insert_lesion
from twin_imaging.datalist import read_datalist
from twin_imaging.io import read_image
from twin_imaging.io.nifti import write_nifti
from twin_imaging.settings import get_settings

WINDOW_HU = (-125.0, 275.0)  # BTCV's copy holds nothing outside it
TUMOR_LABEL, CYST_LABEL = 14, 15


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", type=Path, default=Path("training/datalists/btcv.json"))
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--bank", type=Path, default=settings.prepared_data_dir / "kits_shapes")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--mass-effect",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("LOW", "HIGH"),
        help="push strength range of the mass effect (training.synthetic_lesions.InsertionSpec.mass_effect)",
    )
    args = parser.parse_args(argv)
    try:
        check_mass_effect(*args.mass_effect)  # said before any case is read
    except ValueError as exc:
        parser.error(f"--mass-effect: {exc}")
    out = args.out or settings.prepared_data_dir / f"btcv_lesions_fold{args.fold}"
    datalist = read_datalist(args.datalist)
    source = json.loads(args.datalist.read_text())
    bank = ShapeBank.load(args.bank)
    names = {value: name for value, name in datalist.label_names.items()}
    kidneys = tuple(v for v, n in names.items() if n in ("kidney_right", "kidney_left"))
    entries = []
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for index, case in enumerate(c for c in datalist.cases() if c.fold == args.fold and c.label is not None):
        image, labels = read_image(case.image), read_image(case.label)
        spec = InsertionSpec(
            window_hu=WINDOW_HU,
            spacing_mm=tuple(float(s) for s in image.spacing_mm),
            kidney_labels=kidneys,
            tumor_label=TUMOR_LABEL,
            cyst_label=CYST_LABEL,
            mass_effect=tuple(args.mass_effect),
        )
        windowed = np.clip((np.asarray(image.array, np.float32) - WINDOW_HU[0]) / (WINDOW_HU[1] - WINDOW_HU[0]), 0, 1)
        rng = np.random.default_rng([args.seed, index])
        for variant in range(args.variants):
            inserted = None
            for _ in range(5):
                inserted = insert_lesion(windowed, np.asarray(labels.array, np.uint8), bank, spec, rng)
                if inserted is not None:
                    break
            if inserted is None:
                continue
            new_image, new_labels, info = inserted
            hu = np.rint(new_image * (WINDOW_HU[1] - WINDOW_HU[0]) + WINDOW_HU[0]).astype(np.int16)
            case_id = f"{case.case_id}_{info['kind']}{variant}"
            write_nifti(replace(image, array=hu), out / "images" / f"{case_id}.nii.gz")
            write_nifti(replace(labels, array=new_labels), out / "labels" / f"{case_id}.nii.gz")
            entries.append(
                {
                    "case_id": case_id,
                    "image": f"images/{case_id}.nii.gz",
                    "label": f"labels/{case_id}.nii.gz",
                    "fold": args.fold,
                    "lesion": info,
                }
            )
            print(f"{case_id}: {info['kind']} {info['volume_ml']:.1f} mL (shape from KiTS {info['source_case']})")
    document = {
        "name": f"BTCV fold {args.fold} with synthetic renal lesions",
        "description": (
            f"The BTCV cases of fold {args.fold}, {args.variants} copies each with one KiTS23 tumour or cyst shape "
            "inserted (training/synthetic_lesions.py). SYNTHETIC lesions: not real tumours."
        ),
        "licence": f"{source.get('licence', '')}; lesion shapes from KiTS23 (CC BY-NC-SA 4.0)",
        "reference": "expert BTCV organ labels; synthetic lesion masks",
        "structure_names": source.get("structure_names", {}),
        "labels": {**source["labels"], str(TUMOR_LABEL): "renal_tumor", str(CYST_LABEL): "renal_cyst"},
        "training": entries,
    }
    (out / "dataset.json").write_text(json.dumps(document, indent=1))
    print(f"{len(entries)} cases -> {out / 'dataset.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
