"""Labelled datasets as datalists in the style of the Medical Segmentation Decathlon's ``dataset.json``.

```json
{"name": "...", "licence": "CC BY-SA 4.0", "reference": "expert annotations",
 "labels": {"0": "background", "1": "liver", "2": "spleen"},
 "training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz", "fold": 0}],
 "test": [{"image": "imagesTs/b.nii.gz"}]}
```
Images are NIfTI files or DICOM folders/zips; label maps are NIfTI on the image's grid (resampled if not). Relative
paths are under ``data_root``: by default the datalist's folder, or, where the datalist says
``"relative_to_shared_data": true``, the shared data folder (settings.shared_data_dir), as the project's own
datalists over ``../shared/data`` do, or, where it says ``"relative_to_prepared_data": "btcv"``, that folder of the
prepared copies (settings.prepared_data_dir; e.g. BTCV converted to NIfTI by ``python -m training.prepare_btcv``).
``labels`` names the source label values; a model maps them to its own structures by name, or by an explicit
mapping (source value → structure name).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin_imaging.errors import InputError
from twin_imaging.settings import get_settings


@dataclass(frozen=True)
class DatalistCase:
    case_id: str
    image: Path
    label: Path | None
    fold: int | None = None


@dataclass(frozen=True)
class Datalist:
    name: str
    licence: str
    reference: str  # what the labels are: expert annotations, another model's predictions, synthetic truth
    label_names: Mapping[int, str]
    training: tuple[DatalistCase, ...]
    test: tuple[DatalistCase, ...] = ()
    # the dataset's name of a structure → the project's (e.g. BTCV's portal_and_splenic_vein → the SNOMED-coded
    # portal_vein_and_splenic_vein), from the datalist's "structure_names"
    structure_names: Mapping[str, str] = field(default_factory=dict)

    def model_label_names(self) -> dict[int, str]:
        """The label values with the project's structure names (``structure_names`` applied)."""
        return {value: self.structure_names.get(name, name) for value, name in self.label_names.items()}

    def cases(self, *, section: str = "training", folds: Sequence[int] | None = None) -> list[DatalistCase]:
        cases = self.training if section == "training" else self.test
        if folds is None:
            return list(cases)
        return [c for c in cases if c.fold in set(folds)]


def read_datalist(path: str | os.PathLike, *, data_root: str | os.PathLike | None = None) -> Datalist:
    """Read and check a datalist; every referenced file must exist."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"datalist not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path.name} is not a readable JSON datalist: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("training", []), list):
        raise InputError(f"{path.name}: a datalist is a JSON object with a 'training' list")
    if not isinstance(document.get("test", []), list):
        raise InputError(f"{path.name}: 'test' must be a list of cases")
    if data_root is not None:
        root = Path(data_root)
    elif document.get("relative_to_shared_data"):
        root = get_settings().shared_data_dir
    elif document.get("relative_to_prepared_data"):
        root = get_settings().prepared_data_dir / str(document["relative_to_prepared_data"])
    else:
        root = path.parent
    try:
        label_names = {int(k): str(v) for k, v in dict(document.get("labels", {})).items() if int(k) != 0}
    except (TypeError, ValueError):
        raise InputError(f"{path.name}: 'labels' must map integer values to names") from None
    sections = {}
    for section in ("training", "test"):
        cases = []
        for index, entry in enumerate(document.get(section, [])):
            cases.append(_case(entry, root, where=f"{path.name} {section}[{index}]"))
        ids = [c.case_id for c in cases]
        if len(set(ids)) != len(ids):
            raise InputError(f"{path.name}: case ids in '{section}' are not unique")
        sections[section] = tuple(cases)
    return Datalist(
        name=str(document.get("name", path.stem)),
        licence=str(document.get("licence", document.get("license", "unknown"))),
        reference=str(document.get("reference", "unknown")),
        label_names=label_names,
        training=sections["training"],
        test=sections["test"],
        structure_names={str(k): str(v) for k, v in dict(document.get("structure_names", {})).items()},
    )


def label_lookup(
    source_names: Mapping[int, str],
    structures: Sequence[str],
    *,
    mapping: Mapping[int, str] | None = None,
) -> np.ndarray:
    """A 256-entry table: source label value → the model's label (1-based index in ``structures``; 0 otherwise).

    Without ``mapping``, source labels map by name; with it, ``mapping`` (source value → structure name) decides.
    """
    pairs = dict(mapping) if mapping is not None else dict(source_names)
    unknown = sorted({name for name in pairs.values() if name not in structures and mapping is not None})
    if unknown:
        raise InputError(f"the label mapping names structures the model does not have: {unknown}")
    lookup = np.zeros(256, dtype=np.uint8)
    model_label = {name: index for index, name in enumerate(structures, start=1)}
    for value, name in pairs.items():
        try:
            source = int(value)
        except (TypeError, ValueError):
            raise InputError(f"source label {value!r} is not an integer") from None
        if not 0 <= source <= 255:
            raise InputError(f"source label {value} is outside 0..255")
        lookup[source] = model_label.get(name, 0)
    return lookup


def _case(entry: object, root: Path, *, where: str) -> DatalistCase:
    if isinstance(entry, str):
        entry = {"image": entry}
    if not isinstance(entry, dict) or not entry.get("image") or not isinstance(entry["image"], str):
        raise InputError(f"{where}: each case needs an 'image' path")
    if entry.get("label") is not None and not isinstance(entry["label"], str):
        raise InputError(f"{where}: 'label' must be a path")
    image = root / entry["image"]
    label = root / entry["label"] if entry.get("label") else None
    for file in (image, label):
        if file is not None and not file.exists():
            raise InputError(f"{where}: {file} does not exist")
    fold = entry.get("fold")
    if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)):
        raise InputError(f"{where}: 'fold' must be an integer, got {fold!r}")
    case_id = str(entry.get("case_id") or Path(entry["image"]).name.split(".")[0])
    return DatalistCase(case_id=case_id, image=image, label=label, fold=int(fold) if fold is not None else None)
