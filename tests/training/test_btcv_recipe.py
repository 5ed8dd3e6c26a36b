"""The BTCV recipes: 13 structures mapped by name from BTCV's labels, BTCV's window, the standard split as fold 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from training.train import main
from twin_imaging.datalist import label_lookup, read_datalist

REPO = Path(__file__).resolve().parents[2]
BTCV_TEST_SPLIT = {"0001", "0002", "0003", "0004", "0008", "0022", "0025", "0029", "0032", "0035", "0036", "0038"}
BTCV_LABELS = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_and_splenic_vein",
    11: "pancreas",
    12: "adrenal_gland_right",
    13: "adrenal_gland_left",
}


def test_the_datalist_holds_the_standard_split_as_fold_1(tmp_path):
    document = json.loads((REPO / "training" / "datalists" / "btcv.json").read_text())
    folds = {entry["case_id"][3:]: entry["fold"] for entry in document["training"]}
    assert len(folds) == 30
    assert {case for case, fold in folds.items() if fold == 1} == BTCV_TEST_SPLIT
    assert {int(k): v for k, v in document["labels"].items() if k != "0"} == BTCV_LABELS
    assert document["relative_to_prepared_data"] == "btcv"
    # evaluation maps by name too: BTCV's name of the portal vein is the project's SNOMED-coded one
    (tmp_path / "names.json").write_text(json.dumps({**document, "training": []}))  # its names, not its files
    datalist = read_datalist(tmp_path / "names.json", data_root=tmp_path)
    assert datalist.model_label_names()[10] == "portal_vein_and_splenic_vein"
    assert datalist.label_names[10] == "portal_and_splenic_vein"


@pytest.mark.parametrize("model_id", ["abdomen_ct_fast", "abdomen_ct_accurate"])
def test_recipe_maps_every_btcv_label_and_uses_btcv_window(model_id):
    config = REPO / "training" / "configs" / f"{model_id}.yaml"
    cli = main(["--config", str(config), "--data.datalist", "null"], run=False)
    model, data = cli.model.hparams, cli.datamodule.hparams
    assert model.model_id == model_id
    assert tuple(model.window_hu) == (-125.0, 275.0)
    assert len(model.structures) == 13
    lookup = label_lookup(BTCV_LABELS, model.structures, mapping=data.label_mapping)
    # every BTCV label lands on its own structure, and the structure carries the same anatomy
    assert sorted(lookup[1:14].tolist()) == list(range(1, 14))
    for value, name in BTCV_LABELS.items():
        ours = model.structures[lookup[value] - 1]
        assert ours == name or (ours, name) == ("portal_vein_and_splenic_vein", "portal_and_splenic_vein")
    spacing = tuple(model.spacing_mm)
    if model_id.endswith("fast"):
        assert spacing == (3.0, 3.0, 3.0)
    else:
        assert max(spacing[:2]) <= 2.0  # the accurate model: 1.5-2 mm in-plane


def test_the_all30_overlay_trains_every_case_plus_phantoms_from_the_split_model():
    config = REPO / "training" / "configs"
    cli = main(
        [
            "--config",
            str(config / "abdomen_ct_fast.yaml"),
            "--config",
            str(config / "all30_finetune.yaml"),
            "--model.init_weights",
            "runs/abdomen_ct_fast_split/checkpoints/final.ckpt",
            "--data.datalist",
            "null",
        ],
        run=False,
    )
    data = cli.datamodule.hparams
    assert data.train_folds is None and data.val_folds == []  # all 30 train, none is held out
    assert data.phantom_train_cases > 0 and 0 < data.phantom_fraction <= 0.1
    assert cli.model.hparams.init_weights.endswith("final.ckpt")
    assert cli.model.hparams.model_id == "abdomen_ct_fast" and tuple(cli.model.hparams.window_hu) == (-125.0, 275.0)


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-bf16"])
def test_bf16_recipes_train_in_fp32_on_a_cpu_without_native_bf16(monkeypatch, native):
    import training.train as train

    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
    config = REPO / "training" / "configs" / "abdomen_ct_fast.yaml"
    cli = main(["--config", str(config), "--data.datalist", "null", "--trainer.accelerator", "cpu"], run=False)
    assert cli.trainer.precision == cli.config.trainer.precision == ("bf16-mixed" if native else "32-true")


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    from training.train import cpu_has_native_bf16

    (tmp_path / "avx2").write_text("processor : 0\nflags : fpu sse2 avx avx2 fma\n")
    (tmp_path / "bf16").write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    assert not cpu_has_native_bf16(tmp_path / "avx2") and cpu_has_native_bf16(tmp_path / "bf16")


@pytest.mark.parametrize(
    "overlays",
    [
        ("renal_ct_region",),
        ("renal_ct_region", "renal_ct_region_phantoms"),
        ("renal_ct_region", "renal_ct_region_mixed"),
    ],
    ids=["region", "phantom-stage", "mixed"],
)
def test_the_renal_refinement_recipes_train_on_fold_0_only(overlays):
    """The refinement's held-out numbers are on BTCV fold 1: no renal recipe may train or pick weights on it."""
    config = REPO / "training" / "configs"
    args = ["--config", str(config / "abdomen_ct_fast.yaml")]
    for overlay in overlays:
        args += ["--config", str(config / f"{overlay}.yaml")]
    cli = main([*args, "--data.datalist", "null"], run=False)
    data, model = cli.datamodule.hparams, cli.model.hparams
    assert list(data.train_folds) == [0] and not data.val_folds
    assert list(model.structures) == ["kidney_right", "kidney_left", "renal_tumor", "renal_cyst"]
    assert tuple(model.spacing_mm) == (1.5, 1.5, 1.5) and 0 < data.fresh_lesion_fraction < 1
