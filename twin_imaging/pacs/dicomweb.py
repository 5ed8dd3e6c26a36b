"""A DICOMweb peer (QIDO-RS search, WADO-RS retrieve, STOW-RS store) through dicomweb-client, with basic or bearer
auth. Errors become ``PacsError`` naming the server and the step, never a requests traceback."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from twin_imaging.errors import TwinImagingError
from twin_imaging.files import write_bytes_atomic

IMAGE_MODALITIES = ("CT", "MR")


class PacsError(TwinImagingError):
    """The PACS could not be reached, refused a request, or answered something unusable."""


@dataclass(frozen=True)
class DicomWebAuth:
    username: str | None = None
    password: str | None = None
    token: str | None = None

    @classmethod
    def from_settings(cls, settings) -> DicomWebAuth:
        secret = settings.pacs_password.get_secret_value() if settings.pacs_password else None
        token = settings.pacs_token.get_secret_value() if settings.pacs_token else None
        return cls(settings.pacs_username, secret, token)


class DicomWebPeer:
    def __init__(self, url: str, auth: DicomWebAuth | None = None, *, timeout_s: float = 120) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        if not url.startswith(("http://", "https://")):
            raise PacsError(f"a DICOMweb URL starts with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        session = requests.Session()
        auth = auth or DicomWebAuth()
        if auth.token:
            session.headers["Authorization"] = f"Bearer {auth.token}"
        elif auth.username:
            session.auth = (auth.username, auth.password or "")
        self.session = session
        self.client = DICOMwebClient(url=self.url, session=session, timeout=timeout_s)
        self.client.set_http_retry_params(retry=False)

    def _call(self, step: str, function, *args, **kwargs):
        import requests

        try:
            return function(*args, **kwargs)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise PacsError(f"{self.url}: {step} refused with HTTP {status}") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PacsError(f"{self.url}: {step} failed, the server cannot be reached ({type(exc).__name__})") from None

    def image_series(self, study_instance_uid: str) -> list[dict]:
        """QIDO-RS: the study's series whose modality is CT or MR, as DICOM JSON."""
        found = self._call("QIDO-RS series search", self.client.search_for_series, study_instance_uid)
        if not found:
            raise PacsError(f"{self.url}: study {study_instance_uid} not found (or it has no series)")
        return [s for s in found if (s.get("00080060", {}).get("Value") or [""])[0] in IMAGE_MODALITIES]

    def retrieve_image_series(self, study_instance_uid: str, into: Path) -> list[Path]:
        """WADO-RS: every CT/MR series of the study, written as Part 10 files under ``into``; their paths."""
        series = self.image_series(study_instance_uid)
        if not series:
            raise PacsError(f"{self.url}: study {study_instance_uid} has no CT or MR series")
        written = []
        for item in series:
            series_uid = item["0020000E"]["Value"][0]
            # Any transfer syntax (the stored one): asking for the default would make the server transcode, which
            # fails for compressed images on some PACS (Orthanc's Debian build cannot transcode JPEG 2000).
            datasets = self._call(
                "WADO-RS retrieve",
                self.client.retrieve_series,
                study_instance_uid,
                series_uid,
                media_types=(("application/dicom", "*"),),
            )
            for dataset in datasets:
                written.append(_write(dataset, into / series_uid / f"{dataset.SOPInstanceUID}.dcm"))
        return written

    def store(self, datasets: Sequence[Dataset], study_instance_uid: str | None = None) -> Dataset:
        """STOW-RS; raises PacsError unless every instance was stored."""
        answer = self._call("STOW-RS store", self.client.store_instances, list(datasets), study_instance_uid)
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
            raise PacsError(f"{self.url}: STOW-RS refused {len(failed)} instance(s), failure reasons {reasons}")
        return answer


def _write(dataset: Dataset, path: Path) -> Path:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return write_bytes_atomic(path, buffer.getvalue())
