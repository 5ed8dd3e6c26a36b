"""Datalists (MSD-style dataset.json): path resolution, validation with named problems, folds, and label lookups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from twin_imaging.datalist import DatalistCase, label_lookup, read_datalist
from twin_imaging.errors import InputError

CASES = ("a", "b", "c")


def _touch(root: Path, *relative: str) -> None:
    for name in relative:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stand-in for an image")


def _dataset(root: Path) -> None:
    """imagesTr/{a,b,c}.nii.gz with labels, and imagesTs/t.nii.gz, under ``root``."""
    _touch(root, *(f"imagesTr/{c}.nii.gz" for c in CASES), *(f"labelsTr/{c}.nii.gz" for c in CASES))
    _touch(root, "imagesTs/t.nii.gz")


def _document(**overrides: Any) -> dict[str, Any]:
    document = {
        "name": "tiny",
        "licence": "CC BY-SA 4.0",
        "reference": "expert annotations",
        "labels": {"0": "background", "1": "liver", "2": "spleen"},
        "training": [
            {"image": f"imagesTr/{c}.nii.gz", "label": f"labelsTr/{c}.nii.gz", "fold": i % 2}
            for i, c in enumerate(CASES)
        ],
        "test": [{"image": "imagesTs/t.nii.gz"}],
    }
    document.update(overrides)
    return document


def _write(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _message(path: Path, **kwargs: Any) -> str:
    with pytest.raises(InputError) as caught:
        read_datalist(path, **kwargs)
    return str(caught.value)


def test_relative_paths_resolve_against_the_datalist_folder(tmp_path):
    _dataset(tmp_path / "tiny")
    path = _write(tmp_path / "tiny" / "dataset.json", _document())

    datalist = read_datalist(path)

    assert datalist.name == "tiny"
    assert datalist.licence == "CC BY-SA 4.0"
    assert datalist.reference == "expert annotations"
    assert datalist.label_names == {1: "liver", 2: "spleen"}  # background left out
    assert datalist.training[0] == DatalistCase(
        case_id="a",
        image=tmp_path / "tiny" / "imagesTr" / "a.nii.gz",
        label=tmp_path / "tiny" / "labelsTr" / "a.nii.gz",
        fold=0,
    )
    assert [c.case_id for c in datalist.training] == list(CASES)
    assert all(c.image.is_file() and c.label.is_file() for c in datalist.training)


def test_defaults_for_name_licence_and_reference(tmp_path):
    _dataset(tmp_path)
    path = _write(tmp_path / "my_set.json", {"license": "MIT", "training": ["imagesTr/a.nii.gz"]})

    datalist = read_datalist(path)

    assert datalist.name == "my_set"
    assert datalist.licence == "MIT"
    assert datalist.reference == "unknown"
    assert datalist.label_names == {}
    assert datalist.training == (DatalistCase(case_id="a", image=tmp_path / "imagesTr" / "a.nii.gz", label=None),)


def test_data_root_overrides_the_datalist_folder(tmp_path):
    _dataset(tmp_path / "elsewhere")
    path = _write(tmp_path / "lists" / "dataset.json", _document())

    datalist = read_datalist(path, data_root=tmp_path / "elsewhere")

    assert datalist.training[1].image == tmp_path / "elsewhere" / "imagesTr" / "b.nii.gz"
    assert datalist.test[0].image == tmp_path / "elsewhere" / "imagesTs" / "t.nii.gz"


def test_relative_to_shared_data_uses_the_settings_folder(tmp_path, monkeypatch):
    shared = tmp_path / "shared_data"
    _dataset(shared / "tiny")
    training = [{"image": "tiny/imagesTr/a.nii.gz", "label": "tiny/labelsTr/a.nii.gz"}]
    path = _write(tmp_path / "lists" / "dataset.json", {"relative_to_shared_data": True, "training": training})
    monkeypatch.setenv("TWIN_IMAGING_SHARED_DATA_DIR", str(shared))

    datalist = read_datalist(path)

    assert datalist.training[0].image == shared / "tiny" / "imagesTr" / "a.nii.gz"
    assert datalist.training[0].label == shared / "tiny" / "labelsTr" / "a.nii.gz"


def test_data_root_wins_over_relative_to_shared_data(tmp_path, monkeypatch):
    _dataset(tmp_path / "root")
    monkeypatch.setenv("TWIN_IMAGING_SHARED_DATA_DIR", str(tmp_path / "nowhere"))
    path = _write(tmp_path / "dataset.json", _document(relative_to_shared_data=True))

    datalist = read_datalist(path, data_root=tmp_path / "root")

    assert datalist.training[0].image == tmp_path / "root" / "imagesTr" / "a.nii.gz"


@pytest.mark.parametrize("missing", ["imagesTr/b.nii.gz", "labelsTr/c.nii.gz", "imagesTs/t.nii.gz"])
def test_a_missing_image_or_label_is_named(tmp_path, missing):
    _dataset(tmp_path)
    (tmp_path / missing).unlink()
    path = _write(tmp_path / "dataset.json", _document())

    message = _message(path)

    assert str(tmp_path / missing) in message
    assert "does not exist" in message


def test_missing_datalist_is_named(tmp_path):
    assert "datalist not found" in _message(tmp_path / "absent.json")


def test_non_json_is_refused(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text("{'training': []", encoding="utf-8")

    assert "dataset.json is not a readable JSON datalist" in _message(path)


@pytest.mark.parametrize("document", [[], "training", {"training": {"a": 1}}, {"training": "imagesTr/a.nii.gz"}])
def test_a_datalist_must_be_an_object_with_a_training_list(tmp_path, document):
    path = _write(tmp_path / "dataset.json", document)

    assert "a JSON object with a 'training' list" in _message(path)


def test_test_section_must_be_a_list(tmp_path):
    _dataset(tmp_path)
    path = _write(tmp_path / "dataset.json", _document(test={"imagesTs/t.nii.gz": 1}))

    assert "'test' must be a list" in _message(path)


@pytest.mark.parametrize("entry", [{"label": "labelsTr/a.nii.gz"}, {"image": None}, {"image": 3}, {"image": ""}, 7])
def test_a_case_without_an_image_path_is_refused(tmp_path, entry):
    _dataset(tmp_path)
    training = [*_document()["training"], entry]
    path = _write(tmp_path / "dataset.json", _document(training=training))

    message = _message(path)

    assert "training[3]" in message and "'image'" in message


def test_a_non_path_label_is_refused(tmp_path):
    _dataset(tmp_path)
    path = _write(tmp_path / "dataset.json", _document(training=[{"image": "imagesTr/a.nii.gz", "label": 1}]))

    assert "training[0]: 'label' must be a path" in _message(path)


@pytest.mark.parametrize("fold", ["x", 1.5, True])
def test_a_non_integer_fold_is_refused(tmp_path, fold):
    _dataset(tmp_path)
    path = _write(tmp_path / "dataset.json", _document(training=[{"image": "imagesTr/a.nii.gz", "fold": fold}]))

    assert "'fold' must be an integer" in _message(path)


def test_duplicate_case_ids_are_refused(tmp_path):
    _dataset(tmp_path)
    _touch(tmp_path, "other/a.nii.gz")
    training = [{"image": "imagesTr/a.nii.gz"}, {"image": "other/a.nii.gz"}]
    path = _write(tmp_path / "dataset.json", _document(training=training))

    assert "case ids in 'training' are not unique" in _message(path)


def test_explicit_case_ids_make_same_named_files_distinct(tmp_path):
    _dataset(tmp_path)
    _touch(tmp_path, "other/a.nii.gz")
    training = [{"image": "imagesTr/a.nii.gz"}, {"image": "other/a.nii.gz", "case_id": "a2"}]
    path = _write(tmp_path / "dataset.json", _document(training=training))

    assert [c.case_id for c in read_datalist(path).training] == ["a", "a2"]


@pytest.mark.parametrize("labels", [{"one": "liver"}, {"1.5": "liver"}, ["liver"], 3])
def test_labels_must_map_integers_to_names(tmp_path, labels):
    _dataset(tmp_path)
    path = _write(tmp_path / "dataset.json", _document(labels=labels))

    assert "'labels' must map integer values to names" in _message(path)


def test_folds_filter_and_test_section(tmp_path):
    _dataset(tmp_path)
    datalist = read_datalist(_write(tmp_path / "dataset.json", _document()))

    assert [c.case_id for c in datalist.cases()] == ["a", "b", "c"]
    assert [c.case_id for c in datalist.cases(folds=[0])] == ["a", "c"]
    assert [c.case_id for c in datalist.cases(folds=[1])] == ["b"]
    assert [c.case_id for c in datalist.cases(folds=[0, 1])] == ["a", "b", "c"]
    assert datalist.cases(folds=[]) == []
    assert datalist.cases(folds=[5]) == []
    assert datalist.cases(section="test") == [
        DatalistCase(case_id="t", image=tmp_path / "imagesTs" / "t.nii.gz", label=None)
    ]
    assert datalist.cases(section="test", folds=[0]) == []


def test_label_lookup_by_name():
    lookup = label_lookup({1: "spleen", 2: "liver", 3: "brain", 7: "kidney_left"}, ["liver", "spleen", "kidney_left"])

    assert lookup.shape == (256,) and lookup.dtype == np.uint8
    assert lookup[[0, 1, 2, 3, 7]].tolist() == [0, 2, 1, 0, 3]  # brain is not in the model: background
    assert np.count_nonzero(lookup) == 3


def test_label_lookup_explicit_mapping_overrides_names():
    source = {1: "liver", 2: "spleen", 5: "hepar"}

    lookup = label_lookup(source, ["liver", "spleen"], mapping={5: "liver", 2: "spleen"})

    assert lookup[5] == 1 and lookup[2] == 2
    assert lookup[1] == 0  # the mapping decides alone: source label 1 is not mapped
    assert np.count_nonzero(lookup) == 2


def test_label_lookup_accepts_string_keys_from_config_files():
    assert label_lookup({}, ["liver"], mapping={"4": "liver"})[4] == 1


@pytest.mark.parametrize("value", [256, -1, 1000])
def test_label_lookup_refuses_values_outside_0_255(value):
    with pytest.raises(InputError, match=rf"{value} is outside 0\.\.255"):
        label_lookup({value: "liver"}, ["liver"])
    with pytest.raises(InputError, match=r"outside 0\.\.255"):
        label_lookup({}, ["liver"], mapping={value: "liver"})


def test_label_lookup_refuses_a_non_integer_source_value():
    with pytest.raises(InputError, match="'x' is not an integer"):
        label_lookup({}, ["liver"], mapping={"x": "liver"})


def test_label_lookup_refuses_a_mapping_to_a_structure_the_model_lacks():
    with pytest.raises(InputError, match=r"does not have: \['brain', 'heart'\]"):
        label_lookup({1: "liver"}, ["liver", "spleen"], mapping={1: "liver", 2: "heart", 3: "brain"})


def test_project_datalist_reads_over_shared_data(shared_data):
    path = Path(__file__).resolve().parents[1] / "training" / "datalists" / "abdomen_ct_organs.json"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    try:
        datalist = read_datalist(path)
    except InputError as exc:
        pytest.skip(f"the project's datalist needs files not in {shared_data}: {exc}")

    assert datalist.training
    assert all(str(c.image).startswith(str(shared_data)) for c in datalist.training)
    assert "spleen" in datalist.label_names.values()
