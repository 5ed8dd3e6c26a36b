"""Fixtures shared by every test module.

Real data lives beside the project (``../shared/data``, or ``TWIN_IMAGING_SHARED_DATA_DIR``); tests that need it
skip with the reason where it is absent. External peers (dcm2niix, dciodvfy, dcmtk) are installed by the README's
set-up; a test that needs one skips when it is missing, except under CI, where a missing peer is a failure so that a
broken set-up cannot pass as green.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from twin_imaging.settings import get_settings


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = get_settings().shared_data_dir
    if not path.is_dir():
        pytest.skip(f"real data folder not found at {path} (set TWIN_IMAGING_SHARED_DATA_DIR)")
    return path


def shared_file(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    if not path.exists():
        pytest.skip(f"{relative} is not in {shared_data}")
    return path


RENAL_CASCADE = "abdomen_ct_fast_renal"  # the installed, opt-in organ + renal-mass cascade


def _labels_renal_masses(model: str) -> bool:
    from twin_imaging.errors import ModelError
    from twin_imaging.models import load_model_package

    try:  # the card alone: no hashing of the ONNX file at collection time
        card = load_model_package(get_settings().models_dir / model, verify=False).card
    except ModelError:
        return False
    return {"renal_tumor", "renal_cyst"} <= {s.name for s in card.structures}


def renal_mass_model() -> str | None:
    """The installed model package that labels renal tumours and cysts (the tests of the surgical path from a CT alone
    need one): the default organ model if it does, else the renal cascade, else none."""
    default = get_settings().default_segmentation_model
    for model in (default, RENAL_CASCADE):
        if _labels_renal_masses(model):
            return model
    return None


NEEDS_RENAL_MASS_MODEL = pytest.mark.skipif(
    renal_mass_model() is None,
    reason="no installed model labels renal tumours or cysts (models/abdomen_ct_fast_renal: compose it as the README "
    "says)",
)


def require_tool(name: str) -> str:
    """The path of an external program, or skip (fail under CI) if it is not installed."""
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (the README's set-up installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    """No test writes to the user's twin: each gets its own data folder (database and artifacts)."""
    monkeypatch.setenv("TWIN_IMAGING_DATA_DIR", str(tmp_path_factory.mktemp("twin_data")))


@pytest.fixture(autouse=True)
def _fresh_settings(_isolated_data_dir):
    """Settings are cached per process; tests that set TWIN_IMAGING_* variables get a fresh read."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session (``twin_imaging.testing.postgres``); skips without the
    binaries, except under CI, where it fails."""
    from twin_imaging.testing.postgres import PostgresUnavailable, throwaway_postgres

    try:
        context = throwaway_postgres()
        server = context.__enter__()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        context.__exit__(None, None, None)
