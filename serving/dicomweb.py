"""STOW-RS (DICOMweb store, PS3.18 10.5): a PACS or router pushes instances; each is written durably to the
inbox before the answer, and the study is analysed once it has been quiet (``twin_imaging.inbox``).

    POST /dicomweb/studies            Content-Type: multipart/related; type="application/dicom"; boundary=...
    POST /dicomweb/studies/{study}    the same, every instance must belong to {study}

The answer is the standard DICOM JSON Store Instances Response: ReferencedSOPSequence for what was stored,
FailedSOPSequence with a FailureReason for what was not; 200 all stored, 202 some, 409 none. A body that is not
multipart/related of application/dicom gets 415 with a JSON error.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging

import anyio
import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.errors import error_response
from twin_imaging.errors import DicomInputError
from twin_imaging.inbox import UnsupportedSopClassError

log = logging.getLogger(__name__)

# FailureReason values (PS3.4 GG.4, PS3.18 Table 10.5.3-1)
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
STUDY_UID_MISMATCH = 0xA900  # "data set does not match": the instance belongs to another study than the URL's
CANNOT_UNDERSTAND = 0xC000


def parse_multipart_related(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(content type, bytes) of each part. The standard library's MIME parser does this well; no extra package."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise DicomInputError("the body is not a multipart message (no parts between its boundaries)")
    return [(part.get_content_type(), part.get_payload(decode=True) or b"") for part in message.iter_parts()]


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
    body = await request.body()
    try:
        parts = parse_multipart_related(content_type, body)
    except DicomInputError as exc:
        return error_response(400, str(exc))
    if not parts:
        return error_response(400, "the multipart body holds no parts")
    inbox = bentoml.get_current_service().inbox
    sender = request.state.principal.actor  # the auth middleware let no keyless request through
    wanted_study = request.path_params.get("study")
    stored, failed = [], []
    for part_type, data in parts:
        if part_type != "application/dicom":
            failed.append(_sop_item("", "", reason=CANNOT_UNDERSTAND))
            continue
        try:
            instance = await anyio.to_thread.run_sync(_store, inbox, data, wanted_study, sender)
        except UnsupportedSopClassError as exc:
            failed.append(_sop_item(exc.sop_class_uid, "", reason=SOP_CLASS_NOT_SUPPORTED))
        except _StudyMismatch as exc:
            failed.append(_sop_item(exc.sop_class, exc.sop_instance, reason=STUDY_UID_MISMATCH))
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


class _StudyMismatch(DicomInputError):
    def __init__(self, sop_class: str, sop_instance: str) -> None:
        super().__init__("the instance belongs to another study than the one in the URL")
        self.sop_class, self.sop_instance = sop_class, sop_instance


def _store(inbox, data: bytes, wanted_study: str | None, sender: str):
    if wanted_study is not None:
        import io

        import pydicom

        try:
            header = pydicom.dcmread(
                io.BytesIO(data),
                stop_before_pixels=True,
                specific_tags=["StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"],
            )
        except Exception:
            raise DicomInputError("not a DICOM Part 10 instance") from None
        if str(header.get("StudyInstanceUID", "")) != wanted_study:
            raise _StudyMismatch(str(header.get("SOPClassUID", "")), str(header.get("SOPInstanceUID", "")))
    return inbox.store(data, sender=sender)


dicomweb_app = Starlette(
    routes=[
        Route("/studies", store_instances, methods=["POST"]),
        Route("/studies/{study}", store_instances, methods=["POST"]),
    ]
)
