"""STOW-RS (DICOMweb store, PS3.18 10.5): a PACS or router pushes instances; each is written durably to the
inbox before the answer, and the study is analysed once it has been quiet (``twin_imaging.inbox``). The body is
streamed: each part goes to a file as it arrives (``serving.stow_parts``), so a 1 GB push needs no 1 GB of memory.

    POST /dicomweb/studies            Content-Type: multipart/related; type="application/dicom"; boundary=...
    POST /dicomweb/studies/{study}    the same, every instance must belong to {study}

The answer is the standard DICOM JSON Store Instances Response: ReferencedSOPSequence for what was stored,
FailedSOPSequence with a FailureReason for what was not; 200 all stored, 202 some, 409 none. A body that is not
multipart/related of application/dicom gets 415 with a JSON error. A DICOM SEG is taken at once as a radiologist's
masks of an analysed series (``twin_imaging.expert_intake``), or refused with FailureReason 0xC000 and an Error
Comment (0000,0902) saying why.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

import anyio
import bentoml
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.errors import error_response
from serving.stow_parts import PartSpooler
from twin_imaging.errors import DicomInputError
from twin_imaging.expert_intake import ExpertSegError, receive_expert_seg
from twin_imaging.inbox import StudyMismatchError, UnsupportedSopClassError
from twin_imaging.io.expert_seg import SEGMENTATION_SOP_CLASS

log = logging.getLogger(__name__)

# FailureReason values (PS3.4 GG.4, PS3.18 Table 10.5.3-1)
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
STUDY_UID_MISMATCH = 0xA900  # "data set does not match": the instance belongs to another study than the URL's
CANNOT_UNDERSTAND = 0xC000


def _sop_item(sop_class: str, sop_instance: str, *, reason: int | None = None) -> dict:
    item = {
        "00081150": {"vr": "UI", "Value": [sop_class]} if sop_class else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [sop_instance]} if sop_instance else {"vr": "UI"},
    }
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


async def store_instances(request: Request) -> Response:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    params = {
        k.strip().lower(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in content_type.split(";")[1:])
    }
    if media != "multipart/related" or params.get("type", "").lower() != "application/dicom":
        return error_response(
            415, f'STOW-RS takes multipart/related; type="application/dicom", got {media or "no content type"!r}'
        )
    if "boundary" not in params:
        return error_response(400, "the multipart/related content type has no boundary")
    inbox = bentoml.get_current_service().inbox
    sender = request.state.principal.actor  # the auth middleware let no keyless request through
    wanted_study = request.path_params.get("study")
    stored, failed = [], []
    with tempfile.TemporaryDirectory(dir=inbox.receiving_dir()) as folder:
        try:
            spooler = PartSpooler(params["boundary"], Path(folder))
            async for chunk in request.stream():  # each part to its own file as it arrives: memory stays bounded
                spooler.write(chunk)
            parts = spooler.finish()
        except DicomInputError as exc:
            return error_response(400, str(exc))
        except ClientDisconnect:
            log.info("STOW-RS: the sender went away mid-body; nothing stored")
            return Response(status_code=400)
        if not parts:
            return error_response(400, "the multipart body holds no parts")
        for part in parts:
            if part.content_type != "application/dicom":
                failed.append(_sop_item("", "", reason=CANNOT_UNDERSTAND))
                continue
            try:
                instance = await anyio.to_thread.run_sync(
                    functools.partial(inbox.store_file, part.path, sender=sender, only_study=wanted_study)
                )
            except UnsupportedSopClassError as exc:
                if exc.sop_class_uid == SEGMENTATION_SOP_CLASS:  # a radiologist's masks of an analysed series
                    principal = request.state.principal
                    scoped = None if principal.sees_everything else sender
                    item = await _expert_seg(part.path, sender, scoped)
                    (stored if item.get("00081150", {}).get("Value") else failed).append(item)
                    continue
                failed.append(_sop_item(exc.sop_class_uid, "", reason=SOP_CLASS_NOT_SUPPORTED))
            except StudyMismatchError as exc:
                failed.append(_sop_item(exc.sop_class_uid, exc.sop_instance_uid, reason=STUDY_UID_MISMATCH))
            except DicomInputError:
                failed.append(_sop_item("", "", reason=CANNOT_UNDERSTAND))
            except OSError:
                log.exception("STOW-RS: could not write an instance")
                failed.append(_sop_item("", "", reason=PROCESSING_FAILURE))
            else:
                stored.append(_sop_item(instance.sop_class_uid, instance.sop_instance_uid))
    answer: dict = {}
    if stored:
        answer["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        answer["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else 202 if stored else 409
    log.info("STOW-RS: %d stored, %d failed", len(stored), len(failed))
    return JSONResponse(answer, status_code=status, media_type="application/dicom+json")


async def _expert_seg(path: Path, sender: str, only_sent_by: str | None) -> dict:
    """Record a SEG as expert masks (``twin_imaging.expert_intake``): its stored item, or a failed one whose
    FailureReason is 0xC000 and whose Error Comment (0000,0902) says why."""
    service = bentoml.get_current_service()
    data = await anyio.to_thread.run_sync(path.read_bytes)
    try:
        receipt = await anyio.to_thread.run_sync(
            functools.partial(
                receive_expert_seg,
                service.store,
                data,
                via="stow-rs",
                actor=sender,
                outcome_model=service.outcome,
                only_sent_by=only_sent_by,
            )
        )
    except ExpertSegError as exc:
        log.info("STOW-RS: refused a SEG: %s", exc)
        item = _sop_item("", "", reason=CANNOT_UNDERSTAND)
        item["00000902"] = {"vr": "LO", "Value": [str(exc)[:64]]}
        return item
    return _sop_item(SEGMENTATION_SOP_CLASS, receipt["sop_instance_uid"])


dicomweb_app = Starlette(
    routes=[
        Route("/studies", store_instances, methods=["POST"]),
        Route("/studies/{study}", store_instances, methods=["POST"]),
    ]
)
