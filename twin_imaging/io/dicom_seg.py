"""DICOM Segmentation (SEG) out and back, with highdicom: a label map on a series' grid ⇄ one SEG instance.

seg = write_dicom_seg(labels, [f.instance.header for f in scan.chosen.frames], card)
labels_again = read_dicom_seg(seg, volume)

Choices:
- BINARY segmentation (one bit per pixel, one frame per segment and slice): the LABELMAP type is newer than the
  dicom3tools that validates our output and than most viewers in the field.
- One segment per card structure present in the label map, numbered 1..N in card label order; empty structures are
  omitted, and so are empty frames. Each segment records the card's label value in its Segment Description
  (``"label value 3 of kidney_model 1.2.0"``), so that ``read_dicom_seg`` restores the card's values exactly.
- The frames of ``labels`` (slice k) correspond pixel for pixel to ``source_headers[k]``; highdicom copies their
  plane positions and records, per frame, the source SOP Instance it was derived from. A viewer that places frames
  by those references cannot shift the overlay by a slice. (Within a segment highdicom stores the frames in spatial
  order along -normal, i.e. k descending, as its row/column index convention has it.)
- The label map is refused unless it sits on the source images: as many slices as headers, ``sources`` naming the
  headers' SOP Instance UIDs in order, and each header's size, orientation and position matching slice k.
- A multi-frame source (Enhanced CT/MR: the same header for every slice, ``sources`` naming its frames) gets one
  SEG frame per source frame, in the source's frame order; highdicom then references each frame of the one
  instance it was derived from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

import twin_imaging
from twin_imaging.io.dicom_uids import content_digest, derived_uid
from twin_imaging.models.card import CodedConcept, ModelCard, StructureSpec
from twin_imaging.volume import Volume, axes_slowest_first

_LABEL_DESCRIPTION = "label value {label} of {model_id} {version}"
_LABEL_PATTERN = re.compile(r"^label value (\d+)\b")
_POSITION_TOLERANCE = 0.1  # of a voxel: how far a source image may lie from the label grid's slice


def write_dicom_seg(
    labels: Volume,
    source_headers: Sequence[Dataset],
    card: ModelCard,
    *,
    series_number: int = 900,
    series_description: str | None = None,
    content_label: str = "ORGANS",
    manufacturer: str = "twin-imaging",
    software_versions: str = twin_imaging.__version__,
    device_serial_number: str = "0",
    instance_number: int = 1,
) -> Dataset:
    """A BINARY DICOM SEG of ``labels`` (values = the card's labels), derived from ``source_headers`` (slice k).

    The headers need no pixel data. Raises ValueError where the label map and the source images do not correspond
    slice for slice, or where it holds values the card does not define.
    """
    multiframe = _multiframe_source(source_headers)
    if multiframe is None:
        _check_correspondence(labels, source_headers)
        source_images = list(source_headers)
    else:
        frame_numbers = _check_frame_correspondence(labels, source_headers)
        source_images = [multiframe]
    if labels.array.dtype.kind not in "iu":
        raise ValueError(f"a label map holds integers, got {labels.array.dtype}")
    present = _present_labels(np.asarray(labels.array))
    by_label = {s.label: s for s in card.structures}
    unknown = sorted(int(v) for v in present if v != 0 and int(v) not in by_label)
    if unknown:
        raise ValueError(f"label values {unknown} are not structures of model {card.model_id}")
    structures = [s for s in sorted(card.structures, key=lambda s: s.label) if s.label in present]
    if not structures:
        raise ValueError("the label map is empty: a DICOM SEG needs at least one segment")

    lookup = np.zeros(max(by_label) + 1, dtype=np.uint8)
    for number, spec in enumerate(structures, start=1):
        lookup[spec.label] = number
    frames = _segment_frames(np.asarray(labels.array), lookup)
    if multiframe is not None:  # one SEG frame per source frame, in the source's frame order
        by_frame = np.zeros((int(multiframe.NumberOfFrames), *frames.shape[1:]), dtype=frames.dtype)
        by_frame[np.asarray(frame_numbers) - 1] = frames
        frames = by_frame

    algorithm = hd.AlgorithmIdentificationSequence(
        name=card.model_id, family=codes.cid7162.ArtificialIntelligence, version=card.version, source=manufacturer
    )
    descriptions = [_segment_description(number, spec, card, algorithm) for number, spec in enumerate(structures, 1)]
    default_description = f"Segmentation {card.model_id} {card.version}"
    seg = hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid(source_headers, card, "seg.series"),
        series_number=series_number,
        sop_instance_uid=derived_uid(source_headers, card, "seg.instance", content_digest(labels.array)),
        instance_number=instance_number,
        manufacturer=manufacturer,
        manufacturer_model_name=card.model_id,
        software_versions=software_versions,
        device_serial_number=device_serial_number,
        content_description=card.title[:64],
        content_label=content_label,
        series_description=(series_description or default_description)[:64],
        omit_empty_frames=True,
    )
    return seg


def read_dicom_seg(seg: Dataset | str | os.PathLike, reference: Volume) -> Volume:
    """The label map of a SEG on ``reference``'s grid (uint8; label values and names as the writer's card).

    Frames are placed by the source SOP Instance each one was derived from where the SEG references
    ``reference.sources``, otherwise by their position in space, which must fall on the reference grid.
    """
    if isinstance(seg, hd.seg.Segmentation):
        segmentation = seg
    elif isinstance(seg, Dataset):
        segmentation = hd.seg.Segmentation.from_dataset(seg, copy=True)
    else:
        segmentation = hd.seg.segread(seg)
    seg_frame = str(segmentation.get("FrameOfReferenceUID", "") or "")
    reference_frame = reference.info.frame_of_reference_uid
    if seg_frame and reference_frame and seg_frame != reference_frame:
        raise ValueError(f"the SEG's frame of reference {seg_frame} is not the reference volume's {reference_frame}")

    segments = _read_segments(segmentation)
    lookup = np.zeros(max(segments) + 1, dtype=np.uint16)
    for number, segment in segments.items():
        lookup[number] = segment.label
    if lookup.max() > 255:
        raise ValueError(f"label values up to {lookup.max()} do not fit a uint8 label map")
    lookup = lookup.astype(np.uint8)

    referenced = {uid for _, _, uid in segmentation.get_source_image_uids()}
    source_uids = [s.sop_instance_uid for s in reference.sources]
    by_instance = (
        bool(source_uids)
        and all(s.frame_number is None for s in reference.sources)
        and referenced.issuperset(source_uids)
        and _same_pixel_layout(segmentation, reference)
    )
    if by_instance:
        stack = segmentation.get_pixels_by_source_instance(
            source_sop_instance_uids=source_uids, combine_segments=True, dtype=np.uint16
        )  # (k, rows=j, columns=i), segment numbers
        if stack.shape[1:] != (reference.shape[1], reference.shape[0]):
            raise ValueError(
                f"SEG frames of {stack.shape[1]} x {stack.shape[2]} pixels do not match the reference's "
                f"{reference.shape[1]} rows x {reference.shape[0]} columns"
            )
        array = np.ascontiguousarray(np.transpose(lookup[stack], (2, 1, 0)))
    else:
        array = lookup[_segment_numbers_on_grid(segmentation, reference)]
    names = {segment.label: segment.name for segment in segments.values()}
    return reference.with_array(array, label_names=dict(sorted(names.items())))


@dataclass(frozen=True)
class _Segment:
    label: int
    name: str


_CHUNK_VOXELS = 4 * 1024 * 1024  # label-map voxels handled at once: their temporaries stay small


def _slow_axis_chunks(array: np.ndarray):
    """The label map in (i, j, k) order, cut along its axis slowest in memory (k for the usual i-fastest map,
    whose every chunk is then one contiguous block)."""
    axis = int(axes_slowest_first(array)[0])
    step = max(1, _CHUNK_VOXELS // max(1, array.size // max(array.shape[axis], 1)))
    for start in range(0, array.shape[axis], step):
        index = [slice(None)] * 3
        index[axis] = slice(start, start + step)
        yield axis, start, array[tuple(index)]


def _present_labels(array: np.ndarray) -> np.ndarray:
    """The values in a non-negative integer label map, counted chunk by chunk (np.unique sorts 78 M voxels; one
    np.bincount over them all allocates 8 bytes a voxel)."""
    counts = np.zeros(1, dtype=np.int64)
    for _, _, chunk in _slow_axis_chunks(array):
        found = np.bincount(chunk.ravel(order="K"))
        if len(found) > len(counts):
            counts = np.pad(counts, (0, len(found) - len(counts)))
        counts[: len(found)] += found
    return np.flatnonzero(counts)


def _segment_frames(array: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """[i, j, k] labels → (k, rows=j, columns=i) segment numbers, C-contiguous (highdicom compares each plane with
    each segment number: 10 times slower on a strided view). For the usual i-fastest label map the frames are its
    own memory order, looked up chunk by chunk; any other order is transposed a chunk at a time."""
    values = np.arange(len(lookup))
    used = values[lookup != 0]
    if array.T.flags.c_contiguous and array.dtype == lookup.dtype and np.array_equal(lookup[used], used):
        return array.T  # every label is its own segment number, and the map is i-fastest: the frames as they lie
    frames = np.empty(array.shape[::-1], dtype=lookup.dtype)
    frames_ijk = frames.T  # the same memory, indexed [i, j, k]
    for axis, start, chunk in _slow_axis_chunks(array):
        index = [slice(None)] * 3
        index[axis] = slice(start, start + chunk.shape[axis])
        frames_ijk[tuple(index)] = lookup[chunk]
    return frames


def _segment_description(
    number: int, spec: StructureSpec, card: ModelCard, algorithm: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=spec.name,
        segmented_property_category=_coded(spec.category),
        segmented_property_type=_coded(spec.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*spec.color_rgb),
    )
    if spec.type_modifier is not None:  # e.g. Left / Right: a modifier of the property type, as in PS3.3 C.8.20.2
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _coded(spec.type_modifier)
        ]
    description.SegmentDescription = _LABEL_DESCRIPTION.format(
        label=spec.label, model_id=card.model_id, version=card.version
    )[:1024]
    return description


def _coded(concept: CodedConcept) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=concept.value, scheme_designator=concept.scheme, meaning=concept.meaning)


def _read_segments(segmentation: hd.seg.Segmentation) -> dict[int, _Segment]:
    """Segment number → (label value, name): the recorded card label, else the segment number itself."""
    segments = {}
    for item in segmentation.SegmentSequence:
        number = int(item.SegmentNumber)
        match = _LABEL_PATTERN.match(str(item.get("SegmentDescription", "") or ""))
        label = int(match.group(1)) if match else number
        segments[number] = _Segment(label=label, name=str(item.get("SegmentLabel", "") or f"segment_{number}"))
    if not segments:
        raise ValueError("the SEG describes no segments")
    labels = [s.label for s in segments.values()]
    if len(set(labels)) != len(labels):
        raise ValueError(f"the SEG's segments record duplicate label values {sorted(labels)}")
    return segments


def _same_pixel_layout(segmentation: hd.seg.Segmentation, reference: Volume) -> bool:
    """Whether the reference's i and j run along the SEG frames' rows and columns (not e.g. a flipped copy)."""
    try:
        orientation = segmentation.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
        cosines = np.array([float(v) for v in orientation.ImageOrientationPatient]).reshape(2, 3)
    except (AttributeError, IndexError, ValueError):
        return False
    axes = reference.affine_lps[:3, :2] / np.linalg.norm(reference.affine_lps[:3, :2], axis=0)
    return bool(np.allclose(axes.T, cosines, atol=1e-3))


def _segment_numbers_on_grid(segmentation: hd.seg.Segmentation, reference: Volume) -> np.ndarray:
    """The SEG's combined segment numbers placed on ``reference``'s [i, j, k] grid by geometry (no resampling)."""
    volume = segmentation.get_volume(combine_segments=True, dtype=np.uint16)
    # highdicom's affine maps its array index to LPS; ours maps [i, j, k] to RAS.
    to_reference = np.linalg.inv(reference.affine_lps) @ volume.affine
    rotation, offset = to_reference[:3, :3], to_reference[:3, 3]
    rounded = np.rint(rotation)
    if (
        not np.allclose(rotation, rounded, atol=1e-3)
        or not np.array_equal(np.abs(rounded).sum(axis=0), [1, 1, 1])
        or not np.array_equal(np.abs(rounded).sum(axis=1), [1, 1, 1])
        or not np.allclose(offset, np.rint(offset), atol=_POSITION_TOLERANCE)
    ):
        raise ValueError("the SEG's frames do not lie on the reference volume's grid (and name none of its images)")
    array = volume.array
    axes = [int(np.flatnonzero(rounded[:, a])[0]) for a in range(3)]  # reference axis of each SEG axis
    start = np.rint(offset).astype(int)
    for a in range(3):
        if rounded[axes[a], a] < 0:
            array = np.flip(array, axis=a)
            start[axes[a]] -= array.shape[a] - 1
    array = np.transpose(array, np.argsort(axes))  # now indexed along the reference's i, j, k
    out = np.zeros(reference.shape, dtype=np.uint16)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + np.array(array.shape), reference.shape)
    kept = array[tuple(slice(a, b) for a, b in zip(lo - start, np.maximum(hi, lo) - start, strict=True))]
    if np.count_nonzero(kept) != np.count_nonzero(array):
        raise ValueError("the SEG holds segmented voxels outside the reference volume")
    if kept.size:
        out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = kept
    return out


def _multiframe_source(source_headers: Sequence[Dataset]) -> Dataset | None:
    """The one multi-frame instance (e.g. Enhanced CT) whose frames are the slices, or None for single frames."""
    if not source_headers:
        return None
    first = source_headers[0]
    if int(first.get("NumberOfFrames", 1) or 1) <= 1:
        return None
    uid = str(first.get("SOPInstanceUID", "") or "")
    if not uid or any(str(h.get("SOPInstanceUID", "") or "") != uid for h in source_headers):
        raise ValueError("the slices come from several multi-frame instances: one SEG cannot reference them all")
    return first


def _check_frame_correspondence(labels: Volume, headers: Sequence[Dataset]) -> list[int]:
    """Each slice k's frame number in the one multi-frame source (``headers``: that instance once per slice),
    checked as ``_check_correspondence`` checks single frames: count, frame references, size and position."""
    source = headers[0]
    n_slices = labels.shape[2]
    uid = str(source.SOPInstanceUID)
    if len(headers) != n_slices:
        raise ValueError(f"the label map has {n_slices} slices but {len(headers)} source headers were given")
    if len(labels.sources) != n_slices or any(
        s.sop_instance_uid != uid or s.frame_number is None for s in labels.sources
    ):
        raise ValueError("the label map's slices do not name their frames of the multi-frame source image")
    frame_numbers = [int(s.frame_number) for s in labels.sources]
    n_frames = int(source.NumberOfFrames)
    if len(set(frame_numbers)) != n_slices or not all(1 <= f <= n_frames for f in frame_numbers):
        raise ValueError(f"the label map's frame numbers are not distinct frames of the source's {n_frames}")
    columns, rows = labels.shape[0], labels.shape[1]
    if (int(source.Rows), int(source.Columns)) != (rows, columns):
        raise ValueError(
            f"the source frames have {source.Rows} x {source.Columns} pixels; the label map's slices "
            f"are {rows} x {columns}"
        )
    affine_lps = labels.affine_lps
    spacing = np.array(labels.spacing_mm)
    for k, frame in enumerate(frame_numbers):
        position = np.array(
            [float(v) for v in _frame_attribute(source, frame, "PlanePositionSequence", "ImagePositionPatient")]
        )
        expected = affine_lps[:3, :3] @ np.array([0.0, 0.0, k]) + affine_lps[:3, 3]
        if np.linalg.norm(position - expected) > _POSITION_TOLERANCE * spacing.min():
            raise ValueError(
                f"source frame {frame} lies at {position.round(3).tolist()} mm (LPS), not at the label map's slice "
                f"{k} ({expected.round(3).tolist()} mm)"
            )
    return frame_numbers


def _frame_attribute(source: Dataset, frame: int, sequence: str, keyword: str):
    """An attribute of one frame of a multi-frame image: its per-frame functional group, else the shared one."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame - 1), ("SharedFunctionalGroupsSequence", 0)):
        items = source.get(groups)
        if items and len(items) > index and sequence in items[index]:
            return items[index][sequence][0][keyword]
    raise ValueError(f"frame {frame} of the source image has no {keyword}")


