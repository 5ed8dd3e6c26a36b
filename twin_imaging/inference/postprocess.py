"""Post-processing of predicted label maps."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import numpy as np
from scipy import ndimage

from twin_imaging.label_boxes import label_boxes, union_box

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


def keep_attached_components(
    labels: np.ndarray,
    attachments: Mapping[int, Collection[int]],
    *,
    in_place: bool = False,
    dropped_voxels: dict[int, int] | None = None,
) -> np.ndarray:
    """Drop each component of an attached structure that touches none of its anchors (26-connected).

    ``attachments``: label value → the label values it must touch. Structures with the same anchors are judged
    together, so that a cyst touching a tumour that touches the kidney stays. A structure whose anchors are all
    absent loses every voxel: a renal mass is not reported without the kidney it grows from. (scipy's labelling on
    the union of the group and its anchors does the work; no library offers this rule as such.) ``dropped_voxels``,
    where given, receives the number of voxels dropped per label value (only values that lost some), so that the
    caller can say what was left out.
    """
    if not in_place:
        labels = labels.copy(order="K")
    groups: dict[frozenset[int], list[int]] = {}
    for value, anchors in attachments.items():
        groups.setdefault(frozenset(int(a) for a in anchors), []).append(int(value))
    boxes = label_boxes(labels)  # one pass; each group then works inside the box of its members and anchors only

    def found(values) -> list[tuple[slice, ...]]:
        return [boxes[v - 1] for v in values if 0 < v <= len(boxes) and boxes[v - 1] is not None]

    for anchors, members in groups.items():
        member_boxes = found(members)
        if not member_boxes:
            continue
        box = union_box([*member_boxes, *found(anchors)])
        region = labels[box]  # a view: written in place
        attached, anchored = np.isin(region, members), np.isin(region, list(anchors))
        components, _ = ndimage.label(attached | anchored, structure=_FULL_CONNECTIVITY)
        keep = np.unique(components[anchored])
        dropped = attached & ~np.isin(components, keep[keep != 0])
        if dropped_voxels is not None and dropped.any():
            values, counts = np.unique(region[dropped], return_counts=True)
            dropped_voxels.update({int(v): int(c) for v, c in zip(values, counts, strict=True)})
        region[dropped] = 0
    return labels
