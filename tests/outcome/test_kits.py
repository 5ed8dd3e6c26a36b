import json
import math

import numpy as np
import pytest

from tests.conftest import shared_file
from twin_imaging.errors import InputError
from twin_imaging.outcome import kits
from twin_imaging.outcome.kits import FEATURES_VERSION, load_kits_dataset

# A partial nephrectomy; a radical one in a 12-year-old (clinical input refused); a cryoablation (no scenario).
CASES = ("case_00534", "case_00031", "case_00422")


@pytest.fixture(scope="module")
def kits_root(shared_data, tmp_path_factory):
    """A KiTS folder with three real cases: their records, and links to their masks."""
    source = shared_file(shared_data, "kits23/kits23.json").parent
    by_id = {record["case_id"]: record for record in json.loads((source / "kits23.json").read_text())}
    records = [by_id[case_id] for case_id in CASES]
    root = tmp_path_factory.mktemp("kits")
    (root / "kits23.json").write_text(json.dumps(records))
    for case_id in CASES:
        (root / case_id).mkdir()
        (root / case_id / "segmentation.nii.gz").symlink_to(source / case_id / "segmentation.nii.gz")
    return root


def stub_features(labels):
    """Stands in for kidney_features + virtual_resection: counts of each label, nested, with a non-number."""
    counts = [np.count_nonzero(labels.array == label) for label in range(4)]
    if labels.label_names != {1: "kidney", 2: "tumor", 3: "cyst"}:
        raise AssertionError("KiTS label names were not set")
    return {
        "features": {
            "kidney_voxels": int(counts[1]),
            "tumor_voxels": int(counts[2]),
            "sizes": {"cyst": np.int64(counts[3])},
        },
        "resections": {
            "partial_nephrectomy": {"remnant_voxels": int(counts[1]), "note": "partial"},
            "radical_nephrectomy": {"remnant_voxels": 0, "note": "radical"},
        },
    }


@pytest.fixture
def stubbed(monkeypatch):
    monkeypatch.setattr(kits, "compute_case_features", stub_features)


def test_cases_are_kept_with_their_errors(kits_root):
    dataset = load_kits_dataset(kits_root, features=False)
    assert [case.case_id for case in dataset.cases] == list(CASES) and len(dataset) == 3
    partial, child, cryo = dataset.cases
    assert partial.clinical.age_years == 74 and partial.scenario.procedure == "partial_nephrectomy"
    assert partial.targets == {"any_complication": 0, "major_complication": 0, "prolonged_stay": 0, "egfr_decline": 1}
    assert child.clinical is None and "age_years: 12 is below the minimum 18" in child.clinical_error
    assert child.scenario.procedure == "radical_nephrectomy"
    assert cryo.scenario is None and cryo.kits_procedure == "cryoablation"
    assert [(case_id, stage) for case_id, stage, _ in dataset.errors()] == [
        ("case_00031", "clinical"),
        ("case_00422", "scenario"),
    ]
    assert partial.features is None and dataset.features_computed == 0


def test_features_in_a_pool_then_from_the_cache(kits_root, tmp_path, stubbed):
    cache = tmp_path / "cache"
    first = load_kits_dataset(kits_root, workers=2, cache_dir=cache)
    assert (first.features_computed, first.features_cached) == (3, 0)
    assert sorted(path.name for path in cache.iterdir()) == sorted(f"{case_id}.json" for case_id in CASES)
    entry = json.loads((cache / "case_00534.json").read_text())
    assert entry["features_version"] == FEATURES_VERSION and len(entry["mask_sha256"]) == 64

    second = load_kits_dataset(kits_root, workers=2, cache_dir=cache)
    assert (second.features_computed, second.features_cached) == (0, 3)
    for a, b in zip(first.cases, second.cases, strict=True):
        assert (a.features, a.resections, a.features_error) == (b.features, b.resections, b.features_error)
    partial = second.case("case_00534")
    assert partial.features["kidney_voxels"] > 0 and partial.features["sizes"]["cyst"] >= 0
    assert partial.actual_resection == partial.resections["partial_nephrectomy"]
    assert second.case("case_00031").actual_resection["note"] == "radical"
    assert second.case("case_00422").actual_resection is None  # cryoablation: no modelled scenario


