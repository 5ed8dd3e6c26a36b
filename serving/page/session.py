"""Twin-page sign-in: a clinician's API key, entered once, becomes a signed, expiring session cookie.

The cookie never holds the key. It holds the key's name, an expiry and an HMAC-SHA256 over both and the key's
stored hash, made with a server secret (``settings.page_session_secret_file``, created at first use, owner-only;
replicas share it through the data folder). So a revoked key ends its sessions at once (its entry and hash are gone),
a cookie cannot be forged or extended without the secret, and no session table is needed: any replica checks any
cookie. The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), Path=/, and
Secure where the request came over HTTPS. Requests that ride on it must also carry ``X-Twin-Page: 1``: a header
another origin cannot add without a CORS preflight, which this service never grants (a second guard against
cross-site requests, beside SameSite).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from twin_imaging.access import ApiKeyEntry

COOKIE_NAME = "twin_imaging_session"
PAGE_HEADER = b"x-twin-page"
TOKEN_VERSION = "v1"
SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """The signing secret at ``path``; created (random, mode 0600) if absent. Two processes creating it at once
    agree: the file is published with a hard link, which fails where another process got there first."""
    with contextlib.suppress(FileNotFoundError):
        data = path.read_bytes()
        if len(data) >= SECRET_BYTES:
            return data
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(secrets.token_bytes(SECRET_BYTES))
            stream.flush()
            os.fsync(stream.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_bytes()


@dataclass(frozen=True)
class SessionSigner:
    secret: bytes
    lifetime_s: float

    def issue(self, entry: ApiKeyEntry, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime_s)
        name = base64.urlsafe_b64encode(entry.name.encode("utf-8")).decode("ascii").rstrip("=")
        return f"{TOKEN_VERSION}.{name}.{expires}.{self._mac(entry, expires)}"

    def verify(self, token: str, lookup, *, now: float | None = None) -> ApiKeyEntry | None:
        """The key entry a cookie stands for, or None (malformed, expired, forged, or its key revoked).
        ``lookup``: key name → its current entry or None."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_VERSION or not parts[2].isdigit():
            return None
        expires = int(parts[2])
        if expires <= (time.time() if now is None else now):
            return None
        try:
            name = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        entry = lookup(name)
        if entry is None or not hmac.compare_digest(parts[3], self._mac(entry, expires)):
            return None
        return entry

    def _mac(self, entry: ApiKeyEntry, expires: int) -> str:
        message = f"{entry.name}\n{entry.sha256}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=1)
def session_signer() -> SessionSigner:
    """The process' signer, from the settings (secret file, lifetime): the auth middleware verifies with it, the
    sign-in route issues with it."""
    from twin_imaging.settings import get_settings

    settings = get_settings()
    return SessionSigner(load_or_create_secret(settings.page_session_secret_file), settings.page_session_hours * 3600)


def from_page(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request carries the page's ``X-Twin-Page`` header."""
    return any(name.lower() == PAGE_HEADER for name, _ in headers)


def session_cookie(token: str, *, max_age_s: int, secure: bool) -> str:
    """A Set-Cookie value; an empty token with max_age 0 clears it."""
    attributes = [f"{COOKIE_NAME}={token}", "Path=/", f"Max-Age={max_age_s}", "HttpOnly", "SameSite=Strict"]
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)


def cookie_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The session token from the request's Cookie headers, if any."""
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for pair in value.decode("latin-1").split(";"):
            key, _, token = pair.strip().partition("=")
            if key == COOKIE_NAME and token:
                return token
    return None


def came_over_https(scope: dict) -> bool:
    if scope.get("scheme") == "https":
        return True
    for name, value in scope.get("headers", []):
        if name.lower() == b"x-forwarded-proto" and value.decode("latin-1").strip().lower() == "https":
            return True
    return False
