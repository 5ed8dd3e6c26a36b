"""Surface meshes against the phantom's exact masks: closed, outward, in patient millimetres, with the mask's
volume; a mirrored grid gives the same surfaces; glTF and STL read back; the CLI writes what it says."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from twin_imaging.cli import cli
from twin_imaging.datalist import label_lookup
from twin_imaging.io.nifti import write_nifti
from twin_imaging.meshes import structure_meshes, write_meshes
from twin_imaging.models import default_segmentation_package
from twin_imaging.testing import PhantomGeometry, make_phantom
from twin_imaging.volume import Volume

ORGANS = ["liver", "spleen", "kidney_right", "kidney_left", "aorta"]


@pytest.fixture(scope="module")
def labels() -> Volume:
    phantom = make_phantom(PhantomGeometry(shape=(128, 112, 48), spacing_mm=(3.0, 2.5, 4.0)))
    keep = {v: n for v, n in phantom.labels.label_names.items() if n in ORGANS}
    array = np.where(np.isin(phantom.labels.array, list(keep)), phantom.labels.array, 0).astype(np.uint8)
    return phantom.labels.with_array(array, label_names=keep)


def test_meshes_are_closed_outward_and_hold_the_masks_volume(labels):
    meshes = structure_meshes(labels, target_spacing_mm=2.0)
    assert [m.name for m in meshes] == [labels.label_names[v] for v in sorted(labels.label_names)]
    for m in meshes:
        surface = trimesh.Trimesh(m.vertices_ras_mm, m.faces)
        assert surface.is_watertight, m.name
        assert m.volume_ml == pytest.approx(m.mask_volume_ml, rel=0.03), m.name  # positive: normals outwards
        value = next(v for v, n in labels.label_names.items() if n == m.name)
        ijk = np.argwhere(labels.array == value)
        ras = ijk @ labels.affine_ras[:3, :3].T + labels.affine_ras[:3, 3]
        assert np.all(m.vertices_ras_mm.min(0) > ras.min(0) - 4.0) and np.all(
            m.vertices_ras_mm.max(0) < ras.max(0) + 4.0
        )


def test_a_mirrored_grid_gives_the_same_surface(labels):
    flipped = labels.array[::-1].copy()
    affine = labels.affine_ras.copy()
    affine[:3, 3] = affine[:3, 3] + affine[:3, 0] * (labels.shape[0] - 1)
    affine[:3, 0] = -affine[:3, 0]
    mirrored = Volume(flipped, affine, label_names=labels.label_names)
    a = {m.name: m for m in structure_meshes(labels)}
    b = {m.name: m for m in structure_meshes(mirrored)}
    for name in a:
        assert b[name].volume_ml == pytest.approx(a[name].volume_ml, rel=0.02)
        assert np.allclose(b[name].vertices_ras_mm.mean(0), a[name].vertices_ras_mm.mean(0), atol=1.0)


def test_glb_and_stl_read_back(labels, tmp_path):
    meshes = structure_meshes(labels, {"liver": (140, 86, 75)})
    scene = trimesh.load(write_meshes(meshes, tmp_path / "organs.glb"))
    assert set(scene.geometry) == {m.name for m in meshes}
    liver = trimesh.load(write_meshes(meshes, tmp_path / "liver.stl", only=["liver"]))
    assert liver.volume / 1000 == pytest.approx(next(m for m in meshes if m.name == "liver").volume_ml, rel=0.01)
    with pytest.raises(ValueError, match="format"):
        write_meshes(meshes, tmp_path / "liver.ply")


def test_the_mesh_command_writes_a_printable_stl(labels, tmp_path):
    card = default_segmentation_package().card
    model_values = label_lookup(labels.label_names, [s.name for s in card.structures])[labels.array]
    path = write_nifti(labels.with_array(model_values.astype(np.uint8), label_names={}), tmp_path / "labels.nii.gz")
    out = tmp_path / "kidney.stl"
    result = CliRunner().invoke(cli, ["mesh", str(path), "--out", str(out), "--structure", "kidney_left"])
    assert result.exit_code == 0, result.output
    assert "| kidney_left |" in result.output and "| liver |" not in result.output
    assert trimesh.load(out).is_watertight
    bad = CliRunner().invoke(cli, ["mesh", str(path), "--out", str(tmp_path / "x.ply")])
    assert bad.exit_code == 2 and ".stl, .obj or .glb" in bad.output
    unknown = CliRunner().invoke(cli, ["mesh", str(path), "--out", str(out), "--structure", "heart"])
    assert unknown.exit_code == 2 and "heart" in unknown.output
