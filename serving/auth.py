"""API-key authentication, roles per route and the request body limit, as one ASGI middleware.

A key comes in ``Authorization: Bearer <key>`` or ``X-API-Key``. Health, readiness, metrics and the OpenAPI
document need none. A missing or unknown key gets 401, a key whose role may not use the route 403, a body over
``serve_max_upload_bytes`` 413 (checked on the declared length and on the bytes as they stream in). The key file is
re-read when it changes, so a revoked key stops working at once. The caller's key entry goes into the request's
state (``principal``): the API names it as the actor in the twin's audit log. The twin page signs a clinician in
once and then rides on a session cookie (``serving.page.session``): where no key is presented, a valid cookie with
the page's ``X-Twin-Page`` header stands for the key it was issued to, under the same role checks.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from serving.errors import error_body
from serving.page.session import cookie_token, from_page, session_signer
from twin_imaging.access import ApiKeyEntry, ApiKeyRegistry
from twin_imaging.errors import InputError
from twin_imaging.settings import get_settings

PUBLIC_PATHS = frozenset(
    {"/", "/docs", "/docs.json", "/livez", "/readyz", "/healthz", "/metrics", "/schema.json"}
    | {"/page", "/page/", "/page/logout", "/page/whoami"}  # the twin page's shell (no patient data), sign-out
)
WHOAMI_PATH = "/page/whoami"  # public; names the session's key holder, if the request carries a valid session
PUBLIC_PREFIXES = ("/static_content/", "/page/static/")
INTEGRATION, CLINICIAN, ADMIN = "integration", "clinician", "admin"
# Path prefix → roles allowed; the first match wins. A path matching none needs a valid key of any role (and then
# gets the router's 404).
ROUTE_ROLES: tuple[tuple[str, frozenset[str]], ...] = (
    ("/v1/analyze", frozenset({INTEGRATION, ADMIN})),  # also /v1/analyze_job/{submit,status,get}
    ("/dicomweb", frozenset({INTEGRATION, ADMIN})),
    ("/v1/inbox", frozenset({INTEGRATION, ADMIN})),
    ("/v1/analyses", frozenset({INTEGRATION, CLINICIAN, ADMIN})),
    ("/v1/artifacts", frozenset({INTEGRATION, CLINICIAN, ADMIN})),
    ("/v1/models", frozenset({INTEGRATION, CLINICIAN, ADMIN})),
    ("/v1/twin", frozenset({CLINICIAN, ADMIN})),
    ("/v1/outcome", frozenset({CLINICIAN, ADMIN})),
    ("/page/", frozenset({CLINICIAN, ADMIN})),  # sign-in (/page/session) and the page's own data routes
)


def roles_for(path: str) -> frozenset[str] | None:
    """The roles that may use ``path``; None where no key is needed."""
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return None
    for prefix, roles in ROUTE_ROLES:
        if path.startswith(prefix):
            return roles
    return frozenset({INTEGRATION, CLINICIAN, ADMIN})


class KeyRing:
    """The key registry, re-read whenever its file changes (mtime and size)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._registry = ApiKeyRegistry(path, [])
        self.refresh()

    def refresh(self) -> None:
        if self.path is None:
            return
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            self._registry, self._stamp = ApiKeyRegistry(self.path, []), None
            return
        if stamp != self._stamp:
            self._registry = ApiKeyRegistry.load(self.path)
            self._stamp = stamp

    def authenticate(self, key: str | None) -> ApiKeyEntry | None:
        with contextlib.suppress(InputError):  # a half-edited key file: keep the keys last read
            self.refresh()
        return self._registry.authenticate(key)

    def entry_named(self, name: str) -> ApiKeyEntry | None:
        with contextlib.suppress(InputError):
            self.refresh()
        return next((e for e in self._registry.entries if e.name == name), None)


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif lowered == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


