"""Copies of an analysis' CT and label map small enough for a browser viewer, made at analysis time.

The CT is averaged over blocks of f_i voxels along each axis (integer factors, so no interpolation blurs the label
edges and the grid stays exactly aligned), with the same factor per axis where the voxels are square in-plane; the
label map takes each block's centre voxel (nearest; for an even factor the voxel half a source voxel past the
centre, which no viewer shows), so both copies share one grid. The factors grow until the
int16 CT fits ``max_mb`` uncompressed (``settings.viewer_volume_max_mb``): a 512 x 512 x 300 CT at 8 MB becomes
about 171 x 171 x 100.
"""

from __future__ import annotations

import math

import numpy as np

from twin_imaging.volume import Volume


def viewer_factors(
    shape: tuple[int, int, int], spacing_mm: tuple[float, float, float], max_bytes: int
) -> tuple[int, ...]:
    """The smallest block factors (coarsest axis last to grow) that bring the int16 copy under ``max_bytes``."""
    factors = [1, 1, 1]
    while math.prod(math.ceil(n / f) for n, f in zip(shape, factors, strict=True)) * 2 > max_bytes:
        # grow the axes whose blocks are finest in millimetres (all tied ones together: square pixels stay square)
        finest = min(spacing_mm[a] * factors[a] for a in range(3))
        for axis in range(3):
            if spacing_mm[axis] * factors[axis] <= finest * (1 + 1e-6):
                factors[axis] += 1
    return tuple(factors)


def viewer_copies(ct: Volume, labels: Volume, *, max_mb: float) -> tuple[Volume, Volume]:
    """(CT as int16 block means, labels as block-centre samples) on one coarser grid; unchanged where small."""
    factors = viewer_factors(ct.shape, ct.spacing_mm, int(max_mb * 1e6))
    f = np.asarray(factors)
    padded_shape = tuple(int(math.ceil(n / k) * k) for n, k in zip(ct.shape, factors, strict=True))
    array = np.asarray(ct.array, dtype=np.float32)
    pad = [(0, p - n) for n, p in zip(ct.shape, padded_shape, strict=True)]
    padded = np.pad(array, pad, mode="edge")
    out_shape = tuple(p // k for p, k in zip(padded_shape, factors, strict=True))
    blocks = padded.reshape(out_shape[0], factors[0], out_shape[1], factors[1], out_shape[2], factors[2])
    means = blocks.mean(axis=(1, 3, 5))
    small_ct = np.clip(np.rint(means), -32768, 32767).astype(np.int16)
    centres = tuple(slice(k // 2, None, k) for k in factors)
    small_labels = np.asarray(labels.array)[centres][: out_shape[0], : out_shape[1], : out_shape[2]]
    small_labels = np.pad(small_labels, [(0, o - s) for o, s in zip(out_shape, small_labels.shape, strict=True)])
    affine = ct.affine_ras.copy()
    affine[:3, :3] = ct.affine_ras[:3, :3] * f  # columns scaled by the block size
    affine[:3, 3] = ct.affine_ras[:3, 3] + ct.affine_ras[:3, :3] @ ((f - 1) / 2.0)  # the first block's centre
    grid = Volume(small_ct, affine)
    return grid, grid.with_array(small_labels.astype(np.uint8), label_names=labels.label_names)
