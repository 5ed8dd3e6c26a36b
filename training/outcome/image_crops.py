"""Fixed-size crops of the affected kidney for the image network: 3 binary channels (kidney, tumour, cyst).

The affected side's box (``split_kidneys``) is resampled (nearest neighbour) onto a ``size``³ grid aligned with the
RAS axes, centred on the box, at the isotropic spacing that makes the box's longest extent fit the grid; the
spacing is kept (``spacing_mm``) so the network still sees the physical scale. Left kidneys are mirrored along x so
every crop shows a kidney of the same side (the medial direction is always the same).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from twin_imaging.errors import InputError
from twin_imaging.files import write_bytes_atomic
from twin_imaging.io import read_nifti
from twin_imaging.outcome.kidney_features import KITS_LABELS, split_kidneys
from twin_imaging.volume import Volume

log = logging.getLogger(__name__)

CROP_VERSION = 1
CHANNELS = ("kidney", "tumor", "cyst")
KITS_MASK = "segmentation.nii.gz"


@dataclass(frozen=True)
class KidneyCrop:
    channels: np.ndarray  # (3, size, size, size) bool: kidney, tumour, cyst
    spacing_mm: float  # isotropic spacing of the grid
    affected_side: str  # "left" crops are mirrored along x


def crop_affected_kidney(labels: Volume, *, size: int = 48) -> KidneyCrop:
    """The affected kidney's box resampled to ``size``³ (InputError where ``split_kidneys`` refuses the map)."""
    split = split_kidneys(labels)
    box = split.labels
    affine = split.affine_ras
    shape = np.array(box.shape)
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    corners_ras = corners @ affine[:3, :3].T + affine[:3, 3]
    voxel_mm = np.linalg.norm(affine[:3, :3], axis=0).max()
    extent_mm = float(np.ptp(corners_ras, axis=0).max() + voxel_mm)
    spacing_mm = extent_mm / size
    centre_ras = corners_ras.mean(axis=0)
    sign = -1.0 if split.affected_side == "left" else 1.0
    grid_to_ras = np.diag([sign * spacing_mm, spacing_mm, spacing_mm])
    ras_to_index = np.linalg.inv(affine[:3, :3])
    matrix = ras_to_index @ grid_to_ras
    offset = ras_to_index @ (centre_ras - grid_to_ras @ np.full(3, (size - 1) / 2) - affine[:3, 3])
    grid = ndimage.affine_transform(
        box.astype(np.uint8), matrix, offset, output_shape=(size,) * 3, order=0, mode="constant", cval=0
    )
    channels = np.stack([grid == KITS_LABELS[name] for name in CHANNELS])
    return KidneyCrop(channels=channels, spacing_mm=spacing_mm, affected_side=split.affected_side)


def load_crops(
    root: str | os.PathLike,
    case_ids: list[str],
    *,
    cache_dir: str | os.PathLike,
    size: int = 48,
    workers: int = 2,
) -> dict[str, KidneyCrop | None]:
    """case_id → crop (None where the mask is missing or refused), from the cache or computed in a process pool."""
    root, cache = Path(root), Path(cache_dir)
    crops: dict[str, KidneyCrop | None] = {}
    cache.mkdir(parents=True, exist_ok=True)
    pending: dict[str, tuple[str, str]] = {}
    for case_id in case_ids:
        mask = root / case_id / KITS_MASK
        if not mask.is_file():
            crops[case_id] = None
            continue
        digest = _sha256(mask)
        hit = _read_cache(cache / f"{case_id}_{size}.npz", digest)
        if hit is None:
            pending[case_id] = (str(mask), digest)
        else:
            crops[case_id] = hit
    log.info("kidney crops: %d cached, %d to compute", len(crops), len(pending))
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_crop_job, mask, size): case_id for case_id, (mask, _) in pending.items()}
        for future in as_completed(futures):
            case_id = futures[future]
            crop = future.result()
            crops[case_id] = crop
            if crop is not None:
                _write_cache(cache / f"{case_id}_{size}.npz", pending[case_id][1], crop)
    return {case_id: crops[case_id] for case_id in case_ids}


def _crop_job(mask_path: str, size: int) -> KidneyCrop | None:
    try:
        return crop_affected_kidney(read_nifti(mask_path), size=size)
    except InputError as exc:
        log.warning("%s: no crop: %s", mask_path, exc)
        return None


def _read_cache(path: Path, digest: str) -> KidneyCrop | None:
    try:
        with np.load(path) as entry:
            if str(entry["mask_sha256"]) != digest or int(entry["crop_version"]) != CROP_VERSION:
                return None
            size = int(entry["size"])
            channels = np.unpackbits(entry["channels"])[: 3 * size**3].reshape(3, size, size, size).astype(bool)
            return KidneyCrop(channels, float(entry["spacing_mm"]), str(entry["affected_side"]))
    except (OSError, KeyError, ValueError):
        return None


def _write_cache(path: Path, digest: str, crop: KidneyCrop) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        channels=np.packbits(crop.channels),
        size=crop.channels.shape[-1],
        spacing_mm=crop.spacing_mm,
        affected_side=crop.affected_side,
        mask_sha256=digest,
        crop_version=CROP_VERSION,
    )
    write_bytes_atomic(path, buffer.getvalue())


def _sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