def _check_correspondence(labels: Volume, source_headers: Sequence[Dataset]) -> None:
    """Refuse a label map that is not slice for slice on the source images (count, UIDs, size, position)."""
    n_slices = labels.shape[2]
    if len(source_headers) != n_slices:
        raise ValueError(f"the label map has {n_slices} slices but {len(source_headers)} source headers were given")
    header_uids = [str(h.get("SOPInstanceUID", "") or "") for h in source_headers]
    if labels.sources:
        source_uids = [s.sop_instance_uid for s in labels.sources]
        mismatched = [k for k, (a, b) in enumerate(zip(source_uids, header_uids, strict=True)) if a != b]
        if mismatched:
            k = mismatched[0]
            raise ValueError(
                f"the label map's source images do not match the headers in order: {len(mismatched)} slices differ, "
                f"first slice {k} ({source_uids[k]} vs {header_uids[k]})"
            )
    if len(set(header_uids)) != len(header_uids) or not all(header_uids):
        raise ValueError("the source headers need distinct, non-empty SOP Instance UIDs")
    columns, rows = labels.shape[0], labels.shape[1]
    affine_lps = labels.affine_lps
    spacing = np.array(labels.spacing_mm)
    in_plane = affine_lps[:3, :2] / spacing[:2]
    for k, header in enumerate(source_headers):
        if (int(header.Rows), int(header.Columns)) != (rows, columns):
            raise ValueError(
                f"source image {k} has {header.Rows} x {header.Columns} pixels; the label map's slices are "
                f"{rows} x {columns}"
            )
        cosines = np.array([float(v) for v in header.ImageOrientationPatient]).reshape(2, 3)
        if not np.allclose(in_plane.T, cosines, atol=1e-3):
            raise ValueError(
                f"source image {k}'s rows and columns run along {cosines.round(4).tolist()} (LPS), the label map's "
                f"i and j along {in_plane.T.round(4).tolist()}: reorient the labels back to the source's grid"
            )
        expected = affine_lps[:3, :3] @ np.array([0.0, 0.0, k]) + affine_lps[:3, 3]
        position = np.array([float(v) for v in header.ImagePositionPatient])
        if np.linalg.norm(position - expected) > _POSITION_TOLERANCE * spacing.min():
            raise ValueError(
                f"source image {k} lies at {position.round(3).tolist()} mm (LPS), not at the label map's slice {k} "
                f"({expected.round(3).tolist()} mm)"
            )
