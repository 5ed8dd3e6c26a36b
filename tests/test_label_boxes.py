"""Label boxes are scipy's find_objects boxes whatever the map's memory layout (views are read in memory order)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from twin_imaging.label_boxes import label_boxes


def _label_map() -> np.ndarray:
    rng = np.random.default_rng(1)
    labels = np.zeros((30, 40, 50), np.uint8)
    for value in (1, 2, 3, 5):  # 4 absent
        i, j, k = rng.integers(0, 25), rng.integers(0, 35), rng.integers(0, 45)
        labels[i : i + rng.integers(1, 6), j : j + 4, k : k + 3] = value
    return labels


LAYOUTS = {
    "C order": lambda a: a,
    "Fortran order": np.asfortranarray,
    "flipped C": lambda a: a[::-1, :, ::-1],
    "flipped Fortran (a DICOM map seen in RAS)": lambda a: np.asfortranarray(a)[::-1, ::-1],
    "permuted": lambda a: a.transpose(2, 0, 1),
    "permuted and flipped Fortran": lambda a: np.asfortranarray(a).transpose(1, 2, 0)[:, ::-1],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_boxes_of_every_layout_are_those_of_a_c_order_copy(layout):
    view = LAYOUTS[layout](_label_map())
    expected = ndimage.find_objects(np.ascontiguousarray(view))
    assert label_boxes(view) == expected
    assert expected[3] is None and len([b for b in expected if b is not None]) == 4
    assert label_boxes(view, max_label=7) == ndimage.find_objects(np.ascontiguousarray(view), 7)


@pytest.mark.parametrize("layout", ["C order", "flipped Fortran (a DICOM map seen in RAS)"])
def test_a_large_map_scanned_in_two_halves_gives_the_same_boxes(layout, monkeypatch):
    from twin_imaging import label_boxes as module

    monkeypatch.setattr(module, "_HALVES_FROM_VOXELS", 1)  # every map is "large"
    labels = _label_map()
    labels[0:2, 0:3, 0:4] = 6  # in the first half only
    labels[29, 39, 49] = 7  # in the second half only
    labels[5, 5, 5] = labels[25, 30, 40] = 8  # in both halves
    view = LAYOUTS[layout](labels)
    expected = ndimage.find_objects(np.ascontiguousarray(view))
    assert label_boxes(view) == expected
    assert label_boxes(view, max_label=9) == ndimage.find_objects(np.ascontiguousarray(view), 9)
