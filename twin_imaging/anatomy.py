"""What the project knows about adult abdominal anatomy, by SNOMED CT code, independent of any model: which
structures are tubular (measured by their short axis, expected to leave the field of view), the range of volumes
outside which an organ's segmentation needs a human look, and which structures lie to the patient's right of which.

Volume ranges are deliberately wide bounds around published adult CT volumetry (liver about 1.0-2.0 L, spleen
about 0.1-0.35 L, each kidney about 0.12-0.22 L, pancreas about 0.05-0.1 L, adrenal glands a few mL): a volume
outside them is far from normal — an organ cut by the scan, a segmentation error, or real pathology (hepatomegaly,
massive splenomegaly, an atrophic kidney) — and in every case worth a reader's eyes. They are not a diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass

AORTA, INFERIOR_VENA_CAVA, ESOPHAGUS, PORTAL_AND_SPLENIC_VEIN = "15825003", "64131007", "32849002", "110765007"
LIVER, SPLEEN, KIDNEY, ADRENAL_GLAND = "10200004", "78961009", "64033007", "23451007"
PANCREAS, STOMACH, GALLBLADDER = "15776009", "69695003", "28231008"

# Tubular: measured by their largest axial short-axis diameter; an abdominal CT cuts them, so no edge check.
TUBULAR_CODES = frozenset({AORTA, INFERIOR_VENA_CAVA, ESOPHAGUS, PORTAL_AND_SPLENIC_VEIN})


@dataclass(frozen=True)
class VolumeRange:
    low_ml: float
    high_ml: float


# Per structure (per side for paired organs). The stomach's volume follows its filling, so its bounds are wider still.
PLAUSIBLE_ADULT_VOLUME_ML: dict[str, VolumeRange] = {
    LIVER: VolumeRange(600.0, 3500.0),
    SPLEEN: VolumeRange(30.0, 1000.0),
    KIDNEY: VolumeRange(60.0, 400.0),
    PANCREAS: VolumeRange(20.0, 200.0),
    GALLBLADDER: VolumeRange(3.0, 200.0),
    STOMACH: VolumeRange(30.0, 3000.0),
    ADRENAL_GLAND: VolumeRange(1.0, 30.0),
}

# (structure on the patient's right, structure on the patient's left), by code; a paired organ's sides are told
# apart by the card's laterality modifier.
RIGHT_OF = ((LIVER, SPLEEN),)
