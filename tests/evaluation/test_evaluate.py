"""Scoring a model package on a labelled datalist, through the library and through ``twin-imaging evaluate``.

Two phantom cases, scored with the threshold segmenter: case_a's reference is the threshold of the noise-free
phantom (close to the prediction, not equal), case_b's is the prediction itself with its bone removed and half of its
soft tissue erased. The reference maps use source values 5 (soft tissue) and 3 (bone), so label mapping matters.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from twin_imaging.cli import cli
from twin_imaging.datalist import read_datalist
from twin_imaging.errors import InputError
from twin_imaging.evaluation.evaluate import evaluate_package, format_summary_table
from twin_imaging.evaluation.metrics import score_label_maps, summarize_scores
from twin_imaging.inference.segment import Segmenter
from twin_imaging.io import read_image, write_nifti
from twin_imaging.models.card import EvaluationRecord, ModelCard
from twin_imaging.testing import PhantomGeometry, make_phantom, threshold_labels, write_threshold_model_package

pytest.importorskip("onnx")  # builds the test model

SOURCE_VALUE = {"soft_tissue": 5, "bone": 3}  # the reference maps' own label values
MODEL_LABELS = {1: "soft_tissue", 2: "bone"}
CASES = {
    "case_a": (PhantomGeometry(shape=(64, 64, 16), spacing_mm=(5.0, 5.0, 6.0)), 1, 0),  # geometry, seed, fold
    "case_b": (PhantomGeometry(shape=(72, 60, 20), spacing_mm=(4.5, 4.5, 5.0)), 2, 1),
}


class Dataset:
    def __init__(self, root):
        self.root = root
        self.package = write_threshold_model_package(root / "package")
        self.segmenter = Segmenter(self.package)
        self.direct: dict[str, dict] = {}  # case → structure → StructureScore, scored here without evaluate_package
        entries = []
        for case_id, (geometry, seed, fold) in CASES.items():
            image_path = write_nifti(make_phantom(geometry, seed=seed).image, root / "imagesTr" / f"{case_id}.nii.gz")
            image = read_image(image_path)
            predicted = self.segmenter.segment(image).labels.array
            if case_id == "case_a":
                reference = threshold_labels(make_phantom(geometry, noise_hu_sd=0.0).image.array)
            else:
                reference = predicted.copy()
                reference[reference == 2] = 0
                reference[:, :, : geometry.shape[2] // 2] = 0
            source = np.zeros(reference.shape, dtype=np.uint8)
            for label, name in MODEL_LABELS.items():
                source[reference == label] = SOURCE_VALUE[name]
            label_path = write_nifti(image.with_array(source, label_names={}), root / "labelsTr" / f"{case_id}.nii.gz")
            entries.append({"image": f"imagesTr/{case_id}.nii.gz", "label": f"labelsTr/{case_id}.nii.gz", "fold": fold})
            self.direct[case_id] = score_label_maps(
                predicted, reference, image.spacing_mm, label_names=MODEL_LABELS, tolerance_mm=2.0
            )
            assert read_image(label_path).shape == image.shape
        self.by_name = self._datalist("by_name", {"0": "background", "3": "bone", "5": "soft_tissue"}, entries)
        self.by_value = self._datalist("by_value", {"3": "dense", "5": "tissue"}, entries)
        missing = [{**entries[0]}, {"image": "imagesTr/case_missing.nii.gz", "label": entries[1]["label"]}]
        self.missing = self._datalist("missing", {"3": "bone", "5": "soft_tissue"}, missing)

    def _datalist(self, name, labels, entries):
        path = self.root / f"{name}.json"
        document = {"name": f"phantoms_{name}", "licence": "CC0", "reference": "synthetic", "labels": labels}
        path.write_text(json.dumps({**document, "training": entries}))
        return path

    def direct_summary(self, case_ids=tuple(CASES)) -> dict:
        return summarize_scores([self.direct[case] for case in case_ids])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    return Dataset(tmp_path_factory.mktemp("evaluate"))


@pytest.fixture(scope="module")
def result(dataset):
    return evaluate_package(dataset.package, read_datalist(dataset.by_name), segmenter=dataset.segmenter)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_scores_equal(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for name, score in expected.items():
        got = actual[name]
        for field in ("dice", "nsd", "hd95_mm"):
            assert _same(getattr(got, field), getattr(score, field)), (name, field, got, score)
        assert (got.reference_voxels, got.predicted_voxels) == (score.reference_voxels, score.predicted_voxels)
        assert got.reference_present == score.reference_present


def test_the_cases_are_not_trivial(dataset):
    a, b = dataset.direct["case_a"], dataset.direct["case_b"]
    assert 0.9 < a["soft_tissue"].dice < 1.0 and 0.8 < a["bone"].dice < 1.0
    assert 0.3 < b["soft_tissue"].dice < 0.8
    assert not b["bone"].reference_present and b["bone"].predicted_voxels > 0


def test_per_case_scores_equal_direct_scoring(dataset, result):
    assert result.model_id == "threshold_test"
    assert result.dataset == "phantoms_by_name"
    assert result.case_ids == ("case_a", "case_b")
    for case_id in CASES:
        assert_scores_equal(result.per_case[case_id], dataset.direct[case_id])
    assert result.summary == dataset.direct_summary()
    assert result.summary["soft_tissue"]["n_cases"] == 2 and result.summary["bone"]["n_cases"] == 1
    assert result.summary["bone"]["dice"] == dataset.direct["case_a"]["bone"].dice


def test_progress_per_case_and_folds(dataset):
    seen = []
    fold_one = evaluate_package(
        dataset.package,
        read_datalist(dataset.by_name),
        folds=[1],
        segmenter=dataset.segmenter,
        on_case=lambda case_id, scores: seen.append((case_id, sorted(scores))),
    )
    assert seen == [("case_b", ["bone", "soft_tissue"])]
    assert fold_one.case_ids == ("case_b",)
    assert fold_one.summary == dataset.direct_summary(["case_b"])


def test_label_mapping_by_explicit_values(dataset, result):
    datalist = read_datalist(dataset.by_value)
    unmatched = evaluate_package(dataset.package, datalist, folds=[0], segmenter=dataset.segmenter)
    assert all(values["n_cases"] == 0 for values in unmatched.summary.values())  # no source name is a structure

    mapped = evaluate_package(
        dataset.package, datalist, label_mapping={5: "soft_tissue", 3: "bone"}, segmenter=dataset.segmenter
    )
    for case_id in CASES:
        assert_scores_equal(mapped.per_case[case_id], result.per_case[case_id])

    with pytest.raises(InputError, match="liver"):
        evaluate_package(dataset.package, datalist, label_mapping={5: "liver"}, segmenter=dataset.segmenter)


def test_to_record_is_a_valid_card_evaluation(dataset, result):
    record = result.to_record(dataset="two phantoms", split="synthetic, never trained on", reference="thresholds")
    assert EvaluationRecord.model_validate_json(record.model_dump_json()) == record
    assert (record.n_cases, record.nsd_tolerance_mm) == (2, 2.0)
    expected = dataset.direct_summary()
    assert [m.structure for m in record.structures] == list(expected)
    for metrics in record.structures:
        values = expected[metrics.structure]
        assert metrics.n_cases == values["n_cases"]
        for field in ("dice", "nsd", "hd95_mm"):
            assert getattr(metrics, field) == pytest.approx(values[field], abs=5e-5)
    card = dataset.package.card.model_copy(update={"evaluations": (record,)})
    assert ModelCard.model_validate_json(card.model_dump_json()).evaluations == (record,)


def _refuse_constant(name: str):
    raise AssertionError(f"the JSON holds {name}, which strict JSON does not allow")


def test_cli_prints_the_table_and_writes_strict_json(dataset, tmp_path):
    out = tmp_path / "scores" / "out.json"
    run = CliRunner().invoke(cli, ["evaluate", str(dataset.package.root), str(dataset.by_name), "--json", str(out)])
    assert run.exit_code == 0, run.output
    expected = dataset.direct_summary()
    assert format_summary_table(expected) in run.stdout
    for name in MODEL_LABELS.values():
        assert f"| {name} | {expected[name]['n_cases']} | {expected[name]['dice']:.3f} |" in run.stdout
    assert "case_a: Dice" in run.stderr and "case_b: Dice" in run.stderr

    document = json.loads(out.read_text(), parse_constant=_refuse_constant)
    assert document["summary"] == expected
    assert document["model_id"] == "threshold_test"
    assert document["onnx_sha256"] == dataset.package.card.onnx.sha256
    assert document["folds"] is None
    assert list(document["per_case"]) == ["case_a", "case_b"]
    for case_id, scores in dataset.direct.items():
        for name, score in scores.items():
            written = document["per_case"][case_id][name]
            assert written["dice"] == score.dice
            assert written["reference_voxels"] == score.reference_voxels
    assert document["per_case"]["case_b"]["bone"]["hd95_mm"] is None  # inf: no bone in the reference


def test_cli_fold_selects_cases(dataset, tmp_path):
    out = tmp_path / "fold1.json"
    args = ["evaluate", str(dataset.package.root), str(dataset.by_name), "--fold", "1", "--json", str(out)]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    assert "1 case(s)" in run.stdout
    document = json.loads(out.read_text(), parse_constant=_refuse_constant)
    assert document["folds"] == [1]
    assert list(document["per_case"]) == ["case_b"]
    assert document["summary"] == dataset.direct_summary(["case_b"])
    assert document["summary"]["bone"]["n_cases"] == 0


def test_cli_names_a_missing_file_without_a_traceback(dataset):
    run = CliRunner().invoke(cli, ["evaluate", str(dataset.package.root), str(dataset.missing)])
    assert run.exit_code == 1
    assert isinstance(run.exception, SystemExit)
    assert "case_missing.nii.gz" in run.stderr and "does not exist" in run.stderr
    assert "Traceback" not in run.output
