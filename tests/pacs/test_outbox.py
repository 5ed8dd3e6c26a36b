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


def test_an_unexpected_error_fails_its_own_item_and_the_queue_goes_on(tmp_path):
    """A ValueError from pynetdicom (a PACS that does not take Segmentation Storage) stalled the whole outbox."""
    outbox = Outbox(tmp_path)
    refused = outbox.enqueue([dataset(1)], Destination.parse("PACS@127.0.0.1:4242"), label="refused")
    fine = outbox.enqueue([dataset(2)], Destination.dicomweb("http://pacs/dicom-web"), label="fine")

    def send(destination, datasets):
        if datasets[0].SOPInstanceUID == "1.2.3.1":
            raise ValueError("No presentation context for 'Segmentation Storage' has been accepted by the peer")

    report = outbox.deliver_due(send)
    assert report.retrying == (refused,) and report.sent == (fine,)
    (item,) = outbox.pending()
    assert item.attempts == 1 and "ValueError: No presentation context" in item.errors[0]


def test_an_item_is_given_up_after_max_attempts_and_listed_as_dead(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from twin_imaging.cli import cli

    outbox = Outbox(tmp_path, max_attempts=2)
    item_id = outbox.enqueue([dataset(1)], Destination.dicomweb("http://pacs/dicom-web"), label="analysis 7")

    def down(destination, datasets):
        raise PacsError("the server cannot be reached")

    assert outbox.deliver_due(down).retrying == (item_id,)
    report = outbox.deliver_due(down, force=True)
    assert report.dead == (item_id,) and report.retrying == ()
    assert not outbox.pending()
    (dead,) = outbox.dead()
    assert dead.attempts == 2 and (tmp_path / "dead" / item_id / "0000.dcm").is_file()  # kept whole
    assert outbox.deliver_due(down, force=True).retrying == ()  # a dead letter is not retried on its own
    monkeypatch.setenv("TWIN_IMAGING_OUTBOX_DIR", str(tmp_path))
    listing = CliRunner().invoke(cli, ["pacs", "outbox"])
    assert listing.exit_code == 0 and f"DEAD\t{item_id}\tanalysis 7" in listing.output


@pytest.mark.parametrize("status", [0xB000, 0xB006, 0xB007])
def test_c_store_warning_statuses_count_as_delivered(status):
    """A node that answers a C-STORE with a warning kept the object: not a failure to retry forever."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    from twin_imaging.pacs.dimse import c_store
    from twin_imaging.testing.network import free_port

    received = []

    def handle_store(event):
        received.append(event.request.AffectedSOPInstanceUID)
        return status

    scp = AE(ae_title="WARNPACS")
    scp.add_supported_context(SecondaryCaptureImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)])
    try:
        c_store([dataset(1), dataset(2)], host="127.0.0.1", port=port, ae_title="WARNPACS", calling_ae="TWIN")
    finally:
        server.shutdown()
    assert received == ["1.2.3.1", "1.2.3.2"]
