"""The twin page: the clinicians' door, served by the API's own process under ``/page`` (no other web server).

    GET  /page/                 the page (HTML shell, no patient data; public)
    GET  /page/static/...       its script, style and the vendored Niivue viewer (public, no patient data)
    POST /page/session          sign in: the key in ``Authorization: Bearer``; clinician or admin role; answers the
                                key's name and role and sets the session cookie (``serving.page.session``)
    GET  /page/whoami           who the session cookie stands for, or {"signed_in": false} (expired, revoked, none)
    POST /page/logout           clears the cookie
    POST /page/api/view         {"patient_id", "view"}: the page records that a view of a patient was opened
    POST /page/api/meshes       {"analysis_id"}: the analysis' surface meshes (its mesh_glb artifact) as arrays

Everything else the page shows it reads from the API's own routes (/v1/twin/..., /v1/artifacts/download) with the
session cookie, so the page sees exactly what the API would show the same key, audited the same way. Every answer
carries a Content-Security-Policy that allows nothing but this origin: no CDN, no third-party request of any kind.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import anyio
import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from serving.errors import error_response, status_of
from serving.page.session import came_over_https, session_cookie, session_signer
from twin_imaging.errors import ArtifactError, InputError, TwinImagingError

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
VIEWS = frozenset({"timeline", "trends", "viewer", "scenarios"})
# Niivue compiles its shaders and builds textures itself (no eval); blob: and data: images are its own canvases.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "worker-src 'self' blob:; font-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _principal(request: Request):
    return request.state.principal  # the auth middleware lets no request without a valid key or session here


async def _json_body(request: Request, *fields: str) -> dict[str, str]:
    try:
        body = await request.json()
    except ValueError:
        raise InputError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    missing = [f for f in fields if not isinstance(body.get(f), str) or not body[f].strip()]
    if missing:
        raise InputError(f"missing or empty field(s): {', '.join(missing)}")
    return {f: body[f].strip() for f in fields}


def _refusals(handler):
    async def wrapped(request: Request) -> Response:
        try:
            response = await handler(request)
        except TwinImagingError as exc:
            status = int(status_of(exc))
            log.info("page %s refused: %s %s", request.url.path, status, type(exc).__name__)
            response = error_response(status, str(exc))
        response.headers.update(SECURITY_HEADERS)
        return response

    return wrapped


async def page(request: Request) -> Response:
    response = FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")
    response.headers.update(SECURITY_HEADERS)
    return response


@_refusals
async def sign_in(request: Request) -> Response:
    entry = _principal(request)
    signer = session_signer()
    response = JSONResponse({"signed_in": True, "name": entry.name, "role": entry.role})
    cookie = session_cookie(
        signer.issue(entry), max_age_s=int(signer.lifetime_s), secure=came_over_https(request.scope)
    )
    response.headers["Set-Cookie"] = cookie
    log.info("twin page: %s signed in", entry.actor)
    return response


@_refusals
async def whoami(request: Request) -> Response:
    entry = getattr(request.state, "principal", None)  # set by the auth middleware for a valid session only
    if entry is None:
        return JSONResponse({"signed_in": False})
    return JSONResponse({"signed_in": True, "name": entry.name, "role": entry.role})


async def sign_out(request: Request) -> Response:
    response = Response(status_code=204)
    response.headers["Set-Cookie"] = session_cookie("", max_age_s=0, secure=came_over_https(request.scope))
    response.headers.update(SECURITY_HEADERS)
    return response


@_refusals
async def record_view(request: Request) -> Response:
    body = await _json_body(request, "patient_id", "view")
    if body["view"] not in VIEWS:
        raise InputError(f"unknown view {body['view']!r}; one of {sorted(VIEWS)}")
    store = bentoml.get_current_service().store
    actor = _principal(request).actor

    def record() -> None:
        store.record_page_view(store.resolve_patient_key(body["patient_id"]), body["view"], actor=actor)

    await anyio.to_thread.run_sync(record)
    return Response(status_code=204)


@_refusals
async def meshes(request: Request) -> Response:
    body = await _json_body(request, "analysis_id")
    store = bentoml.get_current_service().store
    principal = _principal(request)
    only_sent_by = None if principal.sees_everything else principal.actor

    def read() -> list[dict[str, Any]]:
        _, path = store.artifact_file(body["analysis_id"], "mesh_glb", actor=principal.actor, only_sent_by=only_sent_by)
        try:
            return glb_meshes(path)
        except Exception as exc:  # its sha256 matched, so the file was written unreadable: the server's fault, named
            name = type(exc).__name__
            raise ArtifactError(f"the meshes of analysis {body['analysis_id']} cannot be read ({name})") from None

    return JSONResponse({"meshes": await anyio.to_thread.run_sync(read)})


def glb_meshes(path: Path) -> list[dict[str, Any]]:
    """Each structure's surface from a meshes.glb (``twin_imaging.meshes``): name, vertices (float32 x, y, z in
    patient RAS mm) and triangles (uint32), little-endian, base64. trimesh reads the glTF; the browser then needs
    no glTF reader of its own (Niivue has none)."""
    import trimesh

    scene = trimesh.load(path, file_type="glb", force="scene")
    found = []
    for name, geometry in scene.geometry.items():
        vertices = np.ascontiguousarray(geometry.vertices, dtype="<f4")
        faces = np.ascontiguousarray(geometry.faces, dtype="<u4")
        found.append(
            {
                "name": name,
                "vertices": base64.b64encode(vertices.tobytes()).decode("ascii"),
                "faces": base64.b64encode(faces.tobytes()).decode("ascii"),
            }
        )
    return found


page_app = Starlette(
    routes=[
        Route("/", page, methods=["GET", "HEAD"]),
        Route("/session", sign_in, methods=["POST"]),
        Route("/whoami", whoami, methods=["GET"]),
        Route("/logout", sign_out, methods=["POST"]),
        Route("/api/view", record_view, methods=["POST"]),
        Route("/api/meshes", meshes, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
)