def test_a_new_features_version_or_mask_recomputes(kits_root, tmp_path, stubbed, monkeypatch):
    cache = tmp_path / "cache"
    load_kits_dataset(kits_root, workers=1, cache_dir=cache)
    monkeypatch.setattr(kits, "FEATURES_VERSION", FEATURES_VERSION + "-next")
    assert load_kits_dataset(kits_root, workers=1, cache_dir=cache).features_computed == 3
    entry = json.loads((cache / "case_00534.json").read_text())
    (cache / "case_00534.json").write_text(json.dumps(entry | {"mask_sha256": "0" * 64}))
    again = load_kits_dataset(kits_root, workers=1, cache_dir=cache)
    assert (again.features_computed, again.features_cached) == (1, 2)


def test_a_refused_or_missing_mask_is_recorded_not_dropped(kits_root, tmp_path, monkeypatch):
    calls = []

    def refuse_cryo(labels):
        calls.append(1)
        if labels.array.shape == refused_shape:
            raise InputError("no kidney in the mask")
        return stub_features(labels)

    from twin_imaging.io.nifti import read_nifti

    refused_shape = read_nifti(kits_root / "case_00422" / "segmentation.nii.gz").array.shape
    monkeypatch.setattr(kits, "compute_case_features", refuse_cryo)
    root = tmp_path / "kits"
    root.mkdir()
    (root / "kits23.json").write_text((kits_root / "kits23.json").read_text())
    for case_id in CASES[1:]:
        (root / case_id).symlink_to(kits_root / case_id)
    cache = tmp_path / "cache"
    dataset = load_kits_dataset(root, workers=1, cache_dir=cache)
    assert len(dataset) == 3
    assert dataset.case("case_00534").features_error == "case_00534/segmentation.nii.gz not found"
    assert dataset.case("case_00422").features_error == "no kidney in the mask"
    assert dataset.case("case_00031").features_error is None
    assert ("case_00422", "features", "no kidney in the mask") in dataset.errors()
    calls.clear()
    again = load_kits_dataset(root, workers=1, cache_dir=cache)  # a refusal is cached too
    assert not calls and again.case("case_00422").features_error == "no kidney in the mask"


def test_table(kits_root, tmp_path, stubbed):
    dataset = load_kits_dataset(kits_root, workers=1, cache_dir=tmp_path / "cache")
    table = dataset.table()
    assert list(table["case_id"]) == list(CASES)
    assert list(table["clinical_ok"]) == [True, False, True] and list(table["scenario_ok"]) == [True, True, False]
    assert {len(column) for column in table.values()} == {3}
    assert table["target.any_complication"].dtype == np.float64
    assert table["clinical.age_years"][0] == 74 and math.isnan(table["clinical.age_years"][1])
    assert list(table["clinical.procedure_radical"][:2]) == [0.0, 1.0] and math.isnan(
        table["clinical.procedure_radical"][2]
    )
    assert "mask.kidney_voxels" in table and "mask.sizes.cyst" in table
    assert "resection.remnant_voxels" in table and "resection.note" not in table
    assert table["resection.remnant_voxels"][1] == 0 and math.isnan(table["resection.remnant_voxels"][2])

    imputation = {"bmi_kg_m2": 30.0, "comorbidities.aids": False}
    imputed = dataset.table(imputation=imputation)
    assert np.array_equal(imputed["clinical.age_years"], table["clinical.age_years"], equal_nan=True)


def test_missing_or_bad_kits_json(tmp_path):
    with pytest.raises(InputError, match=r"kits23.json not found"):
        load_kits_dataset(tmp_path)
    (tmp_path / "kits23.json").write_text('{"case_id": 1}')
    with pytest.raises(InputError, match="must be a list of records"):
        load_kits_dataset(tmp_path)


def test_real_features(kits_root, tmp_path):
    pytest.importorskip("twin_imaging.outcome.kidney_features")
    pytest.importorskip("twin_imaging.outcome.resection")
    dataset = load_kits_dataset(kits_root, workers=2, cache_dir=tmp_path / "cache")
    partial = dataset.case("case_00534")
    assert partial.features_error is None, partial.features_error
    assert partial.features and set(partial.resections) == {"partial_nephrectomy", "radical_nephrectomy"}
    json.dumps(partial.features)
    table = dataset.table()
    assert any(name.startswith("mask.") for name in table) and any(name.startswith("resection.") for name in table)
    again = load_kits_dataset(kits_root, workers=2, cache_dir=tmp_path / "cache")
    assert again.features_cached == 3 and again.case("case_00534").features == partial.features
