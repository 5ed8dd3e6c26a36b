"""The DICOM objects an analysis sends back to the PACS: SEG, SR and one secondary capture per overlay plane.

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
from twin_imaging.io.dicom_uids import uid_from
from twin_imaging.pipeline import RESEARCH_NOTICE, AnalysisResult

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
