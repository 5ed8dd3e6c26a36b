"""Post-processing of predicted label maps: keep the largest connected component of chosen labels, and only the
components of attached structures (renal masses) that touch their anchors (the kidneys)."""

from __future__ import annotations

import numpy as np

from twin_imaging.inference.postprocess import keep_attached_components, keep_largest_components


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


KIDNEY_RIGHT, KIDNEY_LEFT, TUMOUR, CYST, LIVER = 1, 2, 3, 4, 5
RENAL_MASSES = {TUMOUR: (KIDNEY_RIGHT, KIDNEY_LEFT), CYST: (KIDNEY_RIGHT, KIDNEY_LEFT)}


def _kidneys_and_masses() -> np.ndarray:
    labels = np.zeros((40, 30, 30), dtype=np.uint8)
    labels[2:12, 5:15, 5:20] = KIDNEY_RIGHT
    labels[25:35, 5:15, 5:20] = KIDNEY_LEFT
    labels[12:16, 8:12, 8:12] = TUMOUR  # grows from the right kidney's face
    labels[16:18, 8:12, 8:12] = CYST  # touches that tumour only: stays with it
    labels[21:24, 20:24, 20:24] = TUMOUR  # 5 voxels from any kidney: a false positive
    labels[2:6, 25:28, 25:28] = CYST  # alone
    labels[30:33, 15:17, 10:12] = TUMOUR  # on the left kidney's face (y 14 | 15)
    labels[30:33, 20:25, 22:26] = LIVER
    return labels


def test_only_renal_masses_that_touch_a_kidney_stay():
    labels = _kidneys_and_masses()
    cleaned = keep_attached_components(labels, RENAL_MASSES)
    assert (cleaned[12:16, 8:12, 8:12] == TUMOUR).all()
    assert (cleaned[16:18, 8:12, 8:12] == CYST).all()  # through the tumour it touches
    assert (cleaned[21:24, 20:24, 20:24] == 0).all()
    assert (cleaned[2:6, 25:28, 25:28] == 0).all()
    assert (cleaned[30:33, 15:17, 10:12] == TUMOUR).all()
    # everything else untouched, and the input too
    unchanged = (labels != TUMOUR) & (labels != CYST)
    assert (cleaned[unchanged] == labels[unchanged]).all()
    assert (labels[21:24, 20:24, 20:24] == TUMOUR).all()


def test_the_dropped_voxels_are_counted_per_structure():
    dropped: dict[int, int] = {}
    keep_attached_components(_kidneys_and_masses(), RENAL_MASSES, dropped_voxels=dropped)
    assert dropped == {TUMOUR: 3 * 4 * 4, CYST: 4 * 3 * 3}  # the lone tumour and the lone cyst, nothing else
    labels = _kidneys_and_masses()
    labels[21:24, 20:24, 20:24] = labels[2:6, 25:28, 25:28] = 0
    nothing: dict[int, int] = {}
    keep_attached_components(labels, RENAL_MASSES, dropped_voxels=nothing)
    assert nothing == {}


def test_a_diagonal_contact_counts_and_another_organ_does_not_anchor():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[2:4, 2:4, 2:4] = KIDNEY_LEFT
    labels[4, 4, 4] = TUMOUR  # corner to corner with the kidney: 26-connected
    labels[7:9, 7:9, 7:9] = LIVER
    labels[6, 6, 6] = CYST  # corner to corner with the liver only
    cleaned = keep_attached_components(labels, RENAL_MASSES)
    assert cleaned[4, 4, 4] == TUMOUR
    assert cleaned[6, 6, 6] == 0


def test_masses_without_any_kidney_are_dropped_and_in_place_edits_the_map():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[2:5, 2:5, 2:5] = TUMOUR
    labels[6:8, 6:8, 6:8] = LIVER
    result = keep_attached_components(labels, RENAL_MASSES, in_place=True)
    assert result is labels
    assert not (labels == TUMOUR).any() and (labels == LIVER).sum() == 8


def test_no_attached_voxels_leaves_the_map_as_it_is():
    labels = _kidneys_and_masses()
    labels[(labels == TUMOUR) | (labels == CYST)] = 0
    assert np.array_equal(keep_attached_components(labels, RENAL_MASSES), labels)
