"""Bounding boxes of the labels of a label map, read in the map's own memory order."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def label_boxes(array: np.ndarray, max_label: int = 0) -> list[tuple[slice, ...] | None]:
    """``scipy.ndimage.find_objects(array, max_label)``, the same boxes, whatever the array's memory layout.

    scipy walks the array in C order; a label map on a DICOM or NIfTI grid is stored i fastest (Fortran order), and
    a reoriented map is a view with flipped or permuted axes, where that walk jumps a whole plane at every step:
    0.76 s instead of 0.12 s for 512 x 512 x 300. The map is read through the view whose axes run from the slowest
    in memory to the fastest (no copy), and each box is put back in the map's own axis order.
    """
    array = np.asarray(array)
    order = np.argsort([-abs(stride) for stride in array.strides], kind="stable")
    if np.array_equal(order, np.arange(array.ndim)):
        return ndimage.find_objects(array, max_label)
    back = np.argsort(order)
    boxes = ndimage.find_objects(array.transpose(order), max_label)
    return [None if box is None else tuple(box[axis] for axis in back) for box in boxes]
