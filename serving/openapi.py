"""The STOW-RS route in the served OpenAPI document.

BentoML documents its own API methods and mounted FastAPI apps only; the STOW-RS route is a plain Starlette app
(BentoML cannot parse multipart/related), so its two paths are added here to the generated document, where an
integration engineer (and schemathesis) finds them.
"""

from __future__ import annotations

_STORE_RESPONSE = {
    "type": "object",
    "description": "DICOM JSON Store Instances Response (PS3.18 10.5.3): 00081199 ReferencedSOPSequence, "
    "00081198 FailedSOPSequence with 00081197 FailureReason",
}


def _operation(summary: str, *, with_study: bool) -> dict:
    operation = {
        "summary": summary,
        "tags": ["DICOMweb"],
        "requestBody": {
            "required": True,
            "content": {
                'multipart/related; type="application/dicom"': {"schema": {"type": "string", "format": "binary"}}
            },
        },
        "responses": {
            "200": {
                "description": "every instance stored",
                "content": {"application/dicom+json": {"schema": _STORE_RESPONSE}},
            },
            "202": {
                "description": "some instances stored",
                "content": {"application/dicom+json": {"schema": _STORE_RESPONSE}},
            },
            "409": {
                "description": "no instance stored",
                "content": {"application/dicom+json": {"schema": _STORE_RESPONSE}},
            },
            "400": {"description": "a malformed multipart body"},
            "401": {"description": "no valid API key"},
            "403": {"description": "the key's role may not push studies"},
            "413": {"description": "the body is over the upload limit"},
            "415": {"description": "not multipart/related of application/dicom"},
        },
    }
    if with_study:
        operation["parameters"] = [
            {
                "name": "study",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": r"^[0-9.]+$"},
                "description": "StudyInstanceUID every instance must belong to",
            }
        ]
    return {"post": operation}


DICOMWEB_PATHS = {
    "/dicomweb/studies": _operation("STOW-RS: store instances (analysed once their study is quiet)", with_study=False),
    "/dicomweb/studies/{study}": _operation("STOW-RS: store instances of one study", with_study=True),
}


def document_dicomweb_routes() -> None:
    """Wrap BentoML's spec generator so that the served document carries the STOW-RS paths."""
    from _bentoml_sdk.service import openapi
    from bentoml._internal.service.openapi.specification import PathItem
    from bentoml._internal.utils.cattr import bentoml_cattr

    if getattr(openapi.generate_spec, "_twin_imaging", False):
        return
    generate = openapi.generate_spec

    def generate_spec(svc, **kwargs):
        spec = generate(svc, **kwargs)
        for path, item in DICOMWEB_PATHS.items():
            spec.paths[path] = bentoml_cattr.structure(item, PathItem)
        return spec

    generate_spec._twin_imaging = True
    openapi.generate_spec = generate_spec
