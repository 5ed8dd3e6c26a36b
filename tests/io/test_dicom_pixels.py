"""Parallel decoding: JPEG 2000 files go to worker processes (the decoder holds the GIL); results must not depend on
how many workers decode them, and a corrupt file must still be named."""

from __future__ import annotations

import numpy as np
import pytest

from twin_imaging.errors import DicomInputError
from twin_imaging.io import scan_dicom
from twin_imaging.io.dicom_pixels import _needs_processes, decode_stack
from twin_imaging.testing import PhantomGeometry, SeriesSpec, write_phantom_study

SMALL = PhantomGeometry(shape=(64, 56, 12), spacing_mm=(4.0, 4.0, 5.0))


@pytest.fixture(scope="module")
def jpeg2000_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("j2k")
    study = write_phantom_study(folder, series=(SeriesSpec(geometry=SMALL, compression="jpeg2000"),))
    return folder, study


def test_jpeg2000_files_are_decoded_in_processes_with_the_same_result(jpeg2000_series):
    folder, study = jpeg2000_series
    frames = scan_dicom(folder).chosen.frames
    assert _needs_processes({id(f.instance): f.instance for f in frames}.values())
    one = decode_stack(frames, threads=1)
    two = decode_stack(frames, threads=2)
    assert np.array_equal(one, two)
    assert np.array_equal(two.transpose(2, 1, 0), study.series[0].phantom.image.array)


def test_a_corrupt_jpeg2000_file_is_named_when_decoded_in_a_process(jpeg2000_series, tmp_path):
    folder, _ = jpeg2000_series
    import shutil

    import pydicom

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    victim = sorted(copy.iterdir())[3]
    ds = pydicom.dcmread(victim)
    ds.PixelData = ds.PixelData[:40] + b"\x00" * 40  # a truncated, garbled code stream inside a valid encapsulation
    ds.save_as(victim)
    frames = scan_dicom(copy).chosen.frames
    with pytest.raises(DicomInputError, match=victim.name):
        decode_stack(frames, threads=2)
