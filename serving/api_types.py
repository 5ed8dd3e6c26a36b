"""The API's request field types (validated by BentoML's pydantic models) and who is calling (from the key)."""

from __future__ import annotations

from typing import Annotated, Literal

import bentoml
from pydantic import Field

from serving.errors import ApiError

PatientId = Annotated[
    str, Field(min_length=1, max_length=64, description="PatientID as the PACS knows it, or the twin's patient key")
]
Uid = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$")]
JobId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="a job's id, as submit answered it")]
AnalysisId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="an analysis' id, as the API answered it")]
ArtifactKind = Literal[
    "dicom_seg", "dicom_sr", "overlay_png", "labels_nifti", "mesh_glb", "viewer_ct", "viewer_labels", "results_json"
]
MEDIA_SUFFIX = {
    "dicom_seg": ".dcm",
    "dicom_sr": ".dcm",
    "overlay_png": ".png",
    "labels_nifti": ".nii.gz",
    "mesh_glb": ".glb",
    "viewer_ct": ".nii.gz",
    "viewer_labels": ".nii.gz",
    "results_json": ".json",
}


def caller_actor(ctx: bentoml.Context) -> str:
    principal = getattr(ctx.request.state, "principal", None)
    if principal is None:  # the middleware lets no keyless request through to an API; refuse if it ever did
        raise ApiError(401, "a valid API key is required")
    return principal.actor


def caller_scope(ctx: bentoml.Context) -> str | None:
    """The actor whose key reads only what it sent, or None for a key that reads everything (scope 'all')."""
    principal = ctx.request.state.principal
    return None if principal.sees_everything else principal.actor
