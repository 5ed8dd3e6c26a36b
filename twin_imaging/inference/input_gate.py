"""Is this volume something the model can be run on? Checked before any large allocation, refused by name.

An MR series through a CT model, NaN voxels, a one-slice volume or a PixelSpacing of 1000 mm (whose 3 mm grid would
need terabytes) were analysed, or crashed, as if they were CT. The gate refuses them with a message that names the
problem (CLI: one line, exit 1; API: 422) before anything is segmented or filed. Bounds come from the settings.
"""

from __future__ import annotations

import math

import numpy as np

from twin_imaging.errors import InputError
from twin_imaging.models.card import ModelCard
from twin_imaging.settings import Settings, get_settings
from twin_imaging.volume import Volume

_SAMPLE_STEP = 4  # every 4th voxel along each axis is enough to judge the value range


class UnsuitableInputError(InputError):
    """The input reads, but it does not suit the model (modality, size, values): refused before segmentation."""


def check_input_suitability(volume: Volume, card: ModelCard, *, settings: Settings | None = None) -> None:
    """Raise ``UnsuitableInputError`` naming every reason ``volume`` must not go through ``card``'s model."""
    settings = settings or get_settings()
    problems: list[str] = []
    modality = (volume.info.modality or "").upper()
    if modality and modality != card.modality:
        problems.append(f"the series is {modality}; model {card.model_id} is for {card.modality}")

    extent_mm = [n * s for n, s in zip(volume.shape, volume.spacing_mm, strict=True)]
    if min(volume.shape) < settings.gate_min_voxels_per_axis:
        problems.append(
            f"the volume is {' x '.join(map(str, volume.shape))} voxels; the model needs at least "
            f"{settings.gate_min_voxels_per_axis} along every axis"
        )
    elif min(extent_mm) < settings.gate_min_extent_mm:
        problems.append(
            f"the volume covers only {min(extent_mm):.1f} mm along one axis; the model needs at least "
            f"{settings.gate_min_extent_mm:g} mm"
        )
    if max(extent_mm) > settings.gate_max_extent_mm:
        problems.append(
            f"the volume would span {max(extent_mm):.0f} mm (voxel size "
            f"{' x '.join(f'{s:g}' for s in volume.spacing_mm)} mm); no body is longer than "
            f"{settings.gate_max_extent_mm:g} mm: check PixelSpacing and the slice positions"
        )
    else:
        model_voxels = math.prod(
            math.ceil(e / s) for e, s in zip(extent_mm, card.preprocessing.spacing_mm, strict=True)
        )
        if model_voxels > settings.gate_max_model_grid_voxels:
            problems.append(
                f"the volume resampled to {' x '.join(f'{s:g}' for s in card.preprocessing.spacing_mm)} mm would "
                f"hold {model_voxels:,} voxels, more than the {settings.gate_max_model_grid_voxels:,} allowed "
                "(settings: gate_max_model_grid_voxels)"
            )

    array = volume.array
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            problems.append(f"{bad:,} of {array.size:,} voxels are NaN or infinite")
            array = np.where(finite, array, 0)
    if card.modality == "CT" and array.size:
        sample = array[::_SAMPLE_STEP, ::_SAMPLE_STEP, ::_SAMPLE_STEP]
        low, high = np.percentile(sample if sample.size else array, [1, 99])
        if low >= 0 or high > settings.gate_max_ct_hu:
            problems.append(
                f"the values (1st-99th percentile {low:.0f} to {high:.0f}) are not Hounsfield units of a CT: "
                "a CT always holds fat or air below 0 HU and nothing far above "
                f"{settings.gate_max_ct_hu:g} HU"
            )
    if problems:
        raise UnsuitableInputError(f"not suitable for model {card.model_id}: " + "; ".join(problems))
