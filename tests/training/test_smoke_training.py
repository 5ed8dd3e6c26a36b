"""The README's training path end to end on the smoke config: train (a few steps on phantoms) → saved config, logs and
checkpoints → export with parity → a model package that twin_imaging loads → the evaluate command scores it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("lightning")

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "training" / "configs" / "smoke.yaml"


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=_env(cwd)
    )
    assert result.returncode == 0, f"{args[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _env(cwd: Path) -> dict:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("smoke")
    run(["-m", "training.train", "fit", "--config", str(SMOKE), "--trainer.enable_progress_bar", "false"], workdir)
    return workdir


def test_training_saves_its_config_logs_and_checkpoints(smoke_run):
    version = smoke_run / "runs" / "smoke" / "csv" / "version_0"
    saved = yaml.safe_load((version / "config.yaml").read_text())
    original = yaml.safe_load(SMOKE.read_text())
    assert saved["model"]["structures"] == original["model"]["structures"]
    assert "structures" not in saved["data"]  # linked from the model: given once, never repeated
    assert saved["trainer"]["max_steps"] == original["trainer"]["max_steps"]
    assert saved["seed_everything"] == original["seed_everything"]

    rows = list(csv.DictReader((version / "metrics.csv").open()))
    assert any(r.get("train/loss_step") for r in rows)
    dices = [float(r["val/mean_dice"]) for r in rows if r.get("val/mean_dice")]
    assert dices and all(0.0 <= d <= 1.0 for d in dices)
    assert any(r.get("val/nsd_liver") for r in rows) and any(r.get("val/hd95_mm_liver") for r in rows)

    checkpoints = {p.name for p in (smoke_run / "runs" / "smoke" / "checkpoints").iterdir()}
    assert {"best.ckpt", "last.ckpt", "final.ckpt"} <= checkpoints
    assert list((smoke_run / "runs" / "smoke" / "tensorboard").rglob("events.out.tfevents.*"))


def test_the_final_checkpoint_records_time_hardware_seed_and_card_words(smoke_run):
    import torch

    path = smoke_run / "runs" / "smoke" / "checkpoints" / "final.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == yaml.safe_load(SMOKE.read_text())["trainer"]["max_steps"]
    assert checkpoint["training_seconds"] > 0
    assert checkpoint["hardware"].startswith(("CPU", "GPU"))
    assert checkpoint["seed"] == 7
    assert checkpoint["card_words"]["title"] == "Phantom smoke-test model"


@pytest.fixture(scope="module")
def smoke_package(smoke_run) -> Path:
    checkpoint = smoke_run / "runs" / "smoke" / "checkpoints" / "final.ckpt"
    out = smoke_run / "package"
    result = run(
        ["-m", "training.export", str(checkpoint), "--out", str(out), "--card-markdown", str(smoke_run / "card.md")],
        smoke_run,
    )
    assert "parity:" in result.stdout
    return out


def test_export_writes_a_package_twin_imaging_loads(smoke_package, smoke_run):
    from twin_imaging.models import load_model_package

    package = load_model_package(smoke_package)
    card = package.card
    assert card.model_id == "phantom_smoke"
    assert [s.name for s in card.structures] == ["liver", "spleen", "kidney_right", "kidney_left", "aorta"]
    assert card.structures[0].type.value == "10200004"  # SNOMED CT Liver
    assert card.preprocessing.spacing_mm == (6.0, 6.0, 6.0)
    assert card.inference.patch_size_voxels == (32, 32, 32)
    assert card.onnx.parity_max_abs_diff is not None and card.onnx.parity_max_abs_diff <= 1e-3
    assert card.training.max_steps == 12 and card.training.seed == 7 and card.training.duration_s > 0
    markdown = (smoke_run / "card.md").read_text()
    assert "Phantom smoke-test model" in markdown and card.onnx.sha256 in markdown


def test_the_onnx_model_accepts_any_batch_and_spatial_size(smoke_package):
    from twin_imaging.inference import create_session, run_session
    from twin_imaging.models import load_model_package

    package = load_model_package(smoke_package)
    session = create_session(package.onnx_path)
    for shape in [(1, 1, 32, 32, 32), (3, 1, 48, 32, 64)]:
        out = run_session(session, np.zeros(shape, np.float32), input_name="image", output_name="logits")
        assert out.shape == (shape[0], 6, *shape[2:])


def test_evaluate_scores_the_exported_package_on_a_datalist(smoke_package, tmp_path):
    from click.testing import CliRunner

    from twin_imaging.cli import cli
    from twin_imaging.io import write_nifti
    from twin_imaging.testing import PHANTOM_LABELS, PhantomGeometry, make_phantom

    phantom = make_phantom(PhantomGeometry(shape=(80, 64, 40), spacing_mm=(4.0, 4.0, 5.0)), seed=3)
    write_nifti(phantom.image, tmp_path / "ct.nii.gz")
    write_nifti(phantom.labels, tmp_path / "labels.nii.gz")
    datalist = {
        "name": "phantom",
        "labels": {str(k): v for k, v in PHANTOM_LABELS.items()},
        "training": [{"image": "ct.nii.gz", "label": "labels.nii.gz"}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(datalist))
    result = CliRunner().invoke(
        cli, ["evaluate", str(smoke_package), str(tmp_path / "dataset.json"), "--json", str(tmp_path / "e.json")]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "e.json").read_text())
    assert set(scores["summary"]) == {"liver", "spleen", "kidney_right", "kidney_left", "aorta"}
    assert all(s["n_cases"] == 1 for s in scores["summary"].values())
    assert "| liver | 1 |" in result.output


def test_a_stopped_run_resumes_from_its_last_checkpoint(tmp_path):
    """``--ckpt_path last`` starts afresh where there is no checkpoint, and continues one that stopped (as a run
    cut by the end of a session does): the resumed run ends at the longer schedule's step, not at step 12 + 16."""
    import torch

    args = ["-m", "training.train", "fit", "--config", str(SMOKE), "--trainer.enable_progress_bar", "false"]
    first = run([*args, "--ckpt_path", "last", "--trainer.max_steps", "6"], tmp_path)
    assert "starting afresh" in first.stdout
    folder = tmp_path / "runs" / "smoke" / "checkpoints"
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 6
    second = run([*args, "--ckpt_path", "last", "--trainer.max_steps", "16"], tmp_path)
    assert "resuming from" in second.stdout
    final = torch.load(folder / "final.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == 16
    assert final["training_seconds"] > 0
