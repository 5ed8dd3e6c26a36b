"""The LightningDataModule: datalist (and/or synthetic phantom) cases → deterministic preprocessing → patches.

The deterministic part (reorient to RAS, resample to the model spacing, intensity window) is ``twin_imaging``'s,
the very code serving runs; only the random part (class-balanced patch sampling, spatial and intensity
augmentation) is MONAI's and lives here. Preprocessed cases are cached in memory: the datasets this kit targets on
one machine fit, and a GPU run with a larger dataset uses more workers rather than a different pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
from monai import transforms as mt
from torch.utils.data import DataLoader, Dataset

from training.augment import training_augmentation
from training.paths import resolve_config_path
from twin_imaging.datalist import label_lookup, read_datalist
from twin_imaging.io import read_image
from twin_imaging.models.card import IntensitySpec, PreprocessingSpec
from twin_imaging.settings import get_settings
from twin_imaging.testing import PhantomAnatomy, PhantomGeometry, make_phantom
from twin_imaging.testing.phantom import RENAL_CYST, RENAL_TUMOUR, Ellipsoid, Structure
from twin_imaging.transforms import preprocess_image, preprocess_labels, resample_to_grid
from twin_imaging.volume import Volume

if TYPE_CHECKING:
    from training.synthetic_lesions import InsertionSpec, ShapeBank

log = logging.getLogger(__name__)


@dataclass
class PreparedCase:
    case_id: str
    image: np.ndarray  # (1, X, Y, Z) float32 on the model grid
    labels: np.ndarray  # (1, X, Y, Z) uint8, the model's label values
    source: str  # which dataset it came from, for logs and the card


def preprocessing_spec(spacing_mm: Sequence[float], window_hu: Sequence[float]) -> PreprocessingSpec:
    return PreprocessingSpec(
        spacing_mm=tuple(float(s) for s in spacing_mm),
        intensity=IntensitySpec(window_min_hu=float(window_hu[0]), window_max_hu=float(window_hu[1])),
    )


def prepare_case(
    case_id: str, image: Volume, labels: Volume, lookup: np.ndarray, spec: PreprocessingSpec, source: str
) -> PreparedCase:
    """One labelled case on the model grid, its source label values mapped to the model's."""
    if labels.shape != image.shape or not np.allclose(labels.affine_ras, image.affine_ras, atol=1e-3):
        log.info("case %s: label map resampled onto its image's grid", case_id)
        labels = resample_to_grid(labels, image.shape, image.affine_ras, order=0)
    mapped = labels.with_array(lookup[np.asarray(labels.array, dtype=np.int64).clip(0, 255)])
    prepared = preprocess_image(image, spec)
    model_labels = preprocess_labels(mapped, spec)
    if model_labels.shape != prepared.array.shape[1:]:
        raise ValueError(f"case {case_id}: labels {model_labels.shape} and image {prepared.array.shape} differ")
    return PreparedCase(case_id, prepared.array, model_labels.array[None].astype(np.uint8), source)


def phantom_case(
    index: int, *, seed: int, spec: PreprocessingSpec, structures: Sequence[str], renal_masses: bool = False
) -> PreparedCase:
    """A synthetic abdomen with random organ sizes, position and noise, sampled directly at the model spacing;
    with ``renal_masses``, a renal tumour and cyst on some (``phantom_renal_masses``)."""
    rng = np.random.default_rng([seed, index])
    anatomy = PhantomAnatomy()
    for name in ("liver", "spleen", "kidney_left", "kidney_right"):
        anatomy = anatomy.with_scaled(name, float(rng.uniform(0.8, 1.2)))
    extent_mm = np.array([360.0, 270.0, rng.uniform(160.0, 260.0)])
    shape = tuple(int(n) for n in np.ceil(extent_mm / np.asarray(spec.spacing_mm)))
    centre = (float(rng.uniform(-20, 20)), float(rng.uniform(-15, 15)), float(rng.uniform(-40, 40)))
    geometry = PhantomGeometry(shape=shape, spacing_mm=spec.spacing_mm, centre_lps_mm=centre)
    noise_hu_sd = float(rng.uniform(5, 25))
    if renal_masses:
        if not {"renal_tumor", "renal_cyst"} <= set(structures):
            raise ValueError("phantom renal masses need renal_tumor and renal_cyst among the structures")
        anatomy = phantom_renal_masses(anatomy, np.random.default_rng([seed, index, 1]))
    phantom = make_phantom(geometry, anatomy=anatomy, noise_hu_sd=noise_hu_sd, seed=int(index))
    lookup = label_lookup(phantom.labels.label_names or {}, structures)
    return prepare_case(f"phantom_{index:03d}", phantom.image, phantom.labels, lookup, spec, "phantom")


