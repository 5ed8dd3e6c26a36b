"""The outbox on its own: items appear whole, failures are kept with their errors and retried with a doubling wait,
nothing is dropped, and a delivered item leaves a record."""

from __future__ import annotations

import json

import pydicom
import pytest

from twin_imaging.pacs.dicomweb import PacsError
from twin_imaging.pacs.outbox import Destination, Outbox


def dataset(n: int) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", f"1.2.3.{n}"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    return ds


def test_a_failed_delivery_is_kept_and_retried_with_a_doubling_wait(tmp_path):
    outbox = Outbox(tmp_path, retry_seconds=10)
    item_id = outbox.enqueue([dataset(1), dataset(2)], Destination.dicomweb("http://pacs/dicom-web"), label="a")
    assert not list((tmp_path / "staging").iterdir())

    def down(destination, datasets):
        raise PacsError("http://pacs/dicom-web: STOW-RS store failed, the server cannot be reached")

    first = outbox.deliver_due(down)
    assert first.retrying == (item_id,)
    (item,) = outbox.pending()
    assert item.attempts == 1 and "cannot be reached" in item.errors[0]
    assert outbox.deliver_due(down).retrying == ()  # not due yet: the wait is 10 s
    outbox.deliver_due(down, force=True)
    (item,) = Outbox(tmp_path).pending()  # read again, as after a restart
    assert item.attempts == 2 and len(item.errors) == 2

    received = []
    report = outbox.deliver_due(lambda destination, datasets: received.append(datasets), force=True)
    assert report.sent == (item_id,) and not outbox.pending()
    assert [ds.SOPInstanceUID for ds in received[0]] == ["1.2.3.1", "1.2.3.2"]
    record = json.loads((tmp_path / "sent" / f"{item_id}.json").read_text())
    assert record["attempts"] == 3 and record["instances"] == 2


@pytest.mark.parametrize(
    ("text", "kind"), [("http://pacs:8042/dicom-web/", "dicomweb"), ("ORTHANC@10.0.0.5:4242", "dimse")]
)
def test_destinations_parse(text, kind):
    assert Destination.parse(text).kind == kind


@pytest.mark.parametrize("text", ["pacs:4242", "ORTHANC@pacs", "@pacs:1", "ftp://x"])
def test_a_malformed_destination_is_refused(text):
    with pytest.raises(ValueError, match="AET@host:port"):
        Destination.parse(text)
