"""The service in process (Starlette's test client over BentoML's ASGI app), one per module, with its own twin, keys
and spool; small upload limits so that the limits can be tested without large bodies."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from twin_imaging.access import ApiKeyRegistry
from twin_imaging.settings import get_settings
from twin_imaging.testing import PatientSpec, SeriesSpec, StudySpec, write_phantom_study
from twin_imaging.testing.phantom import PhantomAnatomy, PhantomGeometry

GEOMETRY = PhantomGeometry(shape=(96, 96, 40), spacing_mm=(4.0, 4.0, 5.0))
PATIENT = PatientSpec(patient_id="API-PATIENT-1")
MAX_UPLOAD_BYTES = 12 * 1024**2
SYNC_MAX_BYTES = 6 * 1024**2


@dataclass(frozen=True)
class Studies:
    pre: Path
    post: Path
    pre_uid: str
    post_uid: str


@pytest.fixture(scope="session")
def studies(tmp_path_factory) -> Studies:
    root = tmp_path_factory.mktemp("api_studies")
    series = (SeriesSpec(geometry=GEOMETRY),)
    pre = write_phantom_study(root / "pre", series, patient=PATIENT, study=StudySpec(study_date="20250101"))
    post = write_phantom_study(
        root / "post",
        series,
        patient=PATIENT,
        study=StudySpec(study_date="20250301", accession_number="API0002"),
        anatomy=PhantomAnatomy().with_scaled("kidney_left", 0.8),
        seed=1,
    )
    return Studies(root / "pre", root / "post", pre.study_instance_uid, post.study_instance_uid)


def files_of(folder: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(folder.glob("*.dcm"))]


def zip_of(folder: Path, *, evil: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for p in sorted(folder.glob("*.dcm")):
            archive.write(p, f"../{p.name}" if evil else f"study/{p.name}")
    return buffer.getvalue()


def multipart_related(parts: list[tuple[str, bytes]], boundary: str = "twin-boundary-7") -> tuple[bytes, str]:
    """A STOW-RS body of DICOM parts and its content type."""
    body = (
        b"".join(f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n" for kind, data in parts)
        + f"--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


@dataclass
class Api:
    client: object
    keys: dict[str, str]
    data_dir: Path

    def headers(self, role: str | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.keys[role]}"}

    def post(self, path: str, role: str | None = "admin", **kwargs):
        return self.client.post(path, headers={**self.headers(role), **kwargs.pop("headers", {})}, **kwargs)

    def get(self, path: str, role: str | None = "admin", **kwargs):
        return self.client.get(path, headers={**self.headers(role), **kwargs.pop("headers", {})}, **kwargs)


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    """The service in process (one BentoML app per test process: its metrics register globally; a service with
    other settings runs as a real server, as tests/serving/test_renal_mass_service.py does)."""
    from starlette.testclient import TestClient

    root = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(root / "bentoml"))
        patch.setenv("BENTOML_DO_NOT_TRACK", "True")
        patch.setenv("TWIN_IMAGING_DATA_DIR", str(root / "data"))
        patch.setenv("TWIN_IMAGING_API_KEYS_FILE", str(root / "keys.json"))
        patch.setenv("TWIN_IMAGING_SERVE_MAX_UPLOAD_BYTES", str(MAX_UPLOAD_BYTES))
        patch.setenv("TWIN_IMAGING_SERVE_SYNC_MAX_BYTES", str(SYNC_MAX_BYTES))
        patch.setenv("TWIN_IMAGING_SERVE_STUDY_QUIET_SECONDS", "0.5")
        get_settings.cache_clear()
        registry = ApiKeyRegistry.load(root / "keys.json")
        keys = {role: registry.create(f"test-{role}", role=role) for role in ("integration", "clinician", "admin")}
        from serving.service import TwinImaging

        with TestClient(TwinImaging.to_asgi(), raise_server_exceptions=False) as client:
            yield Api(client, keys, root / "data")
        get_settings.cache_clear()
