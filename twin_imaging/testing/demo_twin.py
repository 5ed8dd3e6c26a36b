"""A patient twin with a story, for the twin page's tests, its screenshots and demos: a pre-operative CT of the
phantom with a right renal tumour (analysed by the shipped model, then segmented by a radiologist, whose masks run
the surgical scenarios), eGFR before and after, a partial nephrectomy, and a post-operative CT (analysed).

    twin = build_demo_twin(data_dir)     # the service's data folder (TWIN_IMAGING_DATA_DIR): twin.sqlite3, artifacts
    twin.patient_id, twin.analysis_ids   # pre-operative first
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pydicom

from twin_imaging.expert_intake import receive_expert_seg
from twin_imaging.inference.segment import Segmenter
from twin_imaging.models import default_segmentation_package
from twin_imaging.outcome.model import OutcomeModel
from twin_imaging.pipeline import analyze_study
from twin_imaging.settings import Settings
from twin_imaging.testing.expert_seg import radiologist_seg
from twin_imaging.testing.phantom import RENAL_TUMOUR, PhantomAnatomy
from twin_imaging.testing.phantom_dicom import PatientSpec, PhantomGeometry, SeriesSpec, StudySpec, write_phantom_study
from twin_imaging.twin.store import TwinStore
from twin_imaging.twin.views import ObservationInput, ProcedureInput

PATIENT = PatientSpec(
    patient_id="DEMO-TWIN-1", patient_name="Demo^Dana", patient_birth_date="19610304", patient_sex="F"
)
GEOMETRY = PhantomGeometry(shape=(160, 160, 64), spacing_mm=(2.5, 2.0, 3.0))
PARTIAL_NEPHRECTOMY = ProcedureInput(
    "81516001", "Partial nephrectomy", date(2024, 4, 10), "http://snomed.info/sct", laterality="right"
)
EGFR = [(datetime(2024, 2, 20, 8, tzinfo=UTC), 74.0), (datetime(2024, 8, 5, 8, tzinfo=UTC), 63.0)]


@dataclass(frozen=True)
class DemoTwin:
    patient_id: str
    analysis_ids: tuple[str, ...]  # pre-operative, post-operative
    study_uids: tuple[str, ...]


def build_demo_twin(data_dir: str | Path, *, work_dir: str | Path | None = None) -> DemoTwin:
    """Write the twin into ``data_dir`` (SQLite twin.sqlite3 and artifacts/, as the service lays them out)."""
    data_dir = Path(data_dir)
    work = Path(work_dir) if work_dir is not None else data_dir / "demo-work"
    segmenter = Segmenter(default_segmentation_package())
    store = TwinStore(
        f"sqlite:///{data_dir / 'twin.sqlite3'}", artifacts_dir=data_dir / "artifacts", settings=Settings()
    )
    try:
        key = store.patient_key_for(PATIENT.patient_id)
        pre_anatomy = PhantomAnatomy().with_structure(RENAL_TUMOUR)
        pre = write_phantom_study(
            work / "pre",
            (SeriesSpec(geometry=GEOMETRY),),
            patient=PATIENT,
            study=StudySpec(study_date="20240301", accession_number="DEMO1", study_description="CT ABDOMEN pre-op"),
            anatomy=pre_anatomy,
        )
        pre_result = analyze_study(work / "pre", work / "pre-out", segmenter=segmenter)
        pre_analysis = store.attach_analysis(pre_result, actor="pacs")
        for at, value in EGFR[:1]:
            store.record_observation(key, _egfr(at, value), actor="lab")
        series = pre.series[0]
        seg = radiologist_seg(
            [pydicom.dcmread(p) for p in series.paths],
            series.phantom.labels,
            {"kidney_right": "kidney_right", "kidney_left": "kidney_left", "renal_tumor": "renal_tumor"},
        )
        buffer = io.BytesIO()
        seg.save_as(buffer, enforce_file_format=True)
        receive_expert_seg(store, buffer.getvalue(), via="api", actor="api:reading-room", outcome_model=OutcomeModel())
        store.record_procedure(key, PARTIAL_NEPHRECTOMY, actor="or-system")
        post = write_phantom_study(
            work / "post",
            (SeriesSpec(geometry=GEOMETRY),),
            patient=PATIENT,
            study=StudySpec(study_date="20240701", accession_number="DEMO2", study_description="CT ABDOMEN post-op"),
            anatomy=PhantomAnatomy().with_scaled("kidney_right", 0.85),
            seed=1,
        )
        post_analysis = store.attach_analysis(
            analyze_study(work / "post", work / "post-out", segmenter=segmenter), actor="pacs"
        )
        for at, value in EGFR[1:]:
            store.record_observation(key, _egfr(at, value), actor="lab")
        return DemoTwin(
            PATIENT.patient_id,
            (pre_analysis.analysis_id, post_analysis.analysis_id),
            (pre.study_instance_uid, post.study_instance_uid),
        )
    finally:
        store.close()


def _egfr(at: datetime, value: float) -> ObservationInput:
    return ObservationInput(code="62238-1", display="eGFR", value=value, unit="mL/min/{1.73_m2}", effective_at=at)
