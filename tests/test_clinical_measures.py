"""The sizes clinicians read, against shapes whose sizes are known analytically: a tilted cylinder's short axis is its
diameter (not the oblique cut's length), a rotated ellipsoid's principal extents are its axes, two side-by-side
vessels are measured one by one."""

from __future__ import annotations

import numpy as np
import pytest

from twin_imaging.clinical_measures import max_axial_short_axis_mm, principal_extents


def _grid(shape, spacing_mm):
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = -np.asarray(shape) * spacing_mm / 2  # centred on the origin
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3], affine


def _rotation(degrees_about_y: float, degrees_about_z: float = 0.0) -> np.ndarray:
    a, b = np.radians(degrees_about_y), np.radians(degrees_about_z)
    about_y = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    about_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return about_z @ about_y


@pytest.mark.parametrize("tilt_degrees", [0.0, 25.0])
def test_a_tilted_cylinders_short_axis_is_its_diameter_not_its_length(tilt_degrees):
    diameter_mm, length_mm = 25.0, 150.0
    points, affine = _grid((90, 90, 90), (0.7, 0.7, 2.0))
    axis = _rotation(tilt_degrees) @ [0.0, 0.0, 1.0]
    along = points @ axis
    radial = np.linalg.norm(points - along[..., None] * axis, axis=-1)
    mask = (radial <= diameter_mm / 2) & (np.abs(along) <= length_mm / 2)
    short = max_axial_short_axis_mm(mask, affine)
    assert short == pytest.approx(diameter_mm, abs=1.5)  # within two pixels of the true diameter
    extents = principal_extents(mask, affine)
    assert extents.major_axis_mm > 100  # along the vessel
    assert extents.minor_axis_mm == pytest.approx(diameter_mm, abs=2.5)


def test_a_rotated_ellipsoids_principal_extents_are_its_axes():
    semi_axes_mm = np.array([60.0, 35.0, 20.0])
    points, affine = _grid((200, 200, 80), (0.8, 0.8, 2.0))
    local = points @ _rotation(30.0, 40.0)  # coordinates in the ellipsoid's own frame
    mask = ((local / semi_axes_mm) ** 2).sum(axis=-1) <= 1.0
    extents = principal_extents(mask, affine)
    measured = [extents.major_axis_mm, extents.minor_axis_mm, extents.perpendicular_axis_mm]
    assert measured == pytest.approx(list(2 * semi_axes_mm), abs=3.0)


def test_two_vessels_side_by_side_are_measured_one_by_one():
    points, affine = _grid((120, 80, 20), (0.5, 0.5, 3.0))
    left = np.hypot(points[..., 0] + 12, points[..., 1]) <= 5.0  # two 10 mm vessels 24 mm apart
    right = np.hypot(points[..., 0] - 12, points[..., 1]) <= 5.0
    assert max_axial_short_axis_mm(left | right, affine) == pytest.approx(10.0, abs=1.0)


def test_a_line_of_voxels_measures_its_length_and_one_voxel_across():
    mask = np.zeros((5, 5, 20), dtype=bool)
    mask[2, 2, 5:15] = True
    extents = principal_extents(mask, np.diag([0.8, 0.8, 2.0, 1.0]))
    assert extents.major_axis_mm == pytest.approx(20.0)
    for across in (extents.minor_axis_mm, extents.perpendicular_axis_mm):  # any direction across: the axes are
        assert 0.8 <= across <= 0.8 * np.sqrt(2) + 1e-6  # not unique, so one voxel, at most its diagonal


def test_an_empty_mask_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        principal_extents(np.zeros((4, 4, 4), bool), np.eye(4))
    with pytest.raises(ValueError, match="non-empty"):
        max_axial_short_axis_mm(np.zeros((4, 4, 4), bool), np.eye(4))
