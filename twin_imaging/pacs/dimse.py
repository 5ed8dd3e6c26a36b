"""C-STORE of result objects to a DICOM node (pynetdicom SCU)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from twin_imaging.pacs.dicomweb import PacsError

log = logging.getLogger(__name__)


# C-STORE warnings (PS3.4 B.2.3): the object was stored, with coercion or elements left out; it is delivered.
WARNING_STATUSES = {0x0001, 0xB000, 0xB006, 0xB007}


def c_store(datasets: Sequence[Dataset], *, host: str, port: int, ae_title: str, calling_ae: str) -> None:
    """Send every dataset in one association; raises PacsError unless each is stored (success, or a warning status,
    which is logged: the node kept the object)."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate(host, port, ae_title=ae_title)
    if not association.is_established:
        raise PacsError(f"{ae_title}@{host}:{port}: association refused or the node cannot be reached")
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            code = getattr(status, "Status", None)
            if code in WARNING_STATUSES:
                log.warning("%s@%s:%s stored an object with warning status 0x%04X", ae_title, host, port, code)
                continue
            if code != 0x0000:
                shown = "no answer" if code is None else f"0x{code:04X}"
                raise PacsError(f"{ae_title}@{host}:{port}: C-STORE of {dataset.SOPInstanceUID} failed ({shown})")
    finally:
        association.release()


def send_results(destination, datasets: Sequence[Dataset], settings) -> None:
    """Deliver to a ``Destination`` (twin_imaging.pacs.outbox): STOW-RS or C-STORE, credentials from settings."""
    if destination.kind == "dicomweb":
        from twin_imaging.pacs.dicomweb import DicomWebAuth, DicomWebPeer

        DicomWebPeer(destination.url, DicomWebAuth.from_settings(settings)).store(datasets)
    elif destination.kind == "dimse":
        c_store(
            datasets,
            host=destination.host,
            port=destination.port,
            ae_title=destination.ae_title,
            calling_ae=settings.listener_ae_title,
        )
    else:
        raise PacsError(f"unknown destination kind {destination.kind!r}")
