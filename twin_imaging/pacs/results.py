"""The DICOM objects an analysis sends back to the PACS: SEG, SR and one secondary capture per overlay plane; and,
where an analysis supersedes another (more instances of the series arrived), a rejection note that withdraws the
old SEG and SR, so the PACS shows the results of the whole series only.

The secondary captures are the overlay PNGs (contours, legend, volumes) as RGB images in a new series of the source
study (highdicom ``SCImage.from_ref_dataset`` copies the patient and study from the source), for viewers that cannot
show a SEG. They are pictures for people, not measurements: their ImageComments say so.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from twin_imaging import __version__
from twin_imaging.analysis_outputs import RESEARCH_NOTICE
from twin_imaging.errors import TwinError
from twin_imaging.io.dicom_uids import uid_from
from twin_imaging.pipeline import AnalysisResult

SC_SERIES_NUMBER = 9003  # SEG and SR use their own; overlays get a series of their own in the source study
# Patient orientation of the overlay pictures' rows and columns (RAS display: radiological left on the right).
_PATIENT_ORIENTATION = {"axial": ("L", "P"), "coronal": ("L", "F"), "sagittal": ("P", "F")}


def overlay_secondary_captures(result: AnalysisResult) -> list[Dataset]:
    """One Secondary Capture Image per overlay plane, in one new series of the source study."""
    if not result.input.source_headers:
        return []
    import highdicom as hd

    reference = result.input.source_headers[0]
    # The series follows the SEG's series (inputs and model), each picture its own content: a changed result gets
    # new instances in the same series, the same result the same UIDs.
    series_uid = uid_from(result.seg.SeriesInstanceUID, "overlays") if result.seg else generate_uid()
    captures = []
    planes = [o for o in result.document.outputs if o.kind == "overlay_png"]
    for number, output in enumerate(planes, start=1):
        with Image.open(result.out_dir / output.file) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        capture = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=reference,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=uid_from(series_uid, output.file, output.sha256),
            instance_number=number,
            manufacturer="twin-imaging",
            patient_orientation=_PATIENT_ORIENTATION.get(output.plane or "axial", ("L", "P")),
        )
        capture.SeriesDescription = f"twin-imaging overlays ({result.document.model.model_id})"
        capture.ImageComments = f"{output.plane} overlay of the segmentation. {RESEARCH_NOTICE}"
        capture.SoftwareVersions = __version__
        if "Laterality" not in capture:  # General Series, Type 2C: unpaired (abdomen), present and empty
            capture.Laterality = ""
        captures.append(capture)
    return captures


def result_datasets(result: AnalysisResult) -> list[Dataset]:
    """Everything to file back into the source study: SEG, SR (DICOM inputs only) and the overlay captures."""
    return [ds for ds in (result.seg, result.sr) if ds is not None] + overlay_secondary_captures(result)


REJECTION_SERIES_NUMBER = 9004


def rejection_note(rejected: list[Dataset], *, description: str) -> Dataset:
    """A Key Object Selection "Rejected for Quality Reasons" (DCM 113001; IHE Imaging Object Change Management) that
    tells the PACS to withdraw ``rejected`` (SEGs, SRs of one study) because newer results replace them. Its UIDs
    follow from the rejected instances, so the same rejection sent twice is one object."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not rejected:
        raise ValueError("a rejection note needs at least one instance to reject")
    studies = {str(ds.StudyInstanceUID) for ds in rejected}
    if len(studies) != 1:
        raise ValueError(f"a rejection note covers one study; the instances belong to {len(studies)}")
    key = sorted(str(ds.SOPInstanceUID) for ds in rejected)
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.RejectedForQualityReasons, referenced_objects=rejected, description=description
    )
    note = hd.ko.KeyObjectSelectionDocument(
        evidence=rejected,
        content=content,
        series_instance_uid=uid_from("twin-imaging rejection series", *key),
        series_number=REJECTION_SERIES_NUMBER,
        sop_instance_uid=uid_from("twin-imaging rejection", *key),
        instance_number=1,
        manufacturer="twin-imaging",
    )
    note.SeriesDescription = "twin-imaging: superseded results withdrawn"
    return note


def superseded_rejection(store, analysis, *, actor: str) -> Dataset | None:
    """The rejection note for the SEGs and SRs of the analyses ``analysis`` (a twin view) superseded, read back from
    the twin's artifact store; None where it superseded none."""
    import pydicom

    rejected = []
    for old_id in analysis.supersedes:
        for kind in ("dicom_seg", "dicom_sr"):
            try:
                _, path = store.artifact_file(old_id, kind, actor=actor)
            except TwinError:  # a NIfTI analysis has no DICOM objects to withdraw
                continue
            rejected.append(pydicom.dcmread(path, stop_before_pixels=True))
    if not rejected:
        return None
    return rejection_note(
        rejected, description=f"replaced by analysis {analysis.analysis_id}: more instances of the series arrived"
    )
