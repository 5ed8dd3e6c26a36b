import nibabel as nib
import numpy as np
import pytest

from twin_imaging.errors import NiftiInputError
from twin_imaging.io import read_image, read_nifti, write_nifti
from twin_imaging.volume import Volume

from ..test_volume import oblique_affine


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_keeps_voxels_dtype_and_affine(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(7, 5, 3)) * 100).astype(dtype)
    volume = Volume(array, oblique_affine())
    path = write_nifti(volume, tmp_path / f"image{suffix}")
    back = read_nifti(path)
    assert back.array.dtype == dtype
    assert np.array_equal(back.array, array)
    assert np.allclose(back.affine_ras, volume.affine_ras, atol=1e-5)
    header = nib.load(path).header
    assert header["qform_code"] == 1 and header["sform_code"] == 1
    assert header.get_xyzt_units()[0] == "mm"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_label_volumes_are_marked_as_labels(tmp_path):
    labels = Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4), label_names={1: "liver"})
    path = write_nifti(labels, tmp_path / "labels.nii.gz")
    assert nib.load(path).header.get_intent()[0] == "label"
    assert read_nifti(path).label_names is not None


def test_a_single_volume_4d_file_reads_as_3d(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 1), np.int16), np.eye(4)), tmp_path / "a.nii.gz")
    assert read_image(tmp_path / "a.nii.gz").shape == (3, 4, 5)


def test_bad_nifti_inputs_are_refused_with_the_reason(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 2), np.int16), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(NiftiInputError, match=r"shape \(3, 4, 5, 2\)"):
        read_nifti(tmp_path / "4d.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(NiftiInputError, match="not a readable NIfTI"):
        read_nifti(tmp_path / "junk.nii.gz")
    with pytest.raises(NiftiInputError, match="not found"):
        read_nifti(tmp_path / "missing.nii.gz")
    flat = nib.Nifti1Image(np.ones((3, 4, 5), np.int16), None)
    flat.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    flat.header["qform_code"] = 0
    nib.save(flat, tmp_path / "flat.nii")
    with pytest.raises(NiftiInputError, match="singular"):
        read_nifti(tmp_path / "flat.nii")


def test_write_refuses_a_non_nifti_name(tmp_path):
    with pytest.raises(ValueError, match=r"\.nii"):
        write_nifti(Volume(np.zeros((1, 1, 1)), np.eye(4)), tmp_path / "image.png")
