"""Bounding boxes of the labels of a label map, read in the map's own memory order, in two halves at once."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from twin_imaging.volume import axes_slowest_first

_HALVES_FROM_VOXELS = 8 * 1024 * 1024  # from this size, the two halves of the map are scanned on two threads


def label_boxes(array: np.ndarray, max_label: int = 0) -> list[tuple[slice, ...] | None]:
    """``scipy.ndimage.find_objects(array, max_label)``, the same boxes, whatever the array's memory layout.

    scipy walks the array in C order; a label map on a DICOM or NIfTI grid is stored i fastest (Fortran order), and
    a reoriented map is a view with flipped or permuted axes, where that walk jumps a whole plane at every step:
    0.76 s instead of 0.12 s for 512 x 512 x 300. The map is read through the view whose axes run from the slowest
    in memory to the fastest (no copy), and each box is put back in the map's own axis order. A large map is
    scanned as two halves along its slowest axis on two threads (scipy lets go of the GIL; 0.12 → 0.07 s), and the
    halves' boxes merged.
    """
    array = np.asarray(array)
    order = axes_slowest_first(array)
    view = array.transpose(order)
    if array.size >= _HALVES_FROM_VOXELS and array.ndim > 0 and view.shape[0] >= 2:
        half = view.shape[0] // 2
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="boxes") as pool:
            first, second = pool.map(lambda part: ndimage.find_objects(part, max_label), (view[:half], view[half:]))
        boxes = [_merge(a, b, half) for a, b in _pairs(first, second)]
    else:
        boxes = ndimage.find_objects(view, max_label)
    if np.array_equal(order, np.arange(array.ndim)):
        return boxes
    back = np.argsort(order)
    return [None if box is None else tuple(box[axis] for axis in back) for box in boxes]


def _pairs(first: list, second: list):
    for index in range(max(len(first), len(second))):
        yield (first[index] if index < len(first) else None, second[index] if index < len(second) else None)


def _merge(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None, offset: int) -> tuple[slice, ...] | None:
    """The box holding box ``a`` of the first half and box ``b`` of the second (``offset`` along the first axis)."""
    if b is not None:
        b = (slice(b[0].start + offset, b[0].stop + offset), *b[1:])
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def union_box(boxes: Sequence[tuple[slice, ...]]) -> tuple[slice, ...]:
    """The smallest box holding every one of ``boxes`` (index slices with starts and stops, none empty)."""
    axes = range(len(boxes[0]))
    return tuple(slice(min(b[axis].start for b in boxes), max(b[axis].stop for b in boxes)) for axis in axes)
