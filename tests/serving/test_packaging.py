"""The Bento (bentofile.yaml): it builds, carries the models and the twin's migrations, and its Python packages are
the torch-free serving set pinned in pyproject.toml."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bentofile_packages_are_the_pinned_serving_set():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    bentofile = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    assert bentofile["python"]["packages"] == project["dependencies"] + project["optional-dependencies"]["serve"]
    assert not any(p.split("==")[0] in {"torch", "monai", "lightning"} for p in bentofile["python"]["packages"])


def test_bentoml_build_packs_the_service_with_its_models_and_migrations(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    built = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "build", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (bento,) = [p for p in (tmp_path / "bentoml" / "bentos" / "twin_imaging").iterdir() if p.name != "latest"]
    source = bento / "src"
    assert (source / "serving" / "service.py").is_file()
    assert (source / "models" / "abdomen_ct_fast" / "card.json").is_file()
    assert list((source / "models" / "abdomen_ct_fast").glob("*.onnx"))
    assert (source / "models" / "nephrectomy_outcomes" / "card.json").is_file()
    assert list((source / "twin_imaging" / "twin" / "migrations" / "versions").glob("*.py"))
    assert (source / "twin_imaging" / "twin" / "migrations" / "script.py.mako").is_file()
    assert not (source / "training").exists() and not (source / "tests").exists()
    assert "/v1/analyze" in (bento / "apis" / "openapi.yaml").read_text()
