"""The quality review on the phantom's exact labels: nothing to say about a whole, normal abdomen; an organ cut by
the scan, a mirrored image and an implausible volume each named, with the structure and the patient direction."""

from __future__ import annotations

import numpy as np
import pytest

from twin_imaging.datalist import label_lookup
from twin_imaging.measure import measure_structures
from twin_imaging.models import default_segmentation_package
from twin_imaging.quality_review import (
    CUT_BY_FIELD_OF_VIEW,
    UNEXPECTED_LATERALITY,
    VOLUME_OUTSIDE_ADULT_RANGE,
    review_segmentation,
)
from twin_imaging.testing import PHANTOM_LABELS, PhantomGeometry, make_phantom
from twin_imaging.volume import Volume


@pytest.fixture(scope="module")
def card():
    return default_segmentation_package().card


@pytest.fixture(scope="module")
def truth(card) -> Volume:
    phantom = make_phantom(PhantomGeometry(shape=(128, 128, 48), spacing_mm=(3.0, 3.0, 4.0)))
    names = [s.name for s in card.structures]
    return phantom.labels.with_array(label_lookup(PHANTOM_LABELS, names)[phantom.labels.array])


def review(labels: Volume, card):
    measurements = measure_structures(labels, label_names=card.label_names(), tubular=["aorta"])
    return review_segmentation(measurements, labels.shape, labels.affine_ras, card)


def test_a_whole_normal_abdomen_needs_no_review(truth, card):
    assert review(truth, card) == []


def test_an_organ_cut_by_the_top_of_the_scan_is_named_with_the_direction(truth, card):
    liver = card.structure("liver").label
    top_of_liver = int(np.nonzero((truth.array == liver).any(axis=(0, 1)))[0].max())
    superior_is_last = truth.affine_ras[2, 2] > 0
    if superior_is_last:
        cropped = Volume(np.ascontiguousarray(truth.array[:, :, : top_of_liver - 3]), truth.affine_ras)
    else:
        cropped = Volume(np.ascontiguousarray(truth.array[:, :, top_of_liver + 4 :]), _shifted(truth, top_of_liver + 4))
    reasons = review(cropped, card)
    cut = {r.structures: r.message for r in reasons if r.code == CUT_BY_FIELD_OF_VIEW}
    assert ("liver",) in cut and not {("kidney_right",), ("kidney_left",)} & set(cut)
    assert all("superior edge" in message and "lower bound" in message for message in cut.values())
    assert not any(r.code == VOLUME_OUTSIDE_ADULT_RANGE and r.structures == ("liver",) for r in reasons)


def test_the_aorta_leaving_the_scan_is_expected(truth, card):
    aorta = card.structure("aorta").label
    assert (truth.array[:, :, 0] == aorta).any() and (truth.array[:, :, -1] == aorta).any()
    assert review(truth, card) == []


def test_a_mirrored_image_is_an_unexpected_laterality(truth, card):
    mirrored = Volume(np.ascontiguousarray(truth.array[::-1]), truth.affine_ras)  # the data flipped, the header not
    reasons = [r for r in review(mirrored, card) if r.code == UNEXPECTED_LATERALITY]
    assert {r.structures for r in reasons} == {("kidney_right", "kidney_left"), ("liver", "spleen")}
    assert all("to the patient's left" in r.message for r in reasons)


def test_an_implausible_volume_is_named_with_its_range(truth, card):
    affine = truth.affine_ras.copy()
    affine[:3, :3] *= 1.8  # every organ 5.8 times its volume: a 4.6 L liver
    reasons = [r for r in review(Volume(truth.array, affine), card) if r.code == VOLUME_OUTSIDE_ADULT_RANGE]
    assert ("liver",) in {r.structures for r in reasons}
    liver = next(r for r in reasons if r.structures == ("liver",))
    assert "600-3500 mL" in liver.message


def _shifted(volume: Volume, first_slice: int) -> np.ndarray:
    affine = volume.affine_ras.copy()
    affine[:3, 3] += affine[:3, 2] * first_slice
    return affine


def test_a_renal_mass_found_by_a_model_waits_for_a_radiologist(truth, card):
    from twin_imaging.models.structures import BUILTIN_STRUCTURES, structure_specs
    from twin_imaging.quality_review import RENAL_MASS_NOT_VALIDATED

    names = [s.name for s in card.structures] + ["renal_tumor", "renal_cyst"]
    with_masses = card.model_copy(update={"structures": structure_specs(names, BUILTIN_STRUCTURES)})
    labels = truth.array.copy()
    kidney = np.argwhere(labels == card.structure("kidney_left").label)
    centre = kidney[len(kidney) // 2]
    tumour_value = with_masses.structure("renal_tumor").label
    labels[tuple(slice(c - 3, c + 3) for c in centre)] = tumour_value
    reasons = review(truth.with_array(labels), with_masses)
    (mass,) = [r for r in reasons if r.code == RENAL_MASS_NOT_VALIDATED]
    assert mass.structures == ("renal_tumor",) and "synthetic lesions only" in mass.message
    assert "neoplasm" in mass.message.lower()
    assert not any(r.code == RENAL_MASS_NOT_VALIDATED for r in review(truth, with_masses))  # none found: no flag


def test_a_mass_left_out_for_touching_no_kidney_is_a_reason_from_one_millilitre(truth, card):
    from twin_imaging.models.structures import BUILTIN_STRUCTURES, structure_specs
    from twin_imaging.quality_review import UNATTACHED_MASS_LEFT_OUT

    names = [s.name for s in card.structures] + ["renal_tumor", "renal_cyst"]
    specs = structure_specs(names, BUILTIN_STRUCTURES)
    kidneys = ("kidney_right", "kidney_left")
    specs = [s.model_copy(update={"attached_to": kidneys}) if s.name.startswith("renal_") else s for s in specs]
    with_masses = card.model_copy(update={"structures": specs})
    measurements = measure_structures(truth, label_names=with_masses.label_names(), tubular=["aorta"])

    def left_out(dropped_ml):
        reasons = review_segmentation(measurements, truth.shape, truth.affine_ras, with_masses, dropped_ml)
        return [r for r in reasons if r.code == UNATTACHED_MASS_LEFT_OUT]

    (reason,) = left_out({"renal_tumor": 2.54, "renal_cyst": 0.01})
    assert reason.structures == ("renal_tumor",)  # the cyst's speck is not named
    assert "2.5 mL of" in reason.message and "right kidney or left kidney" in reason.message.lower()
    (together,) = left_out({"renal_tumor": 0.6, "renal_cyst": 0.6})  # 1.2 mL together
    assert together.structures == ("renal_tumor", "renal_cyst")
    assert left_out({"renal_cyst": 0.5, "renal_tumor": 0.4}) == [] and left_out({}) == []
    assert review_segmentation(measurements, truth.shape, truth.affine_ras, with_masses) == review(truth, with_masses)


def test_every_review_code_can_be_written_to_the_sr_and_results_json():
    """A reason the review can give must reach every output (a renal mass once crashed the SR writer)."""
    from typing import get_args

    from twin_imaging.io.dicom_sr import REVIEW_REASONS
    from twin_imaging.quality_review import REVIEW_CODES
    from twin_imaging.results import ReviewReasonReport

    assert set(REVIEW_REASONS) == set(REVIEW_CODES)
    assert set(get_args(ReviewReasonReport.model_fields["code"].annotation)) == set(REVIEW_CODES)
