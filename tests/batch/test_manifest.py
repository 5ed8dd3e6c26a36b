"""Cohort manifests: CSV or JSON, paths relative to the manifest, every problem named by its row, nothing run where
any row is wrong."""

from __future__ import annotations

import json

import pytest

from twin_imaging.batch.manifest import BatchItem, read_manifest
from twin_imaging.errors import InputError


@pytest.fixture
def archive(tmp_path):
    (tmp_path / "ct" / "0001").mkdir(parents=True)
    (tmp_path / "ct" / "0002.zip").write_bytes(b"PK")
    (tmp_path / "ct" / "0003.nii.gz").write_bytes(b"x")
    return tmp_path


def test_a_csv_manifest_with_relative_paths_comments_and_dicomweb(archive):
    manifest = archive / "cohort.csv"
    manifest.write_text(
        "source,patient_id\n# the first batch\nct/0001,\nct/0002.zip,\nct/0003.nii.gz,ANON-3\n"
        "dicomweb:1.2.840.113619.2.55.3,\n",
        encoding="utf-8",
    )
    items = read_manifest(manifest)
    assert [i.row for i in items] == [1, 2, 3, 4]
    assert items[0].source == str(archive / "ct" / "0001") and items[0].patient_id is None
    assert items[2].patient_id == "ANON-3"
    assert items[3].is_dicomweb and items[3].study_instance_uid == "1.2.840.113619.2.55.3"
    assert items[2].label == "row 3 (0003.nii.gz)" and "ANON" not in items[2].label


def test_a_json_manifest(archive):
    manifest = archive / "cohort.json"
    manifest.write_text(json.dumps({"studies": [{"source": "ct/0001"}, {"source": "ct/0002.zip"}]}), encoding="utf-8")
    assert read_manifest(manifest) == [
        BatchItem(1, str(archive / "ct" / "0001")),
        BatchItem(2, str(archive / "ct" / "0002.zip")),
    ]


def test_every_problem_is_named_by_its_row_and_nothing_runs(archive):
    manifest = archive / "bad.csv"
    manifest.write_text(
        "source,patient_id\nct/0001,\n,\nct/missing,\nct/0003.nii.gz,\ndicomweb:not-a-uid,\nct/0001,\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError) as error:
        read_manifest(manifest)
    message = str(error.value)
    assert "nothing was run" in message
    for expected in ("row 2: no source", "row 3: ct/missing does not exist", "row 4: a NIfTI carries no patient",
                     "row 5: 'dicomweb:not-a-uid'", "row 6:", "listed already (row 1)"):  # fmt: skip
        assert expected in message, expected


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.csv", "path\nct/0001\n", "needs a header row with a 'source' column"),
        ("a.csv", "source\n", "lists no study"),
        ("a.json", "{not json", "is not JSON"),
        ("a.json", '{"studies": "ct/0001"}', "must be a list of objects"),
    ],
)
def test_a_malformed_manifest_says_what_is_wrong(archive, name, text, expected):
    (archive / name).write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=expected):
        read_manifest(archive / name)
    with pytest.raises(InputError, match="cannot be read"):
        read_manifest(archive / "absent.csv")
