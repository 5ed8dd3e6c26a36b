"""Read, verify and write model packages: a folder with ``card.json`` and the ONNX file the card names (and, for a
cascade, the refinement network's ONNX file too).

Loading checks each ONNX file's sha256 against the card, so a swapped or truncated file is refused before it runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from twin_imaging.errors import ModelError
from twin_imaging.files import copy_atomic, file_sha256, write_bytes_atomic
from twin_imaging.models.card import ModelCard, OnnxFile
from twin_imaging.settings import get_settings

CARD_FILE = "card.json"


@dataclass(frozen=True)
class ModelPackage:
    root: Path
    card: ModelCard

    @property
    def onnx_path(self) -> Path:
        return self.root / self.card.onnx.file

    @property
    def refinement_onnx_path(self) -> Path | None:
        stage = self.card.refinement
        return None if stage is None else self.root / stage.onnx.file

    @property
    def model_id(self) -> str:
        return self.card.model_id


def load_model_package(path: str | os.PathLike, *, verify: bool = True) -> ModelPackage:
    """The package in ``path`` (its folder or its card.json); with ``verify``, the ONNX sha256 must match the card."""
    path = Path(path)
    card_path = path if path.is_file() else path / CARD_FILE
    if not card_path.is_file():
        raise ModelError(f"no model package at {path}: {CARD_FILE} not found")
    try:
        card = ModelCard.model_validate_json(card_path.read_bytes())
    except ValidationError as exc:
        raise ModelError(f"{card_path} is not a valid model card: {_summarise(exc)}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{card_path} cannot be read: {exc}") from None
    package = ModelPackage(card_path.parent, card)
    files = [card.onnx] + ([card.refinement.onnx] if card.refinement is not None else [])
    for onnx in files:
        if not (package.root / onnx.file).is_file():
            raise ModelError(f"model {card.model_id}: ONNX file {onnx.file} is missing from {package.root}")
        if verify:
            actual = file_sha256(package.root / onnx.file)
            if actual != onnx.sha256:
                raise ModelError(
                    f"model {card.model_id}: {onnx.file} has sha256 {actual[:12]}…, the card says "
                    f"{onnx.sha256[:12]}…; the file was changed or damaged"
                )
    return package


def write_model_package(
    folder: str | os.PathLike,
    card: ModelCard,
    onnx_source: str | os.PathLike,
    *,
    refinement_onnx_source: str | os.PathLike | None = None,
) -> ModelPackage:
    """Write ``onnx_source`` (and, for a card with a refinement stage, ``refinement_onnx_source``) and ``card`` into
    ``folder``; the card's sha256 and sizes are set from the files.

    Each file is written to a temporary name in the folder and renamed, so a reader never sees half a package. The ONNX
    files the folder's earlier card named and this one does not are removed afterwards (a folder holds one package:
    stale weights beside a card would be taken for its own); no other file is touched.
    """
    folder = Path(folder)
    if (card.refinement is None) != (refinement_onnx_source is None):
        raise ValueError("a refinement ONNX file goes with a card that has a refinement stage, and only then")
    folder.mkdir(parents=True, exist_ok=True)
    card = card.model_copy(update={"onnx": _described(card.onnx, onnx_source)})
    if card.refinement is not None:
        stage = card.refinement.model_copy(update={"onnx": _described(card.refinement.onnx, refinement_onnx_source)})
        card = card.model_copy(update={"refinement": stage})
    ModelCard.model_validate(card.model_dump())  # still valid after the update
    earlier = _onnx_files_named(folder)
    copy_atomic(onnx_source, folder / card.onnx.file)
    if card.refinement is not None:
        copy_atomic(refinement_onnx_source, folder / card.refinement.onnx.file)
    write_bytes_atomic(folder / CARD_FILE, (json.dumps(card.model_dump(mode="json"), indent=2) + "\n").encode())
    kept = {folder / card.onnx.file, Path(onnx_source)}
    if card.refinement is not None:
        kept |= {folder / card.refinement.onnx.file, Path(refinement_onnx_source)}
    for stale in earlier - {path.resolve() for path in kept}:  # never the sources themselves
        stale.unlink(missing_ok=True)
    return load_model_package(folder)


def _onnx_files_named(folder: Path) -> set[Path]:
    """The ONNX files the card already in ``folder`` names (none where there is no readable card)."""
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        names = [card["onnx"]["file"], *([card["refinement"]["onnx"]["file"]] if card.get("refinement") else [])]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {(folder / Path(name).name).resolve() for name in names if isinstance(name, str)}


def _described(onnx: OnnxFile, source: str | os.PathLike) -> OnnxFile:
    return onnx.model_copy(update={"sha256": file_sha256(source), "size_bytes": Path(source).stat().st_size})


def default_segmentation_package() -> ModelPackage:
    """The shipped organ segmentation model (settings: models_dir / default_segmentation_model)."""
    settings = get_settings()
    return load_model_package(settings.models_dir / settings.default_segmentation_model)


def _summarise(exc: ValidationError, *, limit: int = 5) -> str:
    """The first few problems of a validation error on one line, each as ``field.path: message``."""
    errors = exc.errors()
    problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in errors[:limit]]
    if len(errors) > limit:
        problems.append(f"and {len(errors) - limit} more")
    return "; ".join(problems)