class ApiKeyMiddleware:
    def __init__(
        self,
        app: Any,
        *,
        keys_file: Path | None = None,
        max_body_bytes: int | None = None,
        max_json_bytes: int | None = None,
    ) -> None:
        """Unset arguments come from the settings when the server builds its app (not at import)."""
        settings = get_settings()
        self.app = app
        self.keys = KeyRing(keys_file or settings.api_keys_file)
        self.max_body_bytes = max_body_bytes or settings.serve_max_upload_bytes
        self.max_json_bytes = max_json_bytes or settings.serve_max_json_bytes
        self.sessions = session_signer()

    def _session_entry(self, headers: list[tuple[bytes, bytes]]) -> ApiKeyEntry | None:
        token = cookie_token(headers)
        return None if token is None else self.sessions.verify(token, self.keys.entry_named)

    def body_limit(self, path: str) -> int:
        """Uploads (file routes, STOW-RS) may be large; every other route takes a small JSON body."""
        if path in FILE_ROUTES or path.startswith("/dicomweb/"):
            return self.max_body_bytes
        return min(self.max_json_bytes, self.max_body_bytes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        roles = roles_for(scope["path"])
        headers = scope.get("headers", [])
        if roles is None and scope["path"] == WHOAMI_PATH:  # public, but says who a valid session belongs to
            entry = self._session_entry(headers) if from_page(headers) else None
            if entry is not None:
                scope.setdefault("state", {})["principal"] = entry
        if roles is not None:
            key = presented_key(headers)
            token = cookie_token(headers) if key is None else None
            if token is not None and not from_page(headers):
                return await _reply(send, 403, "a twin-page session is accepted only from the twin page")
            entry = self.keys.authenticate(key) if token is None else self._session_entry(headers)
            if entry is None:
                return await _reply(
                    send,
                    401,
                    "the twin-page session has expired or its key was revoked: sign in again"
                    if token is not None
                    else "a valid API key is required (Authorization: Bearer KEY or X-API-Key)",
                    headers=[(b"www-authenticate", b'Bearer realm="twin-imaging"')],
                )
            if entry.role not in roles:
                return await _reply(
                    send, 403, f"role {entry.role!r} may not use {scope['path']}; it needs one of {sorted(roles)}"
                )
            scope.setdefault("state", {})["principal"] = entry
        limit = self.body_limit(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            return await _reply(send, 413, f"request body of {declared} bytes is over the limit of {limit} bytes")
        problem = _content_type_problem(scope)
        if problem is not None:
            return await _reply(send, *problem)
        started = False

        async def watched_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _limited(receive, limit), watched_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _reply(send, 413, str(exc))


# Routes whose input has file fields: multipart/form-data only (BentoML would otherwise read a JSON body as a URL
# to download).
FILE_ROUTES = frozenset(
    {"/v1/analyze", "/v1/analyze_job", "/v1/analyze_job/submit", "/v1/outcome/predict", "/v1/analyses/expert_seg"}
)


def _header(scope: dict, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == wanted:
            return value.decode("latin-1")
    return None


def _content_type_problem(scope: dict) -> tuple[int, str] | None:
    if scope.get("method") != "POST":
        return None
    content_type = _header(scope, b"content-type") or ""
    media = content_type.split(";")[0].strip().lower()
    if media.startswith("multipart/") and "boundary=" not in content_type.lower():
        return 400, f"the {media} content type has no boundary parameter"
    if scope["path"] in FILE_ROUTES and media != "multipart/form-data":
        return 415, f"{scope['path']} takes multipart/form-data (file uploads), got {media or 'no content type'!r}"
    return None


def _content_length(scope: dict) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


class BodyTooLarge(BaseException):
    """Raised from ``receive``. A BaseException on purpose: BentoML turns every Exception in an API into a 500,
    while this one must travel up to the middleware and become a 413."""


def _limited(receive: Any, limit: int) -> Any:
    """A receive that refuses a body streaming past ``limit`` bytes (chunked uploads declare no length)."""
    seen = 0

    async def wrapped() -> dict:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
        return message

    return wrapped


async def _reply(send: Any, status: int, message: str, *, headers: list | None = None) -> None:
    body = json.dumps(error_body(status, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
