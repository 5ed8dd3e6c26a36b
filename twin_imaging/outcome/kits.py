"""KiTS23 as outcome-model training data: per case the pre-operative clinical input, the operation it had (its
scenario), its targets and, optionally, the features of its expert mask with the virtual resection of both scenarios.

The layout is KiTS's own: ``root/kits23.json`` and ``root/case_XXXXX/segmentation.nii.gz`` (0 background, 1 kidney,
2 tumour, 3 cyst). Mask features are computed in a pool of processes and cached per case in ``cache_dir`` as JSON,
keyed by the mask file's sha256 and ``FEATURES_VERSION``: bump it whenever ``kidney_features`` or
``virtual_resection`` change what they return. Nothing is dropped silently: a case whose clinical input, scenario or
mask is refused is kept, with the error, and ``KitsDataset.errors()`` lists them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from twin_imaging.errors import InputError
from twin_imaging.files import write_bytes_atomic
from twin_imaging.io.nifti import read_nifti
from twin_imaging.outcome.clinical import (
    DEFAULT_MARGIN_MM,
    ClinicalInput,
    SurgicalScenario,
    clinical_values,
    scenario_from_kits,
)
from twin_imaging.outcome.imputation import impute_clinical
from twin_imaging.outcome.targets import compute_targets
from twin_imaging.volume import Volume

FEATURES_VERSION = "1"
KITS_JSON = "kits23.json"
KITS_MASK = "segmentation.nii.gz"
KITS_LABEL_NAMES = {1: "kidney", 2: "tumor", 3: "cyst"}
RESECTION_MARGINS_MM: dict[str, float] = {  # every case is resected virtually under each scenario
    "partial_nephrectomy": DEFAULT_MARGIN_MM,
    "radical_nephrectomy": 0.0,
}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KitsCase:
    case_id: str
    kits_procedure: str | None  # KiTS surgical_procedure as recorded (nephroureterectomy, cryoablation included)
    clinical: ClinicalInput | None
    scenario: SurgicalScenario | None  # None: not a modelled scenario (cryoablation), see scenario_error
    targets: dict[str, int | None]
    clinical_error: str | None = None
    scenario_error: str | None = None
    features: dict[str, Any] | None = None  # kidney_features, as JSON-ready values
    resections: dict[str, dict[str, Any]] | None = None  # procedure → virtual_resection, as JSON-ready values
    features_error: str | None = None
    # an outcome (never an input): KiTS first_postop_egfr, median about 4 months after surgery, the new baseline
    first_postop_egfr: float | None = None

    @property
    def actual_resection(self) -> dict[str, Any] | None:
        """The virtual resection under the operation the case actually had."""
        if self.resections is None or self.scenario is None:
            return None
        return self.resections.get(self.scenario.procedure)


@dataclass(frozen=True)
class KitsDataset:
    root: Path
    cases: tuple[KitsCase, ...]
    features_cached: int = 0  # cases whose features came from the cache
    features_computed: int = 0  # cases whose features were computed in this load
    _by_id: dict[str, KitsCase] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {case.case_id: case for case in self.cases})

    def __len__(self) -> int:
        return len(self.cases)

    def case(self, case_id: str) -> KitsCase:
        return self._by_id[case_id]

    def errors(self) -> list[tuple[str, str, str]]:
        """(case_id, "clinical" | "scenario" | "features", message) for every refused part of a case."""
        found = []
        for case in self.cases:
            for stage in ("clinical", "scenario", "features"):
                message = getattr(case, f"{stage}_error")
                if message:
                    found.append((case.case_id, stage, message))
        return found

    def table(self, *, imputation: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """One row per case, column name → array, for modelling.

        ``case_id`` and ``kits_procedure`` (str), ``clinical_ok``/``scenario_ok``/``features_ok`` (bool); float64:
        ``target.<name>``, ``clinical.<name>`` (``CLINICAL_VECTOR_NAMES``, under the actual scenario), ``mask.<name>``
        (numeric scalars of ``kidney_features``, nested keys joined by "."), ``resection.<name>`` (the resection
        under the actual operation). NaN where a value is missing; missing clinical inputs are imputed only when
        ``imputation`` (``fit_imputation``) is given.
        """
        rows = [_row(case, imputation) for case in self.cases]
        names: dict[str, None] = {}
        for row in rows:
            names.update(dict.fromkeys(row))
        table: dict[str, np.ndarray] = {}
        for name in names:
            if name in ("case_id", "kits_procedure"):
                table[name] = np.array([row[name] for row in rows], dtype=object)
            elif name.endswith("_ok"):
                table[name] = np.array([row[name] for row in rows], dtype=bool)
            else:
                table[name] = np.array([row.get(name, np.nan) for row in rows], dtype=np.float64)
        return table


def load_kits_dataset(
    root: str | os.PathLike,
    *,
    features: bool = True,
    workers: int = 2,
    cache_dir: str | os.PathLike | None = None,
) -> KitsDataset:
    """Every case of ``root/kits23.json``; with ``features``, mask features from a pool of ``workers`` processes."""
    root = Path(root)
    records = _read_records(root / KITS_JSON)
    cases = [_case(record) for record in records]
    if not features:
        return KitsDataset(root=root, cases=tuple(cases))
    results, cached = _mask_results(root, [case.case_id for case in cases], workers=workers, cache_dir=cache_dir)
    cases = [
        replace(
            case,
            features=results[case.case_id].get("features"),
            resections=results[case.case_id].get("resections"),
            features_error=results[case.case_id].get("error"),
        )
        for case in cases
    ]
    return KitsDataset(root=root, cases=tuple(cases), features_cached=cached, features_computed=len(cases) - cached)


def compute_case_features(labels: Volume) -> dict[str, Any]:
    """The features of one KiTS label map and its virtual resection under each scenario, as JSON-ready values."""
    from twin_imaging.outcome.kidney_features import kidney_features
    from twin_imaging.outcome.resection import virtual_resection

    found = kidney_features(labels)
    resections = {
        procedure: _jsonable(virtual_resection(labels, found, scenario=procedure, margin_mm=margin_mm))
        for procedure, margin_mm in RESECTION_MARGINS_MM.items()
    }
    return {"features": _jsonable(found), "resections": resections}


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path.name} not found in {path.parent} (the KiTS23 layout: kits23.json, case_*/)")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("case_id") for r in records):
        raise InputError(f"{path} must be a list of records, each with a case_id")
    return records


def _case(record: dict[str, Any]) -> KitsCase:
    clinical = scenario = None
    clinical_error = scenario_error = None
    try:
        clinical = ClinicalInput.from_kits(record)
    except InputError as exc:
        clinical_error = str(exc)
    try:
        scenario = scenario_from_kits(record)
    except InputError as exc:
        scenario_error = str(exc)
    return KitsCase(
        case_id=str(record["case_id"]),
        kits_procedure=record.get("surgical_procedure"),
        clinical=clinical,
        scenario=scenario,
        targets=compute_targets(record),
        first_postop_egfr=_egfr_value(record.get("first_postop_egfr")),
        clinical_error=clinical_error,
        scenario_error=scenario_error,
    )


def _egfr_value(entry: Any) -> float | None:
    value = entry.get("value") if isinstance(entry, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mask_results(
    root: Path, case_ids: list[str], *, workers: int, cache_dir: str | os.PathLike | None
) -> tuple[dict[str, dict[str, Any]], int]:
    """case_id → {"features", "resections"} or {"error"}, and how many came from the cache."""
    cache = Path(cache_dir) if cache_dir is not None else None
    results: dict[str, dict[str, Any]] = {}
    pending: dict[str, tuple[Path, str]] = {}
    cached = 0
    for case_id in case_ids:
        mask = root / case_id / KITS_MASK
        if not mask.is_file():
            results[case_id] = {"error": f"{case_id}/{KITS_MASK} not found"}
            continue
        digest = _sha256(mask)
        hit = _read_cache(cache, case_id, digest) if cache is not None else None
        if hit is None:
            pending[case_id] = (mask, digest)
        else:
            results[case_id] = hit
            cached += 1
    logger.info("KiTS mask features: %d cached, %d to compute", cached, len(pending))
    for case_id, result in _compute_all(pending, workers=workers):
        results[case_id] = result
        if cache is not None:
            _write_cache(cache, case_id, pending[case_id][1], result)
    return results, cached


def _compute_all(pending: dict[str, tuple[Path, str]], *, workers: int):
    if workers <= 1 or len(pending) <= 1:
        for case_id, (mask, _) in pending.items():
            yield case_id, _case_features_job(str(mask))
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(pending))) as pool:
        futures = {pool.submit(_case_features_job, str(mask)): case_id for case_id, (mask, _) in pending.items()}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _case_features_job(mask_path: str) -> dict[str, Any]:
    """In a worker: the mask's features, or the InputError that refused it (other errors are bugs and propagate)."""
    try:
        labels = read_nifti(mask_path)
        labels = replace(labels, label_names=KITS_LABEL_NAMES)
        result = compute_case_features(labels)
    except InputError as exc:
        return {"error": str(exc)}
    return json.loads(json.dumps(_jsonable(result)))  # exactly what a cache hit returns


