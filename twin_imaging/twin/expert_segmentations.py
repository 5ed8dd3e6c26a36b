"""Radiologists' DICOM SEGs of analysed series on the twin (the ``TwinStore`` methods, kept here by concept).

A SEG is recorded against the analysis of its series that is current when it arrives (the latest completed one not
superseded), with its author, how it came in and how its segments map; the SEG file goes to the artifact store
first, so a crash leaves at worst an unreferenced file. Recording is idempotent on the SEG's SOP Instance UID: the
same SEG sent again is the record already made.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from twin_imaging.twin import analyses, mapping
from twin_imaging.twin import views as v
from twin_imaging.twin.audit import audit, check_actor
from twin_imaging.twin.schema import Analysis, ExpertSegmentation, Series

EXPERT_SEG_KIND = "dicom_seg_expert"
RECEIVED_VIA = ("stow-rs", "c-store", "api")


class ExpertSegmentationRecords:
    """Mixed into ``TwinStore`` (which provides ``_transaction`` and ``artifacts``)."""

    def analysis_with_patient(
        self, analysis_id: str, *, actor: str, only_sent_by: str | None = None
    ) -> tuple[str, v.AnalysisView]:
        """The patient key and the analysis, by the analysis' public id (audited as a read)."""
        actor = check_actor(actor)
        with self._transaction() as session:
            row = analyses.find_analysis_row(session, analysis_id, only_sent_by)
            key = row.series.study.patient.patient_key
            audit(session, actor, "read_analysis", key, "analysis", row.public_id)
            return key, mapping.analysis_view(row, row.series.study, row.series)

    def current_analysis_of_series(self, series_instance_uid: str, *, actor: str) -> tuple[str, v.AnalysisView] | None:
        """The patient key and the series' current analysis (latest completed, not superseded), or None."""
        actor = check_actor(actor)
        with self._transaction() as session:
            row = session.scalar(
                select(Analysis)
                .join(Analysis.series)
                .where(
                    Series.series_instance_uid == series_instance_uid,
                    Analysis.status == "completed",
                    Analysis.superseded_by_id.is_(None),
                )
                .order_by(Analysis.finished_at.desc(), Analysis.id.desc())
                .limit(1)
            )
            if row is None:
                return None
            key = row.series.study.patient.patient_key
            audit(session, actor, "read_analysis", key, "analysis", row.public_id)
            return key, mapping.analysis_view(row, row.series.study, row.series)

    def record_expert_segmentation(
        self,
        analysis_id: str,
        *,
        sop_instance_uid: str,
        author: str,
        content_label: str,
        segments: list[dict[str, Any]],
        seg_bytes: bytes,
        via: str,
        actor: str,
    ) -> tuple[v.ExpertSegmentationView, bool]:
        """Record the SEG against the analysis; (its record, whether it is new)."""
        actor = check_actor(actor)
        if via not in RECEIVED_VIA:
            raise ValueError(f"received_via must be one of {RECEIVED_VIA}, got {via!r}")
        existing = self._expert_segmentation_by_uid(sop_instance_uid)
        if existing is not None:
            return existing, False
        stored = self.artifacts.put(seg_bytes, kind=EXPERT_SEG_KIND, name=f"{sop_instance_uid}.dcm")
        try:
            with self._transaction() as session:
                analysis = analyses.find_analysis_row(session, analysis_id)
                row = ExpertSegmentation(
                    analysis_id=analysis.id,
                    sop_instance_uid=sop_instance_uid,
                    author=author[:255],
                    content_label=content_label[:128],
                    segments=segments,
                    received_via=via,
                    received_by=actor,
                    artifact_sha256=stored.sha256,
                )
                session.add(row)
                session.flush()
                key = analysis.series.study.patient.patient_key
                audit(session, actor, "record_expert_segmentation", key, "analysis", analysis.public_id, row.public_id)
                return mapping.expert_segmentation_view(row), True
        except IntegrityError:  # the same SEG recorded concurrently: that record is the answer
            found = self._expert_segmentation_by_uid(sop_instance_uid)
            if found is None:
                raise
            return found, False

    def _expert_segmentation_by_uid(self, sop_instance_uid: str) -> v.ExpertSegmentationView | None:
        with self._transaction() as session:
            row = session.scalar(
                select(ExpertSegmentation).where(ExpertSegmentation.sop_instance_uid == sop_instance_uid)
            )
            return None if row is None else mapping.expert_segmentation_view(row)
