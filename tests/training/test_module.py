"""The LightningModule's own behaviour: starting a run from another run's network weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.module import SegmentationModule, load_network_weights  # noqa: E402

SMALL = {"channels": [4, 8], "strides": [2], "num_res_units": 0}


def module(structures=("liver", "spleen")) -> SegmentationModule:
    return SegmentationModule(
        model_id="t", structures=list(structures), patch_size=(16, 16, 16), network="unet", network_kwargs=SMALL
    )


def test_init_weights_copies_the_network_of_another_run(tmp_path):
    torch.manual_seed(0)
    source = module()
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict(), "global_step": 6000}, path)
    torch.manual_seed(1)
    target = module()
    assert not torch.equal(source.net.model[0].conv.weight, target.net.model[0].conv.weight)
    load_network_weights(target, path)
    for (name, a), (_, b) in zip(source.net.state_dict().items(), target.net.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_init_weights_of_another_network_is_refused_by_name(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": module(("liver", "spleen", "aorta")).state_dict()}, path)
    with pytest.raises(ValueError, match="does not match"):
        load_network_weights(module(), path)
