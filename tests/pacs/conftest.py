"""A real Orthanc (Debian orthanc + orthanc-dicomweb) per test module, on free ports with temporary storage."""

from __future__ import annotations

import os
import subprocess

import pytest

from twin_imaging.testing.orthanc import OrthancServer, orthanc_available


def require_orthanc() -> None:
    reason = orthanc_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def dciodvfy_errors(path_or_bytes, tmp_path) -> list[str]:
    """dciodvfy's error lines for a DICOM file (or bytes)."""
    from tests.conftest import require_tool

    tool = require_tool("dciodvfy")
    path = path_or_bytes
    if isinstance(path_or_bytes, bytes):
        path = tmp_path / f"check_{len(list(tmp_path.glob('check_*')))}.dcm"
        path.write_bytes(path_or_bytes)
    report = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_orthanc()
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"), users={"twin": "pacs-secret"}).start()
    yield server
    server.stop()
