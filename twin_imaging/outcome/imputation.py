"""Imputation of missing pre-operative clinical inputs from training values, and the report of what was filled in.

``fit_imputation`` learns medians (numbers) and modes (categories and Charlson items) from training records;
``impute_clinical`` fills a ``ClinicalInput``'s missing inputs from them and lists what it filled in an
``ImputationReport``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from twin_imaging.errors import InputError
from twin_imaging.outcome.clinical import (
    _IMPUTABLE,
    CHARLSON_ITEMS,
    ClinicalInput,
    ClinicalInputError,
    parse_clinical,
)

_CATEGORICAL = ("smoking_history", "alcohol_use")


class ImputedValue(BaseModel):
    field: str
    value: Any
    source: str = Field(description="where the value came from, e.g. 'training median'")


class ImputationReport(BaseModel):
    """The inputs that were missing and filled in; shown next to every prediction made from them."""

    imputed: list[ImputedValue] = Field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        return [entry.field for entry in self.imputed]

    def summary(self) -> str:
        if not self.imputed:
            return "no inputs imputed"
        parts = [f"{entry.field} = {entry.value} ({entry.source})" for entry in self.imputed]
        return f"{len(parts)} missing input(s) imputed: " + "; ".join(parts)


def fit_imputation(records: Iterable[ClinicalInput | Mapping[str, Any]]) -> dict[str, Any]:
    """Training values for missing inputs: medians (numbers), modes (categories and Charlson items).

    A mapping is read as a kits23.json record; records refused by ``from_kits`` are skipped. ``pack_years`` is the
    median over smokers (a never-smoker has 0). Returns field name (``comorbidities.<item>``) → value, JSON-ready.
    """
    inputs = [_as_clinical(record) for record in records]
    inputs = [clinical for clinical in inputs if clinical is not None]
    if not inputs:
        raise InputError("no usable clinical records to fit imputation values on")
    values: dict[str, Any] = {}
    for name in _IMPUTABLE:
        pool = inputs if name != "pack_years" else [c for c in inputs if c.smoking_history != "never_smoked"]
        known = [getattr(c, name) for c in pool if getattr(c, name) is not None]
        if name in _CATEGORICAL:
            values[name] = Counter(known).most_common(1)[0][0] if known else None
        else:
            values[name] = round(float(np.median(known)), 2) if known else None
    for item in CHARLSON_ITEMS:
        known = [c.comorbidities[item] for c in inputs if c.comorbidities.get(item) is not None]
        values[f"comorbidities.{item}"] = Counter(known).most_common(1)[0][0] if known else False
    return values


def impute_clinical(clinical: ClinicalInput, imputation: Mapping[str, Any]) -> tuple[ClinicalInput, ImputationReport]:
    """``clinical`` with every missing input filled from ``imputation`` (``fit_imputation``), and what was filled."""
    data = clinical.model_dump()
    comorbidities = dict(data.pop("comorbidities"))
    report = ImputationReport()
    lacking: list[str] = []
    for name in clinical.missing_fields():
        if name == "pack_years" and data["smoking_history"] == "never_smoked":
            data[name] = 0.0
            report.imputed.append(ImputedValue(field=name, value=0.0, source="never-smoker"))
            continue
        if imputation.get(name) is None:
            lacking.append(f"{name}: missing, and the imputation values have none for it")
            continue
        value = imputation[name]
        source = "training mode" if name in _CATEGORICAL or name.startswith("comorbidities.") else "training median"
        if name.startswith("comorbidities."):
            comorbidities[name.split(".", 1)[1]] = value
        else:
            data[name] = value
        report.imputed.append(ImputedValue(field=name, value=value, source=source))
    if lacking:
        raise ClinicalInputError(lacking)
    return parse_clinical({**data, "comorbidities": comorbidities}, what="imputed clinical input"), report


def _as_clinical(record: ClinicalInput | Mapping[str, Any]) -> ClinicalInput | None:
    if isinstance(record, ClinicalInput):
        return record
    try:
        return ClinicalInput.from_kits(record)
    except InputError:
        return None
