"""A DICOM C-STORE listener (pynetdicom SCP): studies come in, results go out.

Each received CT/MR instance is written durably (fsync, ``twin_imaging.inbox``) before its C-STORE is answered with
success; a DICOM SEG is taken as a radiologist's masks of an analysed series (``twin_imaging.expert_intake``: recorded,
scenarios recomputed) before its answer, or refused with 0xC000 and an Error Comment saying why; any other non-image
SOP class is answered 0x0122 (SOP class not supported), an unreadable instance 0xC000. C-ECHO is answered. Only the
configured calling AE titles may associate (none configured: any), at most N associations at once.
A study is complete when no instance of it has arrived for ``quiet_seconds``; it is then analysed, attached to the
twin, and its results (SEG, SR, overlay captures) go to the destination through the outbox, which retries until
delivered and survives a restart, as the inbox does.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from twin_imaging.errors import DicomInputError
from twin_imaging.inbox import IMAGE_SOP_CLASSES, ClaimedStudy, StudyInbox, UnsupportedSopClassError
from twin_imaging.io.expert_seg import SEGMENTATION_SOP_CLASS
from twin_imaging.pacs.outbox import Destination, Outbox
from twin_imaging.pacs.results import result_datasets, superseded_rejection

log = logging.getLogger(__name__)

SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700


@dataclass(frozen=True)
class ListenerConfig:
    ae_title: str
    host: str
    port: int
    destination: Destination | None
    allowed_calling_aets: tuple[str, ...] = ()
    max_associations: int = 8
    quiet_seconds: float = 10.0


class StudyListener:
    def __init__(
        self, config: ListenerConfig, *, inbox: StudyInbox, outbox: Outbox, store, send, segmenter, outcome_model=None
    ) -> None:
        self.config = config
        self.inbox, self.outbox, self.store, self.send, self.segmenter = inbox, outbox, store, send, segmenter
        self.outcome_model = outcome_model
        self._stop = threading.Event()
        self._server = None
        self._worker = None

    # --- the DICOM side ---------------------------------------------------------------------------------------

    def handle_store(self, event) -> int:
        try:
            sop_class = str(event.request.AffectedSOPClassUID)
            if sop_class == SEGMENTATION_SOP_CLASS and self.store is not None:
                return self._expert_seg(bytes(event.encoded_dataset()))
            if sop_class not in IMAGE_SOP_CLASSES:
                log.info("refused an instance of SOP class %s (not CT/MR)", sop_class)
                return SOP_CLASS_NOT_SUPPORTED
            self.inbox.store(bytes(event.encoded_dataset()))
        except UnsupportedSopClassError:
            return SOP_CLASS_NOT_SUPPORTED
        except DicomInputError as exc:
            log.info("refused an unreadable instance: %s", exc)
            return CANNOT_UNDERSTAND
        except OSError:
            log.exception("could not write a received instance")
            return OUT_OF_RESOURCES
        return 0x0000

    def _expert_seg(self, data: bytes):
        """A radiologist's SEG: recorded (status 0x0000) or refused with 0xC000 and the reason as Error Comment."""
        from pydicom.dataset import Dataset

        from twin_imaging.expert_intake import ExpertSegError, receive_expert_seg

        try:
            receipt = receive_expert_seg(
                self.store,
                data,
                via="c-store",
                actor=f"dicom-listener:{self.config.ae_title}",
                outcome_model=self.outcome_model,
            )
        except ExpertSegError as exc:
            log.info("refused a SEG: %s", exc)
            status = Dataset()
            status.Status = CANNOT_UNDERSTAND
            status.ErrorComment = str(exc)[:64]  # LO: at most 64 characters; the log has all of it
            return status
        log.info("SEG recorded as expert masks of analysis %s", receipt["analysis_id"])
        return 0x0000

    def start(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        recovered = self.inbox.recover()
        if recovered:
            log.info("%d studies interrupted by a restart go round again", recovered)
        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = self.config.max_associations
        if self.config.allowed_calling_aets:
            ae.require_calling_aet = list(self.config.allowed_calling_aets)
        for context in AllStoragePresentationContexts:  # every storage class is negotiated, non-images refused
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self.handle_store)]
        self._server = ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        self._worker = threading.Thread(target=self._work, name="studies", daemon=True)
        self._worker.start()
        log.info("listening as %s on %s:%d", self.config.ae_title, self.config.host, self.config.port)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._worker is not None:
            self._worker.join(timeout=60)

    # --- analysis and delivery ---------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.wait(1.0):
            self.run_once()

    def run_once(self) -> None:
        """Analyse every study that has been quiet long enough, then deliver what the outbox has due."""
        try:
            self.inbox.process_due(self._analyse, quiet_seconds=self.config.quiet_seconds)
            if self.config.destination is not None:
                report = self.outbox.deliver_due(self.send)
                if report.retrying:
                    log.warning(
                        "%d result deliveries failed; they stay queued and will be retried", len(report.retrying)
                    )
        except Exception:  # the loop must survive anything (a full disk, a lost database connection)
            log.exception("listener work loop")

    def _analyse(self, claimed: ClaimedStudy) -> dict:
        from twin_imaging.outcome.twin_scenarios import scenarios_after_attach
        from twin_imaging.pipeline import analyze_study

        with tempfile.TemporaryDirectory() as scratch:
            result = analyze_study(claimed.path, Path(scratch) / "out", segmenter=self.segmenter)
            actor = f"dicom-listener:{self.config.ae_title}"
            analysis = self.store.attach_analysis(result, actor=actor)
            scenarios_after_attach(self.store, result, analysis, actor=actor, model=self.outcome_model)
            if self.config.destination is not None:
                outgoing = result_datasets(result)
                rejection = superseded_rejection(self.store, analysis, actor=actor)
                if rejection is not None:  # the earlier results of part of this series are withdrawn
                    outgoing.append(rejection)
                self.outbox.enqueue(outgoing, self.config.destination, label=f"analysis {analysis.analysis_id}")
        log.info("analysis %s of a received study attached", analysis.analysis_id)
        return {"analysis_id": analysis.analysis_id, "series_instance_uid": analysis.series_instance_uid}


def _transfer_syntaxes() -> list[str]:
    from pydicom import uid

    return [
        uid.ImplicitVRLittleEndian,
        uid.ExplicitVRLittleEndian,
        uid.DeflatedExplicitVRLittleEndian,
        uid.ExplicitVRBigEndian,
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
        uid.JPEG2000Lossless,
        uid.JPEG2000,
        uid.RLELossless,
    ]


ALL_TRANSFER_SYNTAXES = _transfer_syntaxes()
