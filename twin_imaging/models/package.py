"""Read, verify and write model packages: a folder with ``card.json`` and the ONNX file the card names.

Loading checks the ONNX file's sha256 against the card, so a swapped or truncated file is refused before it runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from twin_imaging.errors import ModelError
from twin_imaging.files import copy_atomic, file_sha256, write_bytes_atomic
from twin_imaging.models.card import ModelCard
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
    if not package.onnx_path.is_file():
        raise ModelError(f"model {card.model_id}: ONNX file {card.onnx.file} is missing from {package.root}")
    if verify:
        actual = file_sha256(package.onnx_path)
        if actual != card.onnx.sha256:
            raise ModelError(
                f"model {card.model_id}: {card.onnx.file} has sha256 {actual[:12]}…, the card says "
                f"{card.onnx.sha256[:12]}…; the file was changed or damaged"
            )
    return package


def write_model_package(folder: str | os.PathLike, card: ModelCard, onnx_source: str | os.PathLike) -> ModelPackage:
    """Write ``onnx_source`` and ``card`` into ``folder``; the card's onnx sha256 and size are set from the file.

    Each file is written to a temporary name in the folder and renamed, so a reader never sees half a package.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_name = card.onnx.file
    sha256 = file_sha256(onnx_source)
    size = Path(onnx_source).stat().st_size
    card = card.model_copy(update={"onnx": card.onnx.model_copy(update={"sha256": sha256, "size_bytes": size})})
    ModelCard.model_validate(card.model_dump())  # still valid after the update
    copy_atomic(onnx_source, folder / onnx_name)
    write_bytes_atomic(folder / CARD_FILE, (json.dumps(card.model_dump(mode="json"), indent=2) + "\n").encode())
    return load_model_package(folder)


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
