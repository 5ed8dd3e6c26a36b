"""Model packages: written atomically, loaded with a sha256 check, refused with a readable message when broken."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from pathlib import Path

import pytest

from tests.models.test_card import make_card, make_refinement
from twin_imaging import files as files_module
from twin_imaging.errors import ModelError
from twin_imaging.models.package import (
    CARD_FILE,
    default_segmentation_package,
    load_model_package,
    write_model_package,
)

FAKE_ONNX = b"not really onnx\x00" + bytes(range(256)) * 8


@pytest.fixture
def onnx_source(tmp_path: Path) -> Path:
    path = tmp_path / "export" / "network.onnx"
    path.parent.mkdir()
    path.write_bytes(FAKE_ONNX)
    return path


@pytest.fixture
def package_dir(tmp_path: Path, onnx_source: Path) -> Path:
    folder = tmp_path / "models" / "tiny_abdomen"
    write_model_package(folder, make_card(), onnx_source)
    return folder


def test_write_then_load_gives_the_card_with_the_file_hash(tmp_path, onnx_source):
    card = make_card()
    folder = tmp_path / "out" / "nested" / "tiny_abdomen"

    written = write_model_package(folder, card, onnx_source)
    loaded = load_model_package(folder)

    assert loaded.card == written.card
    assert loaded.root == folder
    assert loaded.model_id == "tiny_abdomen"
    assert loaded.onnx_path == folder / "tiny_abdomen.onnx"
    assert loaded.onnx_path.read_bytes() == FAKE_ONNX
    assert loaded.card.onnx.sha256 == hashlib.sha256(FAKE_ONNX).hexdigest()
    assert loaded.card.onnx.size_bytes == len(FAKE_ONNX)
    # everything but the hash and size is what was given
    expected = card.model_dump()
    expected["onnx"].update(sha256=loaded.card.onnx.sha256, size_bytes=len(FAKE_ONNX))
    assert loaded.card.model_dump() == expected
    assert card.onnx.sha256 == "0" * 64  # the caller's card is not changed


def test_written_files_are_readable_by_others_and_no_temp_files_remain(package_dir):
    names = sorted(p.name for p in package_dir.iterdir())

    assert names == [CARD_FILE, "tiny_abdomen.onnx"]
    for name in names:
        assert stat.S_IMODE((package_dir / name).stat().st_mode) == 0o644, name
    json.loads((package_dir / CARD_FILE).read_text(encoding="utf-8"))


def test_rewriting_a_package_replaces_it(package_dir, tmp_path):
    newer = tmp_path / "newer.onnx"
    newer.write_bytes(b"a different network")

    write_model_package(package_dir, make_card(version="0.2.0"), newer)
    loaded = load_model_package(package_dir)

    assert loaded.card.version == "0.2.0"
    assert loaded.card.onnx.size_bytes == len(b"a different network")
    assert sorted(p.name for p in package_dir.iterdir()) == [CARD_FILE, "tiny_abdomen.onnx"]


def test_a_failed_write_leaves_the_old_package_and_no_temp_files(package_dir, tmp_path, monkeypatch):
    before = {p.name: p.read_bytes() for p in package_dir.iterdir()}
    newer = tmp_path / "newer.onnx"
    newer.write_bytes(b"a different network")

    def broken_copy(source, target):
        Path(target).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(files_module.shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        write_model_package(package_dir, make_card(version="0.2.0"), newer)

    assert {p.name: p.read_bytes() for p in package_dir.iterdir()} == before
    assert load_model_package(package_dir).card.version == "0.1.0"


def test_loading_by_card_path_works(package_dir):
    by_folder = load_model_package(package_dir)
    by_card = load_model_package(package_dir / CARD_FILE)

    assert by_card.card == by_folder.card
    assert by_card.root == package_dir


def test_one_changed_byte_is_refused_naming_the_mismatch(package_dir):
    onnx = package_dir / "tiny_abdomen.onnx"
    data = bytearray(onnx.read_bytes())
    data[100] ^= 0x01
    onnx.write_bytes(bytes(data))
    expected = load_model_package(package_dir, verify=False).card.onnx.sha256
    actual = hashlib.sha256(bytes(data)).hexdigest()

    with pytest.raises(ModelError) as caught:
        load_model_package(package_dir)

    message = str(caught.value)
    assert "tiny_abdomen.onnx" in message and "tiny_abdomen" in message
    assert actual[:12] in message and expected[:12] in message
    assert "changed or damaged" in message


def test_a_truncated_file_is_refused(package_dir):
    onnx = package_dir / "tiny_abdomen.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1])

    with pytest.raises(ModelError, match="sha256"):
        load_model_package(package_dir)


def test_verify_false_skips_the_hash_check(package_dir):
    (package_dir / "tiny_abdomen.onnx").write_bytes(b"swapped")

    loaded = load_model_package(package_dir, verify=False)

    assert loaded.onnx_path.read_bytes() == b"swapped"


def test_missing_onnx_file_is_named(package_dir):
    (package_dir / "tiny_abdomen.onnx").unlink()

    for verify in (True, False):
        with pytest.raises(ModelError, match=r"ONNX file tiny_abdomen\.onnx is missing"):
            load_model_package(package_dir, verify=verify)


def test_missing_card_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(ModelError, match=f"no model package at .*{CARD_FILE} not found"):
        load_model_package(empty)
    with pytest.raises(ModelError, match="not found"):
        load_model_package(tmp_path / "does_not_exist")


def _assert_readable(message: str) -> None:
    assert "\n" not in message
    assert len(message) < 600
    assert "errors.pydantic.dev" not in message
    assert "validation error" not in message


def test_invalid_json_card_is_refused_readably(package_dir):
    (package_dir / CARD_FILE).write_text("{not json", encoding="utf-8")

    with pytest.raises(ModelError) as caught:
        load_model_package(package_dir)

    message = str(caught.value)
    assert CARD_FILE in message
    assert "Invalid JSON" in message and ": :" not in message
    _assert_readable(message)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_schema_invalid_card_is_refused_readably(package_dir):
    document = json.loads((package_dir / CARD_FILE).read_text(encoding="utf-8"))
    del document["inference"]["num_classes"]
    document["structures"][0]["color_rgb"] = [300, 0, 0]
    document["unexpected"] = True
    (package_dir / CARD_FILE).write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(ModelError) as caught:
        load_model_package(package_dir)

    message = str(caught.value)
    assert "is not a valid model card" in message
    assert "inference.num_classes" in message
    assert "structures.0.color_rgb" in message
    assert "unexpected" in message
    _assert_readable(message)


def test_many_schema_problems_are_summarised_not_dumped(package_dir):
    # an empty object lacks every required field: the message lists a few, on one line
    (package_dir / CARD_FILE).write_text("{}", encoding="utf-8")

    with pytest.raises(ModelError) as caught:
        load_model_package(package_dir)

    message = str(caught.value)
    assert "is not a valid model card" in message
    assert "model_id: Field required" in message
    assert message.count("Field required") == 5
    assert message.endswith("more")
    _assert_readable(message)


def test_a_card_that_is_not_an_object_is_refused(package_dir):
    (package_dir / CARD_FILE).write_text("[1, 2]", encoding="utf-8")

    with pytest.raises(ModelError, match="is not a valid model card: Input should be an object"):
        load_model_package(package_dir)


def test_card_level_rule_is_checked_on_load(package_dir):
    document = json.loads((package_dir / CARD_FILE).read_text(encoding="utf-8"))
    document["inference"]["num_classes"] = 2
    (package_dir / CARD_FILE).write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(ModelError, match="beyond the network's 2 classes"):
        load_model_package(package_dir)


def test_the_earlier_packages_weights_are_removed_but_no_other_file(package_dir, onnx_source):
    """A package written into a folder that held another model's package: that model's ONNX goes (it would sit
    beside the new card as if it were its own); a user's other ONNX files and the source stay."""
    onnx = {"file": "older_model.onnx", "sha256": "0" * 64, "size_bytes": 0, "opset": 17}
    write_model_package(package_dir, make_card(model_id="older_model", onnx=onnx), onnx_source)
    assert (package_dir / "older_model.onnx").is_file()  # the folder now holds older_model's package only
    assert not (package_dir / "tiny_abdomen.onnx").exists()
    (package_dir / "users_own.onnx").write_bytes(b"an export the package never named")
    source = package_dir / "network.onnx"  # an export may leave its file in the folder it packages into
    source.write_bytes(onnx_source.read_bytes())

    write_model_package(package_dir, make_card(), source)

    names = sorted(p.name for p in package_dir.iterdir())
    assert names == [CARD_FILE, "network.onnx", "tiny_abdomen.onnx", "users_own.onnx"]
    assert load_model_package(package_dir).onnx_path.read_bytes() == FAKE_ONNX


