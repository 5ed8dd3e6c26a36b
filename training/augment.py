"""Training-time augmentation: MONAI's spatial and intensity transforms, plus a contrast-phase simulation.

The recipe follows nnU-Net's default augmentation (rotation and scaling, low-resolution simulation, Gaussian noise
and blur, brightness, contrast and gamma) without mirroring: left and right organs are distinct classes, and a
flip would teach the network that a right kidney may lie on the left. Elastic deformation is left out, as nnU-Net
leaves it out by default (it is also the most expensive transform on a CPU).

BTCV is portal-venous only, while hospitals send every phase. ``RandContrastPhased`` moves the HU of the enhancing
structures of a patch towards non-contrast or (late) arterial values, keeping each organ's texture, so that the
network does not learn "bright = kidney" from one phase. The target HU are typical published values (e.g. Bae,
Radiology 2010, "Intravenous contrast medium administration and scan timing at CT"); the mix factor spreads them
between the portal-venous appearance and the full target, as scan timing does.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai import transforms as mt
from monai.config import KeysCollection
from scipy import ndimage

# Typical HU (low, high) of each structure in a non-contrast and a late-arterial CT.
PHASE_TARGET_HU: dict[str, dict[str, tuple[float, float]]] = {
    "non_contrast": {
        "liver": (45.0, 65.0),
        "spleen": (38.0, 52.0),
        "kidney_right": (25.0, 40.0),
        "kidney_left": (25.0, 40.0),
        "aorta": (32.0, 50.0),
        "inferior_vena_cava": (30.0, 48.0),
        "portal_and_splenic_vein": (32.0, 50.0),
        "pancreas": (30.0, 50.0),
        "adrenal_gland_right": (10.0, 35.0),
        "adrenal_gland_left": (10.0, 35.0),
        "stomach": (25.0, 45.0),
        "esophagus": (30.0, 45.0),
        "renal_tumor": (25.0, 45.0),  # a renal cell carcinoma before contrast: near soft tissue
    },
    "arterial": {
        "liver": (60.0, 85.0),
        "spleen": (90.0, 140.0),
        "kidney_right": (150.0, 240.0),
        "kidney_left": (150.0, 240.0),
        "aorta": (250.0, 400.0),
        "inferior_vena_cava": (60.0, 120.0),
        "portal_and_splenic_vein": (100.0, 170.0),
        "pancreas": (100.0, 140.0),
        "adrenal_gland_right": (50.0, 90.0),
        "adrenal_gland_left": (50.0, 90.0),
        "renal_tumor": (80.0, 200.0),  # clear-cell carcinomas enhance avidly and early; others less
    },
}


class RandContrastPhased(mt.RandomizableTransform, mt.MapTransform):
    """Shift each enhancing structure's median HU towards another phase's typical value (texture kept).

    Works on windowed images (``window_hu`` mapped to [0, 1] and clipped, as the model's preprocessing does). The
    shift map is blurred by ``edge_sigma_voxels`` so that the change fades across the label's edge instead of
    drawing the expert's outline into the image.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        label_key: str,
        structures: Sequence[str],
        window_hu: Sequence[float],
        prob: float = 0.3,
        phases: Mapping[str, Mapping[str, tuple[float, float]]] = PHASE_TARGET_HU,
        mix_range: tuple[float, float] = (0.6, 1.0),
        edge_sigma_voxels: float = 1.0,
    ) -> None:
        mt.RandomizableTransform.__init__(self, prob)
        mt.MapTransform.__init__(self, keys)
        self.label_key = label_key
        self.structures = list(structures)
        self.window_min_hu, self.window_max_hu = float(window_hu[0]), float(window_hu[1])
        self.phases = {name: dict(targets) for name, targets in phases.items()}
        self.mix_range = mix_range
        self.edge_sigma_voxels = edge_sigma_voxels
        self._phase: str | None = None
        self._mix = 1.0
        self._targets: dict[str, float] = {}

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        self._phase = str(self.R.choice(sorted(self.phases)))
        self._mix = float(self.R.uniform(*self.mix_range))
        self._targets = {
            name: float(self.R.uniform(low, high)) for name, (low, high) in self.phases[self._phase].items()
        }

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        labels = np.asarray(d[self.label_key])[0]
        width_hu = self.window_max_hu - self.window_min_hu
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            values = image[0].cpu().numpy()
            shift = np.zeros_like(values, dtype=np.float32)
            for index, name in enumerate(self.structures, start=1):
                target_hu = self._targets.get(name)
                if target_hu is None:
                    continue
                inside = labels == index
                if not inside.any():
                    continue
                current_hu = float(np.median(values[inside])) * width_hu + self.window_min_hu
                shift[inside] = self._mix * (target_hu - current_hu) / width_hu
            if self.edge_sigma_voxels > 0:
                shift = ndimage.gaussian_filter(shift, self.edge_sigma_voxels, mode="nearest")
            moved = np.clip(values + shift, 0.0, 1.0).astype(values.dtype)
            d[key] = image.new_tensor(moved)[None] if not isinstance(d[key], np.ndarray) else moved[None]
        return d


def training_augmentation(*, structures: Sequence[str], window_hu: Sequence[float]) -> list[mt.Transform]:
    """The random transforms applied to each training patch after cropping (image in [0, 1], labels 0..N)."""
    return [
        RandContrastPhased(keys="image", label_key="label", structures=structures, window_hu=window_hu, prob=0.3),
        mt.RandAffined(
            keys=("image", "label"),
            prob=0.4,
            rotate_range=(0.2, 0.2, 0.35),
            scale_range=(0.2, 0.2, 0.2),
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        # Scanner and protocol variety: resolution, noise (low-dose CT), blur, gain, contrast, gamma.
        mt.RandSimulateLowResolutiond(keys="image", prob=0.25, zoom_range=(0.5, 1.0)),
        mt.RandGaussianNoised(keys="image", prob=0.15, std=0.04),
        mt.RandGaussianSmoothd(keys="image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        mt.RandScaleIntensityd(keys="image", prob=0.15, factors=0.25),
        mt.RandShiftIntensityd(keys="image", prob=0.15, offsets=0.08),
        mt.RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5)),
    ]
