"""Post-processing of predicted label maps: keep the largest connected component of chosen labels."""

from __future__ import annotations

import numpy as np

from twin_imaging.inference.postprocess import keep_largest_components


def _two_blobs() -> np.ndarray:
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[2:8, 2:8, 2:8] = 1  # large component of label 1 (216 voxels)
    labels[12:14, 12:14, 12:14] = 1  # small component of label 1 (8 voxels)
    labels[2:4, 14:18, 2:4] = 2  # label 2: two components
    labels[16:18, 2:3, 16:18] = 2
    labels[10, 10, 10] = 3
    return labels


def test_only_the_largest_component_of_the_chosen_label_is_kept():
    labels = _two_blobs()
    before = labels.copy()
    cleaned = keep_largest_components(labels, [1])

    np.testing.assert_array_equal(labels, before)  # the input is not modified
    assert cleaned.dtype == labels.dtype
    expected = labels.copy()
    expected[12:14, 12:14, 12:14] = 0
    np.testing.assert_array_equal(cleaned, expected)  # label 2 keeps both components, label 3 is untouched


def test_several_labels_each_keep_their_own_largest_component():
    labels = _two_blobs()
    cleaned = keep_largest_components(labels, [1, 2])
    assert np.count_nonzero(cleaned == 1) == 216
    assert np.count_nonzero(cleaned == 2) == 16  # 2 x 4 x 2 kept, 2 x 1 x 2 removed
    assert np.all(cleaned[16:18, 2:3, 16:18] == 0)
    assert cleaned[10, 10, 10] == 3


def test_components_are_26_connected():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels
    labels[3, 3, 3] = labels[4, 4, 4] = 1  # a chain touching the cube at corners only: 10 voxels 26-connected
    labels[7:10, 7:10, 0] = 1  # a separate 9-voxel plate: the largest 6- or 18-connected component
    cleaned = keep_largest_components(labels, [1])
    expected = labels.copy()
    expected[7:10, 7:10, 0] = 0
    np.testing.assert_array_equal(cleaned, expected)


def test_components_of_different_labels_are_separate():
    """A label's component is not joined to another by voxels of a third label between them."""
    labels = np.zeros((12, 4, 4), dtype=np.uint8)
    labels[0:5] = 1
    labels[5] = 2
    labels[6:8] = 1
    cleaned = keep_largest_components(labels, [1])
    assert np.all(cleaned[0:5] == 1) and np.all(cleaned[5] == 2) and np.all(cleaned[6:8] == 0)


def test_empty_or_single_component_labels_are_left_alone():
    labels = _two_blobs()
    np.testing.assert_array_equal(keep_largest_components(labels, [7]), labels)  # absent label
    np.testing.assert_array_equal(keep_largest_components(labels, []), labels)
    np.testing.assert_array_equal(keep_largest_components(labels, [3]), labels)  # one voxel, one component
    empty = np.zeros((5, 5, 5), dtype=np.uint8)
    np.testing.assert_array_equal(keep_largest_components(empty, [1, 2]), empty)


def test_in_place_cleans_the_map_itself_and_a_copy_keeps_its_memory_order():
    labels = np.asfortranarray(_two_blobs())
    copy = keep_largest_components(labels, [1])
    assert copy.flags.f_contiguous and copy is not labels and labels[12, 12, 12] == 1
    same = keep_largest_components(labels, [1], in_place=True)
    assert same is labels and labels[12, 12, 12] == 0
    np.testing.assert_array_equal(same, copy)
