"""Post-processing of predicted label maps."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

from twin_imaging.label_boxes import label_boxes

_FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def keep_largest_components(labels: np.ndarray, label_values: Iterable[int], *, in_place: bool = False) -> np.ndarray:
    """For each of ``label_values``, keep only its largest 26-connected component (the rest becomes background).

    Works on a copy in the map's own memory order, or with ``in_place`` on ``labels`` itself (a map of one's own).
    """
    if not in_place:
        labels = labels.copy(order="K")  # keeps the memory order (a C-order copy of an i-fastest map: 0.2 s)
    # One pass finds every structure's bounding box; each is then labelled inside its box only.
    boxes = label_boxes(labels)
    for value in label_values:
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
        if box is None:
            continue
        mask = labels[box] == value
        components, count = ndimage.label(mask, structure=_FULL_CONNECTIVITY)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        region = labels[box]
        region[(components != 0) & (components != int(np.argmax(sizes)))] = 0
    return labels
