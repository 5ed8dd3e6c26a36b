"""Build the lesion shape bank of ``training.synthetic_lesions`` from KiTS23's expert masks (no images needed).

    python -m training.prepare_kits_shapes                    # reads ../shared/data/kits23, writes
                                                              # <prepared_data_dir>/kits_shapes.{npz,json}

Every tumour (label 2) and cyst (label 3) component of at least 0.5 mL, cropped and resampled to 1.5 mm isotropic.
KiTS23 is CC BY-NC-SA 4.0: anything trained with these shapes is research-only and non-commercial, and says so.
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy import ndimage

from training.synthetic_lesions import BANK_SPACING_MM, LesionShape, ShapeBank
from twin_imaging.io.nifti import read_nifti
from twin_imaging.settings import get_settings

MIN_VOLUME_ML = 0.5
KITS_LESIONS = {2: "tumor", 3: "cyst"}

log = logging.getLogger(__name__)


def case_shapes(mask_path: str) -> list[LesionShape]:
    labels = read_nifti(mask_path)
    spacing = np.asarray(labels.spacing_mm, dtype=float)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    case_id = Path(mask_path).parent.name
    found = []
    for value, kind in KITS_LESIONS.items():
        components, _ = ndimage.label(np.asarray(labels.array) == value)
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            if box is None:
                continue
            part = components[box] == index
            if part.sum() * voxel_ml < MIN_VOLUME_ML:
                continue
            zoom = spacing / BANK_SPACING_MM
            resampled = ndimage.zoom(np.pad(part, 1).astype(np.float32), zoom, order=1) >= 0.5
            if resampled.any():
                found.append(LesionShape(kind, _cropped(resampled), case_id))
    return found


def _cropped(mask: np.ndarray) -> np.ndarray:
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return np.ascontiguousarray(mask[box])


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=settings.shared_data_dir / "kits23")
    parser.add_argument("--out", type=Path, default=settings.prepared_data_dir / "kits_shapes")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    masks = sorted(str(p) for p in args.data.glob("case_*/segmentation.nii.gz"))
    if not masks:
        print(f"no KiTS masks under {args.data}", file=sys.stderr)
        return 1
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        shapes = [s for found in pool.map(case_shapes, masks, chunksize=8) for s in found]
    bank = ShapeBank(shapes)
    bank.save(args.out)
    counts = {kind: len(items) for kind, items in bank.by_kind.items()}
    print(f"{len(masks)} masks: {counts} lesions of at least {MIN_VOLUME_ML} mL -> {args.out}.npz/.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