def _cache_file(cache: Path, case_id: str) -> Path:
    return cache / f"{case_id}.json"


def _read_cache(cache: Path, case_id: str, digest: str) -> dict[str, Any] | None:
    path = _cache_file(cache, case_id)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if entry.get("mask_sha256") != digest or entry.get("features_version") != FEATURES_VERSION:
        return None
    return entry.get("result")


def _write_cache(cache: Path, case_id: str, digest: str, result: dict[str, Any]) -> None:
    entry = {"case_id": case_id, "mask_sha256": digest, "features_version": FEATURES_VERSION, "result": result}
    write_bytes_atomic(_cache_file(cache, case_id), json.dumps(entry, indent=1).encode("utf-8"))


def _sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _jsonable(value: Any) -> Any:
    """A result object (``to_json()``, pydantic model, dataclass, mapping, numpy value) as plain JSON types."""
    if callable(getattr(value, "to_json", None)):
        return _jsonable(value.to_json())
    if hasattr(value, "model_dump"):
        return _jsonable(value.model_dump(mode="json"))
    if hasattr(value, "__dataclass_fields__"):
        return {name: _jsonable(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _row(case: KitsCase, imputation: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "case_id": case.case_id,
        "kits_procedure": case.kits_procedure or "",
        "clinical_ok": case.clinical is not None,
        "scenario_ok": case.scenario is not None,
        "features_ok": case.features is not None,
    }
    row.update({f"target.{name}": np.nan if value is None else float(value) for name, value in case.targets.items()})
    clinical = case.clinical
    if clinical is not None and imputation is not None:
        clinical, _ = impute_clinical(clinical, imputation)
    row.update({f"clinical.{name}": value for name, value in clinical_values(clinical, case.scenario).items()})
    _flatten(row, "mask", case.features)
    _flatten(row, "resection", case.actual_resection)
    return row


def _flatten(row: dict[str, Any], prefix: str, values: dict[str, Any] | None) -> None:
    """Numeric scalars (and nulls) of nested ``values`` into ``row`` as ``prefix.key.subkey``; other values skipped."""
    for key, value in (values or {}).items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            _flatten(row, name, value)
        elif value is None or isinstance(value, bool | int | float):
            row[name] = np.nan if value is None else float(value)