def phantom_renal_masses(anatomy: PhantomAnatomy, rng: np.random.Generator) -> PhantomAnatomy:
    """``anatomy`` with a renal tumour (drawn half the time) and a renal cyst (a third of the time), each centred
    near a random point of a random kidney's surface, so partly exophytic like the demo phantom's masses
    (``twin_imaging.testing.phantom.RENAL_TUMOUR``): a model that labels renal masses also learns them on the
    phantom, the built-in demo input, whose flat organs look unlike the KiTS lesions inserted into real CT."""
    masses = (
        ("renal_tumor", RENAL_TUMOUR.label, 0.5, (25.0, 110.0), (7.0, 20.0)),
        ("renal_cyst", RENAL_CYST.label, 1 / 3, (-5.0, 20.0), (5.0, 14.0)),
    )
    for name, label, probability, hu_range, radius_range_mm in masses:
        if rng.uniform() >= probability:
            continue
        kidney_name = str(rng.choice(["kidney_left", "kidney_right"]))
        kidney = anatomy.structure(kidney_name).shape
        for _ in range(20):  # a mass painted over the liver or the aorta would teach a wrong label there: redraw
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            centre = np.asarray(kidney.centre_mm) + direction * np.asarray(kidney.semi_axes_mm) * rng.uniform(0.6, 1.0)
            semi_axes = rng.uniform(*radius_range_mm) * rng.uniform(0.85, 1.15, size=3)
            shape = Ellipsoid(tuple(float(c) for c in centre), tuple(float(a) for a in semi_axes))
            if not _overlaps_organs(shape, anatomy, allowed=(kidney_name, "renal_tumor", "renal_cyst")):
                anatomy = anatomy.with_structure(Structure(name, label, float(rng.uniform(*hu_range)), shape))
                break
    return anatomy


_BODY_WALL = ("subcutaneous_fat", "skeletal_muscle")  # rings around the cavity: a mass never reaches them


def _overlaps_organs(shape: Ellipsoid, anatomy: PhantomAnatomy, *, allowed: Sequence[str]) -> bool:
    """Whether any of 2 000 points spread through ``shape`` lies in an organ of ``anatomy`` other than ``allowed``."""
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(2000, 3))
    unit *= (rng.uniform(size=(2000, 1)) ** (1 / 3)) / np.linalg.norm(unit, axis=1, keepdims=True)
    points = np.asarray(shape.centre_mm) + unit * np.asarray(shape.semi_axes_mm)
    x, y, z = points.T
    return any(
        bool(s.shape.contains(x, y, z).any())
        for s in anatomy.structures
        if s.name not in allowed and s.name not in _BODY_WALL
    )


def lesion_variants(
    cases: list[PreparedCase], per_case: int, hp, structures: Sequence[str], *, seed: int
) -> list[PreparedCase]:
    """``per_case`` copies of each case with one synthetic renal lesion (see ``training.synthetic_lesions``)."""
    from training.synthetic_lesions import insert_lesion

    if per_case <= 0 or not cases:
        return []
    bank, spec = lesion_insertion(hp, structures)
    made = []
    for case_index, case in enumerate(cases):
        rng = np.random.default_rng([seed, case_index])
        for variant in range(per_case):
            inserted = None
            for _ in range(5):  # a lesion can land in air or another organ: try another place
                inserted = insert_lesion(case.image[0], case.labels[0], bank, spec, rng)
                if inserted is not None:
                    break
            if inserted is None:
                continue
            image, labels, info = inserted
            case_id = f"{case.case_id}+{info['kind']}{variant}"
            made.append(PreparedCase(case_id, image[None], labels[None], f"{case.source}+synthetic_{info['kind']}"))
            log.info("%s: %s of %.1f mL from %s", case_id, info["kind"], info["volume_ml"], info["source_case"])
    return made


