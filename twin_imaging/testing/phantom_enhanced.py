"""The phantom as one Enhanced CT Image instance (1.2.840.10008.5.1.4.1.1.2.1), all slices as frames.

Written by hand: highdicom's ``LegacyConvertedEnhancedCTImage`` only makes the *Legacy Converted* Enhanced CT
SOP class (1.2.840.10008.5.1.4.1.1.2.2), which lacks the CT functional groups (CT Image Frame Type, CT
Acquisition Details, ...) of a true Enhanced CT instance, and highdicom has no Enhanced CT constructor.

Frames are stored, like the single-frame instances' InstanceNumbers, in *descending* position along the slice
normal: frame f (1-based) holds slice k = N - f. Readers must sort by PlanePositionSequence, not frame number.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from twin_imaging.testing.phantom import Phantom, PhantomGeometry
from twin_imaging.testing.phantom_dicom import RESCALE_INTERCEPT, format_ds, phantom_uid, set_pixels


def enhanced_ct_dataset(ds: Dataset, phantom: Phantom) -> Dataset:
    """Add the Enhanced CT image, multi-frame and pixel modules to ``ds`` (which has the common attributes).

    ``ds`` comes with the patient, study, series, frame of reference and equipment attributes, ImageType
    (four values) and SOP Common; its single-frame CT attributes, if any, are removed.
    """
    geometry = phantom.geometry
    n_frames = geometry.shape[2]
    image_type = list(ds.ImageType)
    original = image_type[0] == "ORIGINAL"
    acquisition_datetime = f"{ds.StudyDate}{ds.StudyTime}"
    for keyword in ("AcquisitionDate", "AcquisitionTime", "DerivationDescription"):
        if keyword in ds:
            delattr(ds, keyword)

    # Enhanced CT Image module
    ds.AcquisitionDateTime = acquisition_datetime
    ds.AcquisitionDuration = 10.0
    ds.ContentQualification = "RESEARCH"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.AcquisitionContextSequence = Sequence()

    # Multi-frame Functional Groups and Multi-frame Dimension modules
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n_frames
    dimension_uid = phantom_uid(ds.SeriesInstanceUID, "dimension organization")
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=dimension_uid)]
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = [
        _item(
            DimensionIndexPointer=Tag(keyword),
            FunctionalGroupPointer=Tag("FrameContentSequence"),
            DimensionOrganizationUID=dimension_uid,
            DimensionDescriptionLabel=label,
        )
        for keyword, label in (("StackID", "Stack ID"), ("InStackPositionNumber", "In-Stack Position"))
    ]

    frame_type = _item(
        FrameType=image_type,
        PixelPresentation="MONOCHROME",
        VolumetricProperties="VOLUME",
        VolumeBasedCalculationTechnique="NONE",
    )
    shared = _item(
        PixelMeasuresSequence=[
            _item(
                PixelSpacing=format_ds([geometry.spacing_mm[1], geometry.spacing_mm[0]]),
                SliceThickness=format_ds([geometry.spacing_mm[2]])[0],
                SpacingBetweenSlices=format_ds([geometry.spacing_mm[2]])[0],
            )
        ],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=format_ds(geometry.image_orientation_patient))],
        PixelValueTransformationSequence=[
            _item(RescaleIntercept=str(RESCALE_INTERCEPT), RescaleSlope="1", RescaleType="HU")
        ],
        FrameVOILUTSequence=[_item(WindowCenter="40", WindowWidth="400")],
        FrameAnatomySequence=[
            _item(
                AnatomicRegionSequence=[
                    _item(CodeValue="818981001", CodingSchemeDesignator="SCT", CodeMeaning="Abdomen")
                ],
                FrameLaterality="U",
            )
        ],
        IrradiationEventIdentificationSequence=[
            _item(IrradiationEventUID=phantom_uid(ds.StudyInstanceUID, "irradiation event"))
        ],
        CTImageFrameTypeSequence=[frame_type],
        **(_ct_acquisition_groups(geometry) if original else {}),
    )
    ds.SharedFunctionalGroupsSequence = [shared]

    affine = geometry.affine_lps()
    half_extent = (np.asarray(geometry.shape[:2], float) - 1.0) / 2.0
    per_frame = []
    for frame in range(1, n_frames + 1):
        k = n_frames - frame  # descending along the normal, as the pixel frames below
        content = _item(StackID="1", InStackPositionNumber=frame, DimensionIndexValues=[1, frame])
        if original:
            content.FrameAcquisitionDateTime = acquisition_datetime
            content.FrameReferenceDateTime = acquisition_datetime
            content.FrameAcquisitionDuration = 500.0
        position = geometry.slice_position_lps(k)
        centre = position + affine[:3, :2] @ half_extent  # the centre of the frame
        per_frame.append(
            _item(
                FrameContentSequence=[content],
                PlanePositionSequence=[_item(ImagePositionPatient=format_ds(position))],
                CTPositionSequence=[
                    _item(
                        TablePosition=float(position[2]),
                        DataCollectionCenterPatient=centre.tolist(),
                        ReconstructionTargetCenterPatient=centre.tolist(),
                    )
                ],
            )
        )
    ds.PerFrameFunctionalGroupsSequence = per_frame

    frames = np.stack([phantom.image.array[:, :, n_frames - f].T for f in range(1, n_frames + 1)])
    set_pixels(ds, frames)
    return ds


def _ct_acquisition_groups(geometry: PhantomGeometry) -> dict[str, list[Dataset]]:
    """CT functional groups required when the frames are ORIGINAL: a helical acquisition at 120 kV."""
    field_of_view_mm = geometry.shape[0] * geometry.spacing_mm[0]
    return {
        "CTAcquisitionTypeSequence": [_item(AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO")],
        "CTAcquisitionDetailsSequence": [
            _item(
                DataCollectionDiameter="500",
                RevolutionTime=0.5,
                TotalCollimationWidth=40.0,
                SingleCollimationWidth=0.625,
                TableHeight="150",
                GantryDetectorTilt="0",
                RotationDirection="CW",
            )
        ],
        "CTTableDynamicsSequence": [_item(TableSpeed=80.0, TableFeedPerRotation=40.0, SpiralPitchFactor=1.0)],
        "CTGeometrySequence": [_item(DistanceSourceToDetector="1040", DistanceSourceToDataCollectionCenter=570.0)],
        "CTReconstructionSequence": [
            _item(
                ReconstructionAlgorithm="FILTER_BACK_PROJ",
                ConvolutionKernel="STANDARD",
                ConvolutionKernelGroup="SOFT_TISSUE",
                ReconstructionDiameter=f"{field_of_view_mm:g}",
                ReconstructionAngle=360.0,
                ReconstructionPixelSpacing=[float(geometry.spacing_mm[1]), float(geometry.spacing_mm[0])],
                ImageFilter="NONE",
            )
        ],
        "CTExposureSequence": [
            _item(
                ExposureTimeInms=500.0,
                XRayTubeCurrentInmA=200.0,
                ExposureInmAs=100.0,
                ExposureModulationType="NONE",
                CTDIvol=10.0,
                CTDIPhantomTypeCodeSequence=[
                    _item(
                        CodeValue="113691",
                        CodingSchemeDesignator="DCM",
                        CodeMeaning="IEC Body Dosimetry Phantom",
                    )
                ],
            )
        ],
        "CTXRayDetailsSequence": [_item(KVP="120", FocalSpots=["1.2"], FilterType="BODY", FilterMaterial=["ALUMINUM"])],
    }


def _item(**attributes) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds
