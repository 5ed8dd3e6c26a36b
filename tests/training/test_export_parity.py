"""Export parity: ONNX must reproduce torch within 1e-3 on a real CT patch, and the check must fail when it does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from tests.conftest import shared_file  # noqa: E402
from training.export import PARITY_TOLERANCE, ParityError, check_parity, export_onnx, parity_inputs  # noqa: E402
from training.module import SegmentationModule  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped_architecture() -> SegmentationModule:
    """The shipped recipe's network, randomly initialised (parity is a property of the export, not the weights)."""
    config = yaml.safe_load((REPO / "training" / "configs" / "abdomen_ct_organs.yaml").read_text())["model"]
    config.pop("card_file", None)
    torch.manual_seed(0)
    return SegmentationModule(**config).eval()


@pytest.fixture(scope="module")
def exported(shipped_architecture, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(shipped_architecture, path)
    return path


def test_onnx_matches_torch_on_a_real_ct_patch(shipped_architecture, exported, shared_data):
    real = shared_file(shared_data, "totalsegmentator/example_ct.nii.gz")
    inputs = parity_inputs(shipped_architecture, str(real))
    real_patch = next(v for k, v in inputs.items() if k.startswith("real patch"))
    assert real_patch.std() > 0.05  # a patch of anatomy, not of padding
    worst, worst_logit = check_parity(shipped_architecture, exported, inputs, PARITY_TOLERANCE)
    assert worst <= PARITY_TOLERANCE and worst_logit < 0.1


def test_parity_fails_when_onnx_and_torch_differ(shipped_architecture, exported):
    inputs = parity_inputs(shipped_architecture, None)
    changed = SegmentationModule(**{**dict(shipped_architecture.hparams), "card_file": None})
    changed.load_state_dict(shipped_architecture.state_dict())
    with torch.no_grad():
        last = [p for p in changed.net.parameters()][-1]
        last[0].add_(0.05)  # a small change of one class's bias the ONNX file does not have
    with pytest.raises(ParityError, match="differ from torch"):
        check_parity(changed.eval(), exported, inputs, PARITY_TOLERANCE)


def test_parity_tolerance_is_enforced(shipped_architecture, exported):
    inputs = parity_inputs(shipped_architecture, None)
    with pytest.raises(ParityError):
        check_parity(shipped_architecture, exported, inputs, 1e-12)


def test_parity_inputs_cover_batches_and_other_sizes(shipped_architecture):
    inputs = parity_inputs(shipped_architecture, None)
    shapes = [v.shape for v in inputs.values()]
    assert any(s[0] > 1 for s in shapes)
    assert any(s[2:] != tuple(shipped_architecture.hparams.patch_size) for s in shapes)
    assert all(v.dtype == np.float32 for v in inputs.values())