def lesion_insertion(hp, structures: Sequence[str]) -> tuple[ShapeBank, InsertionSpec]:
    """The shape bank and insertion spec of ``hp.lesion_bank`` for a model of ``structures``."""
    from training.synthetic_lesions import InsertionSpec, ShapeBank

    missing = {"renal_tumor", "renal_cyst"} - set(structures)
    if missing:
        raise ValueError(f"synthetic lesions need the structures {sorted(missing)} in model.structures")
    value = {name: index for index, name in enumerate(structures, start=1)}
    spec = InsertionSpec(
        window_hu=tuple(hp.window_hu),
        spacing_mm=tuple(hp.spacing_mm),
        kidney_labels=tuple(value[k] for k in ("kidney_right", "kidney_left") if k in value),
        tumor_label=value["renal_tumor"],
        cyst_label=value["renal_cyst"],
        cyst_probability=float(hp.lesion_cyst_probability),
        mass_effect=tuple(float(v) for v in hp.lesion_mass_effect),
    )
    return ShapeBank.load(_bank_path(hp.lesion_bank)), spec


@dataclass(frozen=True)
class FreshLesions:
    """Draw ``fraction`` of the training patches around a lesion inserted for that patch alone: every such patch
    shows a new shape, size, place and appearance, where fixed lesion copies would show the same few again."""

    bank: ShapeBank
    spec: InsertionSpec
    fraction: float