def test_writing_around_an_onnx_already_in_the_folder(tmp_path):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "tiny_abdomen.onnx").write_bytes(FAKE_ONNX)

    loaded = write_model_package(folder, make_card(), folder / "tiny_abdomen.onnx")

    assert loaded.card.onnx.sha256 == hashlib.sha256(FAKE_ONNX).hexdigest()
    assert (folder / "tiny_abdomen.onnx").read_bytes() == FAKE_ONNX
    assert sorted(p.name for p in folder.iterdir()) == [CARD_FILE, "tiny_abdomen.onnx"]


def test_default_segmentation_package_follows_settings(tmp_path, onnx_source, monkeypatch):
    models_dir = tmp_path / "models"
    write_model_package(models_dir / "tiny_abdomen", make_card(), onnx_source)
    monkeypatch.setenv("TWIN_IMAGING_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("TWIN_IMAGING_DEFAULT_SEGMENTATION_MODEL", "tiny_abdomen")

    loaded = default_segmentation_package()

    assert loaded.model_id == "tiny_abdomen"
    assert loaded.root == models_dir / "tiny_abdomen"


def test_default_segmentation_package_missing_is_a_model_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_IMAGING_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("TWIN_IMAGING_DEFAULT_SEGMENTATION_MODEL", "no_such_model")

    with pytest.raises(ModelError, match="no_such_model"):
        default_segmentation_package()


def test_package_copied_elsewhere_still_loads(package_dir, tmp_path):
    copy = tmp_path / "copied"
    shutil.copytree(package_dir, copy)

    assert load_model_package(copy).card == load_model_package(package_dir).card


@pytest.fixture
def cascade_dir(tmp_path: Path, onnx_source: Path) -> Path:
    refinement = tmp_path / "export" / "refinement.onnx"
    refinement.write_bytes(FAKE_ONNX[::-1])
    folder = tmp_path / "models" / "tiny_cascade"
    write_model_package(folder, make_card(refinement=make_refinement()), onnx_source, refinement_onnx_source=refinement)
    return folder


def test_a_cascade_package_holds_and_checks_both_networks(cascade_dir):
    package = load_model_package(cascade_dir)
    assert package.refinement_onnx_path == cascade_dir / "tiny_refinement.onnx"
    assert package.card.refinement.onnx.sha256 == hashlib.sha256(FAKE_ONNX[::-1]).hexdigest()
    assert package.card.refinement.onnx.size_bytes == len(FAKE_ONNX)

    # one digest for what the answers depend on: other refinement weights, another digest
    assert make_card().weights_sha256 == make_card().onnx.sha256
    assert package.card.weights_sha256 not in (package.card.onnx.sha256, package.card.refinement.onnx.sha256)
    other = write_model_package(
        cascade_dir.parent / "other", package.card, package.onnx_path, refinement_onnx_source=package.onnx_path
    )
    assert other.card.weights_sha256 != package.card.weights_sha256
    assert other.card.onnx.sha256 == package.card.onnx.sha256

    (cascade_dir / "tiny_refinement.onnx").write_bytes(FAKE_ONNX)  # swapped for the first network's file
    with pytest.raises(ModelError, match=r"tiny_refinement\.onnx has sha256 .*changed or damaged"):
        load_model_package(cascade_dir)
    (cascade_dir / "tiny_refinement.onnx").unlink()
    with pytest.raises(ModelError, match=r"ONNX file tiny_refinement\.onnx is missing"):
        load_model_package(cascade_dir, verify=False)


def test_a_refinement_file_goes_with_a_refinement_stage_only(tmp_path, onnx_source):
    with pytest.raises(ValueError, match="refinement ONNX file goes with"):
        write_model_package(tmp_path / "a", make_card(refinement=make_refinement()), onnx_source)
    with pytest.raises(ValueError, match="refinement ONNX file goes with"):
        write_model_package(tmp_path / "b", make_card(), onnx_source, refinement_onnx_source=onnx_source)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"around": ["pancreas"]}, r"refinement names structures the card lacks: \['pancreas'\]"),
        ({"structures": ["liver", "liver"]}, "refinement's structures must be unique"),
        ({"structures": ["liver", "spleen", "kidney_left", "liver"]}, "unique"),
        ({"onnx": {**make_card().onnx.model_dump(), "file": "tiny_abdomen.onnx"}}, "another file"),
        ({"around": ["spleen"], "structures": ["kidney_left", "spleen"]}, None),  # fine: the control
    ],
)
def test_a_refinement_stage_that_does_not_fit_the_card_is_refused(overrides, message):
    from pydantic import ValidationError

    if message is None:
        assert make_card(refinement=make_refinement(**overrides)).refinement.around == ("spleen",)
        return
    with pytest.raises(ValidationError, match=message):
        make_card(refinement=make_refinement(**overrides))


def test_a_crop_around_a_structure_only_the_refinement_outputs_is_refused():
    from pydantic import ValidationError

    from tests.models.test_card import make_structure

    card = make_card()
    structures = [*card.model_dump()["structures"], make_structure(4, "renal_tumor")]  # label 4: the refinement's
    stage = make_refinement(structures=["kidney_left", "renal_tumor"])
    assert make_card(structures=structures, refinement=stage).structure("renal_tumor").label == 4
    with pytest.raises(ValidationError, match=r"crop is around \['renal_tumor'\], which the first network"):
        make_card(structures=structures, refinement={**stage, "around": ["renal_tumor"]})


def test_a_refinement_with_more_structures_than_classes_is_refused():
    from pydantic import ValidationError

    inference = {**make_card().inference.model_dump(), "num_classes": 2}
    with pytest.raises(ValidationError, match="its network has only 2 classes"):
        make_card(refinement=make_refinement(inference=inference))
