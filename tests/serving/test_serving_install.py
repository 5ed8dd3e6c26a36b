"""The serving install (`pip install .[serve]`) in a fresh venv: torch is not there, and the service imports and
analyses a study with ONNX Runtime alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twin_imaging.testing import SeriesSpec, write_phantom_study
from twin_imaging.testing.phantom import PhantomGeometry

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_serving_extra_installs_without_torch_and_runs(tmp_path):
    venv = tmp_path / "serve-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{REPO_ROOT}[serve]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    installed = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert "bentoml" in installed and "onnxruntime" in installed
    assert not installed & {"torch", "monai", "lightning", "torchio", "pytorch-lightning"}
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; import serving.service; print(u.find_spec('torch'))"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(tmp_path / "bentoml")},
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.strip().endswith("None")  # torch is not importable
    study = tmp_path / "study"
    write_phantom_study(study, (SeriesSpec(geometry=PhantomGeometry(shape=(64, 64, 24), spacing_mm=(6.0, 6.0, 8.0))),))
    analysed = subprocess.run(
        [
            str(venv / "bin" / "twin-imaging"),
            "analyze",
            str(study),
            "--out",
            str(tmp_path / "out"),
            "--no-twin",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TWIN_IMAGING_MODELS_DIR": str(REPO_ROOT / "models")},
    )
    assert analysed.returncode == 0, analysed.stderr[-3000:]
    assert (tmp_path / "out" / "seg.dcm").is_file()