def crop_around(array: np.ndarray, centre: Sequence[int], patch_size: Sequence[int]) -> np.ndarray:
    """The ``patch_size`` window of a (C, X, Y, Z) array that holds ``centre`` as near its middle as the array
    allows; an array smaller than the patch is padded with zeros (as ``SpatialPadd`` does, around it)."""
    missing = [max(int(p) - n, 0) for n, p in zip(array.shape[1:], patch_size, strict=True)]
    pads = [(0, 0)] + [(m // 2, m - m // 2) for m in missing]
    padded = np.pad(array, pads) if any(sum(p) for p in pads) else array
    slices = [slice(None)]
    for axis, (c, p) in enumerate(zip(centre, patch_size, strict=True), start=1):
        start = min(max(int(c) + pads[axis][0] - p // 2, 0), padded.shape[axis] - p)
        slices.append(slice(start, start + p))
    return padded[tuple(slices)]


def _bank_path(name: str) -> Path:
    """An absolute path as given; a relative one under the prepared-data folder (where prepare_kits_shapes writes)."""
    path = Path(name)
    return path if path.is_absolute() else get_settings().prepared_data_dir / path


def case_weights(cases: list[PreparedCase], phantom_fraction: float | None) -> np.ndarray:
    """Sampling probability of each case: uniform, or phantoms together drawn ``phantom_fraction`` of the time."""
    weights = np.ones(len(cases))
    is_phantom = np.array([c.source == "phantom" for c in cases])
    if phantom_fraction is not None and is_phantom.any() and not is_phantom.all():
        weights[is_phantom] = phantom_fraction / is_phantom.sum()
        weights[~is_phantom] = (1.0 - phantom_fraction) / (~is_phantom).sum()
    return weights / weights.sum()


class PatchDataset(Dataset):
    """``samples_per_epoch`` random patches: a case at random, then a class-balanced crop, then augmentation."""

    def __init__(
        self,
        cases: list[PreparedCase],
        *,
        patch_size,
        structures: Sequence[str],
        window_hu: Sequence[float],
        samples_per_epoch: int,
        augment: bool,
        phantom_fraction: float | None = None,
        class_weights: dict[str, float] | None = None,
        fresh_lesions: FreshLesions | None = None,
    ):
        self.cases = cases
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples_per_epoch = samples_per_epoch
        self.case_weights = case_weights(cases, phantom_fraction)
        self.fresh_lesions = fresh_lesions
        if fresh_lesions is not None:
            kidneys = list(fresh_lesions.spec.kidney_labels)
            has_kidney = np.array([bool(np.isin(c.labels, kidneys).any()) for c in cases])
            if not has_kidney.any():
                raise ValueError("fresh lesions need a training case with a kidney")
            weights = np.where(has_kidney, self.case_weights, 0.0)
            self.lesion_case_weights = weights / weights.sum()
        # Background is sampled as often as each structure; small organs (gallbladder) get their share.
        num_classes = len(structures) + 1
        ratios = [1.0] + [float((class_weights or {}).get(name, 1.0)) for name in structures]
        self.indices = [
            mt.ClassesToIndicesd(keys="label", num_classes=num_classes)({"label": torch.as_tensor(c.labels)})[
                "label_cls_indices"
            ]
            for c in cases
        ]
        steps: list = [
            mt.SpatialPadd(keys=("image", "label"), spatial_size=patch_size),
            mt.RandCropByLabelClassesd(
                keys=("image", "label"),
                label_key="label",
                spatial_size=patch_size,
                ratios=ratios,
                num_classes=num_classes,
                num_samples=1,
                indices_key="indices",
                warn=False,
            ),
        ]
        # one Compose inside the other: set_random_state on the outer seeds both
        self.augment = mt.Compose(training_augmentation(structures=structures, window_hu=window_hu) if augment else [])
        self.transform = mt.Compose([*steps, self.augment])

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.fresh_lesions is not None and self.transform.R.random_sample() < self.fresh_lesions.fraction:
            sample = self._fresh_lesion_patch()
            if sample is not None:
                out = self.augment(sample)
                return {"image": torch.as_tensor(out["image"]).float(), "label": torch.as_tensor(out["label"]).long()}
        case_index = int(self.transform.R.choice(len(self.cases), p=self.case_weights))
        case = self.cases[case_index]
        sample = {
            "image": torch.as_tensor(case.image),
            "label": torch.as_tensor(case.labels),
            "indices": self.indices[case_index],
        }
        out = self.transform(sample)
        out = out[0] if isinstance(out, list) else out
        return {"image": torch.as_tensor(out["image"]).float(), "label": torch.as_tensor(out["label"]).long()}

    def _fresh_lesion_patch(self) -> dict[str, torch.Tensor] | None:
        """A patch around a lesion inserted into a case with a kidney for this patch alone; None if five tries
        found no place (air, another organ)."""
        from training.synthetic_lesions import insert_lesion

        fresh = self.fresh_lesions
        random = self.transform.R
        for _ in range(5):
            case = self.cases[int(random.choice(len(self.cases), p=self.lesion_case_weights))]
            rng = np.random.default_rng(int(random.randint(2**31)))
            inserted = insert_lesion(case.image[0], case.labels[0], fresh.bank, fresh.spec, rng)
            if inserted is None:
                continue
            image, labels, info = inserted
            # centred on a lesion voxel, shifted by up to a quarter patch: the lesion is seen in different contexts
            box = tuple(slice(a, b) for a, b in info["box"])
            value = fresh.spec.cyst_label if info["kind"] == "cyst" else fresh.spec.tumor_label
            inside = np.argwhere(labels[box] == value) + [b.start for b in box]
            shift = rng.integers(-(np.asarray(self.patch_size) // 4), np.asarray(self.patch_size) // 4 + 1)
            centre = inside[rng.integers(len(inside))] + shift
            return {
                "image": torch.as_tensor(crop_around(image[None], centre, self.patch_size)),
                "label": torch.as_tensor(crop_around(labels[None], centre, self.patch_size)),
            }
        return None


class SegmentationDataModule(L.LightningDataModule):
    """Cases from an MSD-style datalist (folds select training and validation) and/or synthetic phantoms.

    Args:
        datalist: path of the dataset.json; none for phantom-only runs.
        data_root: folder the datalist's relative paths are under; default: the datalist's folder, or the shared
            data folder (env TWIN_IMAGING_SHARED_DATA_DIR) where the datalist says relative_to_shared_data.
        label_mapping: source label value → model structure name; default: map the datalist's ``labels`` by name.
        train_folds / val_folds: which folds train and validate (a case without a fold trains).
        phantom_train_cases / phantom_val_cases: synthetic abdomens added to training / validation.
        phantom_fraction: share of training patches drawn from phantoms (default: cases drawn uniformly).
        phantom_renal_masses: the phantoms grow renal tumours and cysts (``phantom_renal_masses``).
        lesion_bank: a shape bank of ``training.prepare_kits_shapes``; with it, ``lesion_variants`` copies of each
            training case (and ``lesion_val_variants`` of each validation case) get one synthetic renal tumour or
            cyst (``training.synthetic_lesions``), labelled ``renal_tumor`` / ``renal_cyst`` (both must be among the
            structures). The originals stay: the network also sees tumour-free kidneys.
        lesion_cyst_probability: share of the inserted lesions that are cysts (the rest are tumours).
        lesion_mass_effect: range of the push strength of the lesions' mass effect (``InsertionSpec.mass_effect``).
        fresh_lesion_fraction: share of training patches centred on a lesion inserted for that patch alone
            (``FreshLesions``; needs lesion_bank); the rest are drawn as without it.
        class_weights: structure → how many times as often as another class a patch is centred on it (default 1;
            e.g. the rare renal masses).
        structures, spacing_mm, window_hu, patch_size: linked from the model's arguments.
    """

    def __init__(
        self,
        datalist: str | None = None,
        data_root: str | None = None,
        label_mapping: dict[int, str] | None = None,
        train_folds: list[int] | None = None,
        val_folds: list[int] | None = None,
        phantom_train_cases: int = 0,
        phantom_val_cases: int = 0,
        phantom_fraction: float | None = None,
        phantom_renal_masses: bool = False,
        lesion_bank: str | None = None,
        lesion_variants: int = 0,
        lesion_val_variants: int = 0,
        fresh_lesion_fraction: float = 0.0,
        lesion_cyst_probability: float = 0.3,
        lesion_mass_effect: tuple[float, float] = (0.0, 0.0),
        class_weights: dict[str, float] | None = None,
        structures: list[str] | None = None,
        spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0),
        window_hu: tuple[float, float] = (-200.0, 300.0),
        patch_size: tuple[int, int, int] = (64, 64, 64),
        batch_size: int = 2,
        samples_per_epoch: int = 100,
        augment: bool = True,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_cases: list[PreparedCase] = []
        self.val_cases: list[PreparedCase] = []

    @property
    def spec(self) -> PreprocessingSpec:
        return preprocessing_spec(self.hparams.spacing_mm, self.hparams.window_hu)

    def setup(self, stage: str | None = None) -> None:
        if self.train_cases or self.val_cases:
            return
        hp = self.hparams
        structures = list(hp.structures or [])
        if not structures:
            raise ValueError("the model's structures are not set (data.structures is linked from model.structures)")
        spec = self.spec
        if hp.datalist:
            datalist = read_datalist(resolve_config_path(hp.datalist), data_root=hp.data_root)
            lookup = label_lookup(datalist.label_names, structures, mapping=hp.label_mapping)
            val_folds = set(hp.val_folds or [])
            for case in datalist.cases():
                if case.label is None:
                    continue
                in_val = case.fold in val_folds
                in_train = (not in_val) and (hp.train_folds is None or case.fold is None or case.fold in hp.train_folds)
                if not (in_val or in_train):
                    continue
                prepared = prepare_case(
                    case.case_id, read_image(case.image), read_image(case.label), lookup, spec, datalist.name
                )
                (self.val_cases if in_val else self.train_cases).append(prepared)
        masses = hp.phantom_renal_masses
        for index in range(hp.phantom_train_cases):
            self.train_cases.append(
                phantom_case(index, seed=hp.seed, spec=spec, structures=structures, renal_masses=masses)
            )
        for index in range(hp.phantom_val_cases):
            self.val_cases.append(
                phantom_case(10_000 + index, seed=hp.seed, spec=spec, structures=structures, renal_masses=masses)
            )
        if not self.train_cases:
            raise ValueError("no training cases: give a datalist with labelled cases or phantom_train_cases > 0")
        if hp.lesion_bank and (hp.lesion_variants or hp.lesion_val_variants):
            self.train_cases += lesion_variants(self.train_cases, hp.lesion_variants, hp, structures, seed=hp.seed)
            self.val_cases += lesion_variants(self.val_cases, hp.lesion_val_variants, hp, structures, seed=hp.seed + 1)
        log.info(
            "training cases: %s; validation cases: %s",
            [c.case_id for c in self.train_cases],
            [c.case_id for c in self.val_cases],
        )

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        dataset = PatchDataset(
            self.train_cases,
            patch_size=hp.patch_size,
            structures=hp.structures,
            window_hu=hp.window_hu,
            samples_per_epoch=hp.samples_per_epoch,
            augment=hp.augment,
            phantom_fraction=hp.phantom_fraction,
            class_weights=hp.class_weights,
            fresh_lesions=self._fresh_lesions(),
        )
        dataset.transform.set_random_state(seed=hp.seed)
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            worker_init_fn=_seed_worker,
        )

    def _fresh_lesions(self) -> FreshLesions | None:
        hp = self.hparams
        if hp.fresh_lesion_fraction <= 0:
            return None
        if not hp.lesion_bank:
            raise ValueError("fresh_lesion_fraction needs a lesion_bank")
        if hp.fresh_lesion_fraction > 1:
            raise ValueError(f"fresh_lesion_fraction is a share of patches (0-1), not {hp.fresh_lesion_fraction}")
        bank, spec = lesion_insertion(hp, list(hp.structures or []))
        return FreshLesions(bank, spec, float(hp.fresh_lesion_fraction))

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_cases:
            return []
        items = [
            {"image": torch.as_tensor(c.image), "label": torch.as_tensor(c.labels), "case_id": c.case_id}
            for c in self.val_cases
        ]
        return DataLoader(items, batch_size=1, num_workers=0)


def _seed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset.transform.set_random_state(seed=(torch.initial_seed() + worker_id) % 2**32)
