"""Content-addressed artifact files: each stored once, under its sha256, at ``root/ab/cd/<sha256>``.

A file is copied to a temporary name beside its target, hashed while copying, and renamed into place only when the
hash is the one expected, so a crash or a changing source never leaves a wrong or partial file under a real name.
Putting the same content twice stores it once. Reading verifies the hash. The URI of an artifact is
``artifact://sha256/<hex>``; where it lives on disk is this store's business (``path``).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from twin_imaging.errors import ArtifactError
from twin_imaging.files import atomic_path, file_sha256
from twin_imaging.twin.views import ArtifactView

URI_PREFIX = "artifact://sha256/"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20

MEDIA_TYPES = {
    "labels_nifti": "application/gzip",
    "dicom_seg": "application/dicom",
    "dicom_sr": "application/dicom",
    "overlay_png": "image/png",
    "mesh_glb": "model/gltf-binary",
    "viewer_ct": "application/gzip",
    "viewer_labels": "application/gzip",
    "results_json": "application/json",
}


def artifact_uri(sha256: str) -> str:
    return f"{URI_PREFIX}{sha256}"


class ArtifactStore:
    """Files by content hash under ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    def path(self, uri_or_sha256: str) -> Path:
        """Where the artifact's bytes live (whether or not they are there)."""
        sha256 = uri_or_sha256.removeprefix(URI_PREFIX)
        if not _SHA256.match(sha256):
            raise ArtifactError(f"not an artifact URI or sha256: {uri_or_sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(
        self,
        source: str | os.PathLike | bytes,
        *,
        kind: str,
        media_type: str | None = None,
        name: str = "",
        expected_sha256: str | None = None,
    ) -> ArtifactView:
        """Store a file (or bytes); idempotent. ``expected_sha256`` refuses content that does not match it."""
        if isinstance(source, bytes):
            sha256, size = hashlib.sha256(source).hexdigest(), len(source)
        else:
            try:
                sha256, size = file_sha256(source), os.path.getsize(source)
            except OSError as error:
                raise ArtifactError(f"cannot read artifact {kind} {name or source}: {error.strerror}") from None
        if expected_sha256 is not None and sha256 != expected_sha256:
            raise ArtifactError(
                f"artifact {kind} {name or ''} has sha256 {sha256}, expected {expected_sha256}: it changed on disk"
            )
        target = self.path(sha256)
        if not self._holds(target, sha256, size):
            self._write(source, target, sha256)
        media_type = media_type or MEDIA_TYPES.get(kind, "application/octet-stream")
        return ArtifactView(
            kind=kind, uri=artifact_uri(sha256), sha256=sha256, size_bytes=size, media_type=media_type, name=name
        )

    def _holds(self, target: Path, sha256: str, size: int) -> bool:
        """Whether ``target`` already holds the content (a damaged copy is replaced)."""
        try:
            return target.stat().st_size == size and file_sha256(target) == sha256
        except FileNotFoundError:
            return False

    def _write(self, source: str | os.PathLike | bytes, target: Path, sha256: str) -> None:
        with atomic_path(target) as temporary:
            digest = hashlib.sha256()
            with open(temporary, "wb") as out:
                if isinstance(source, bytes):
                    digest.update(source)
                    out.write(source)
                else:
                    with open(source, "rb") as stream:
                        while chunk := stream.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
            if digest.hexdigest() != sha256:  # the source changed between hashing and copying
                raise ArtifactError(f"artifact {sha256} changed while it was being stored; nothing was kept")

    def exists(self, uri_or_sha256: str) -> bool:
        return self.path(uri_or_sha256).is_file()

    def read_bytes(self, uri_or_sha256: str, *, verify: bool = True) -> bytes:
        """The artifact's bytes; ArtifactError if it is missing or (with ``verify``) no longer matches its hash."""
        path = self.path(uri_or_sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"artifact {path.name} is missing from the artifact store") from None
        if verify and hashlib.sha256(data).hexdigest() != path.name:
            raise ArtifactError(f"artifact {path.name} is corrupt: its bytes no longer match its sha256")
        return data

    def verify(self, uri_or_sha256: str) -> None:
        """Raise ArtifactError unless the artifact is present and intact (read in chunks)."""
        path = self.path(uri_or_sha256)
        if not path.is_file():
            raise ArtifactError(f"artifact {path.name} is missing from the artifact store")
        if file_sha256(path) != path.name:
            raise ArtifactError(f"artifact {path.name} is corrupt: its bytes no longer match its sha256")

    def all_sha256(self) -> set[str]:
        """Every stored artifact's hash (temporary files excluded)."""
        return {p.name for p in self.root.glob("??/??/*") if _SHA256.match(p.name)}
