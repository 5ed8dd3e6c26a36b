"""A real Orthanc PACS for tests: Debian's ``orthanc`` + ``orthanc-dicomweb``, on 127.0.0.1 and free ports, with its
storage in a temporary folder. Stop and start it again (same ports and storage) to test an outage.

    pacs = OrthancServer(tmp_path, modalities={"twin": ("TWIN", "127.0.0.1", 11112)})
    pacs.start(); ...; pacs.stop()
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

from twin_imaging.testing.network import free_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_available() -> str | None:
    """Why Orthanc cannot run here, or None when it can."""
    if shutil.which("Orthanc") is None:
        return "Orthanc is not installed (Debian package orthanc; the README's set-up installs it)"
    if not DICOMWEB_PLUGIN.is_file():
        return "the DICOMweb plugin is not installed (Debian package orthanc-dicomweb)"
    return None


class OrthancServer:
    def __init__(
        self,
        root: Path,
        *,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.users = users or {}
        self.process: subprocess.Popen | None = None
        config = {
            "Name": "twin-imaging test PACS",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "DicomModalities": {name: list(spec) for name, spec in (modalities or {}).items()},
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "StableAge": 1,
            "HttpTimeout": 60,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = self.root / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, *, timeout_s: float = 30) -> OrthancServer:
        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115 (closed in stop)
        self._log = log
        self.process = subprocess.Popen(
            ["Orthanc", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method)
        if self.users:
            user, password = next(iter(self.users.items()))
            request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
        if content_type:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=60) as answer:
            data = answer.read()
        return json.loads(data) if data[:1] in (b"{", b"[") else data

    def get(self, path: str):
        return self._request("GET", path)

    def post(self, path: str, body: bytes | dict | list, content_type: str = "application/json"):
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        return self._request("POST", path, data, content_type)

    def upload(self, paths) -> list[str]:
        """Store DICOM files through the REST API; their Orthanc instance ids."""
        return [self.post("/instances", Path(p).read_bytes(), "application/dicom")["ID"] for p in paths]

    def study_series(self, study_instance_uid: str) -> list[dict]:
        """Main DICOM tags of each series of a study (by StudyInstanceUID), with its instances' SOP class UIDs."""
        found = self.post("/tools/lookup", study_instance_uid.encode(), "text/plain")
        studies = [item["ID"] for item in found if item["Type"] == "Study"]
        if not studies:
            return []
        series = []
        for item in self.get(f"/studies/{studies[0]}/series"):
            instances = self.get(f"/series/{item['ID']}/instances")
            tags = self.get(f"/instances/{instances[0]['ID']}/simplified-tags") if instances else {}
            series.append(
                {
                    **item["MainDicomTags"],
                    "ID": item["ID"],
                    "Instances": [i["ID"] for i in instances],
                    "SOPClassUID": tags.get("SOPClassUID", ""),
                    "Modality": tags.get("Modality", ""),
                }
            )
        return series

    def instance_file(self, instance_id: str) -> bytes:
        return self.get(f"/instances/{instance_id}/file")
