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


def test_init_weights_grow_the_class_layers_for_structures_appended(tmp_path):
    torch.manual_seed(0)
    source = module(("liver", "spleen"))
    path = tmp_path / "organs.ckpt"
    torch.save({"state_dict": source.state_dict(), "hyper_parameters": dict(source.hparams)}, path)
    target = module(("liver", "spleen", "renal_tumor"))
    load_network_weights(target, path)
    theirs, ours = source.net.state_dict(), target.net.state_dict()
    grown = [name for name in theirs if theirs[name].shape != ours[name].shape]
    assert grown  # the layers that produce the classes
    for name, value in theirs.items():  # every weight the two share is the checkpoint's
        assert torch.equal(ours[name][tuple(slice(0, n) for n in value.shape)], value), name
    image = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        old, new = source.eval()(image), target.eval()(image)
    assert new.shape[1] == 4 and old.shape[1] == 3


def test_init_weights_with_other_structures_first_are_refused(tmp_path):
    source = module(("spleen", "liver"))
    path = tmp_path / "other_order.ckpt"
    torch.save({"state_dict": source.state_dict(), "hyper_parameters": dict(source.hparams)}, path)
    with pytest.raises(ValueError, match="not the first of this model's"):
        load_network_weights(module(("liver", "spleen", "renal_tumor")), path)


def test_every_recipes_card_words_read_cleanly():
    """Each config's card file exists and passes the check training runs, so an export never fails on its words."""
    from pathlib import Path

    import yaml

    from training.module import read_card_words

    repo = Path(__file__).resolve().parents[2]
    configs = sorted((repo / "training" / "configs").glob("*.yaml"))
    named = [c for c in configs if (yaml.safe_load(c.read_text()) or {}).get("model", {}).get("card_file")]
    assert any(c.name == "renal_masses.yaml" for c in named)
    for config in named:
        card_file = yaml.safe_load(config.read_text())["model"]["card_file"]
        words = read_card_words(str(repo / card_file))
        assert words["title"], config


def test_post_processing_that_names_a_structure_the_model_lacks_is_refused_before_training():
    with pytest.raises(ValueError, match=r"lacks: \['kidney_left'\]"):
        SegmentationModule(
            model_id="t",
            structures=["liver", "renal_tumor"],
            patch_size=(16, 16, 16),
            network="unet",
            network_kwargs=SMALL,
            attached_to={"renal_tumor": ["kidney_left"]},
        )
