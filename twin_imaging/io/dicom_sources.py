"""Collect DICOM instances from a folder, a zip, a list of files or datasets in memory.

Headers are read first (without pixel data) so that a folder holding many series costs little; the pixel data of
the series finally chosen is read later through ``DicomInstance.load()``. Files that are not DICOM are skipped and
reported, never fatal; a zip whose member names escape the archive is refused whole.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from twin_imaging.errors import DicomInputError
from twin_imaging.settings import get_settings

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

DicomSource = str | os.PathLike | Dataset | Sequence[str | os.PathLike] | Sequence[Dataset]


@dataclass
class DicomInstance:
    """One DICOM instance: its header now, its full dataset on demand."""

    location: str  # path, "archive.zip:member" or "<dataset 3>": for messages only
    header: Dataset
    _loader: Callable[[], Dataset] = field(repr=False)
    path: Path | None = None  # the file on disk, where there is one (lets another process read it)

    def load(self) -> Dataset:
        """The full dataset, pixel data included."""
        return self._loader()


@dataclass
class CollectedInstances:
    instances: list[DicomInstance]
    skipped: list[tuple[str, str]]  # (location, reason)

    def skipped_summary(self, limit: int = 5) -> str:
        shown = ", ".join(f"{loc} ({why})" for loc, why in self.skipped[:limit])
        more = f" and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"skipped {len(self.skipped)} file(s) that are not usable DICOM: {shown}{more}"


def collect_instances(source: DicomSource) -> CollectedInstances:
    """Read the headers of every DICOM instance in ``source``; skip (and list) anything else."""
    if isinstance(source, Dataset):
        return _from_datasets([source])
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DicomInputError(f"input not found: {path}")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            if not files:
                raise DicomInputError(f"the folder {path} is empty")
            return _from_files(files, root=path)
        if zipfile.is_zipfile(path):
            return _from_zip(path)
        return _from_files([path], root=path.parent)
    items = list(source)
    if not items:
        raise DicomInputError("no input files or datasets were given")
    if all(isinstance(item, Dataset) for item in items):
        return _from_datasets(items)  # type: ignore[arg-type]
    if all(isinstance(item, (str, os.PathLike)) for item in items):
        missing = [str(p) for p in items if not Path(p).is_file()]
        if missing:
            raise DicomInputError(f"{len(missing)} input file(s) not found, e.g. {missing[0]}")
        paths = [Path(p) for p in items]  # type: ignore[arg-type]
        return _from_files(paths, root=Path(os.path.commonpath([p.parent for p in paths])))
    raise DicomInputError("give either paths or pydicom datasets, not a mixture")


def _from_datasets(datasets: Iterable[Dataset]) -> CollectedInstances:
    instances, skipped = [], []
    for index, ds in enumerate(datasets):
        location = f"<dataset {index}>"
        reason = _not_an_image_reason(ds)
        if reason:
            skipped.append((location, reason))
            continue
        instances.append(DicomInstance(location, ds, lambda ds=ds: ds))
    return CollectedInstances(instances, skipped)


def _from_files(paths: Iterable[Path], *, root: Path) -> CollectedInstances:
    instances, skipped = [], []
    for path in paths:
        location = _relative(path, root)
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            skipped.append((location, "not a DICOM file"))
            continue
        except Exception as exc:  # truncated or garbled header: pydicom raises many kinds
            skipped.append((location, f"unreadable DICOM header: {exc}"))
            continue
        reason = _not_an_image_reason(header)
        if reason:
            skipped.append((location, reason))
            continue
        instances.append(DicomInstance(location, header, lambda path=path: pydicom.dcmread(path), Path(path)))
    return CollectedInstances(instances, skipped)


def _from_zip(path: Path) -> CollectedInstances:
    settings = get_settings()
    try:
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DicomInputError(f"{path.name} is not a readable zip: {exc}") from None
    unsafe = [m.filename for m in members if _escapes_archive(m.filename)]
    if unsafe:
        raise DicomInputError(
            f"refusing {path.name}: {len(unsafe)} zip entr{'y' if len(unsafe) == 1 else 'ies'} "
            f"would escape the archive (absolute or '..' paths), e.g. {unsafe[0]!r}"
        )
    if len(members) > settings.zip_max_members:
        raise DicomInputError(f"refusing {path.name}: {len(members)} entries exceed {settings.zip_max_members}")
    total = sum(m.file_size for m in members)
    if total > settings.zip_max_uncompressed_bytes:
        raise DicomInputError(
            f"refusing {path.name}: it expands to {total / 1e9:.1f} GB, "
            f"more than the {settings.zip_max_uncompressed_bytes / 1e9:.1f} GB limit"
        )
    if not members:
        raise DicomInputError(f"the zip {path.name} is empty")

    def loader(name: str) -> Callable[[], Dataset]:
        return lambda: pydicom.dcmread(io.BytesIO(archive.read(name)))

    instances, skipped = [], []
    for member in members:
        location = f"{path.name}:{member.filename}"
        try:
            with archive.open(member) as stream:
                header = pydicom.dcmread(stream, stop_before_pixels=True)
        except InvalidDicomError:
            skipped.append((location, "not a DICOM file"))
            continue
        except Exception as exc:
            skipped.append((location, f"unreadable DICOM header: {exc}"))
            continue
        reason = _not_an_image_reason(header)
        if reason:
            skipped.append((location, reason))
            continue
        instances.append(DicomInstance(location, header, loader(member.filename)))
    return CollectedInstances(instances, skipped)


def _escapes_archive(name: str) -> bool:
    normalised = name.replace("\\", "/")
    pure = PurePosixPath(normalised)
    return pure.is_absolute() or ".." in pure.parts or (len(normalised) > 1 and normalised[1] == ":")


def _not_an_image_reason(ds: Dataset) -> str:
    """Why an instance can never be part of an image volume ('' if it might be)."""
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "DICOMDIR index"
    if "Rows" not in ds or "Columns" not in ds:
        modality = ds.get("Modality", "") or "unknown modality"
        return f"not an image ({modality}, no Rows/Columns)"
    return ""


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or path.name
    except ValueError:
        return str(path)
