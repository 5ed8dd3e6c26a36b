import numpy as np
import pytest
from PIL import Image

from twin_imaging.measure import measure_structures
from twin_imaging.overlays import NO_STRUCTURES_NOTE, PLANES, OverlayStructure, plan_views, render_overlays
from twin_imaging.testing import PHANTOM_LABELS, PhantomGeometry, make_phantom

COLOURS = {
    "liver": (255, 0, 0),
    "spleen": (0, 0, 255),
    "kidney_right": (0, 255, 0),
    "kidney_left": (255, 0, 255),
    "aorta": (255, 128, 0),
    "vertebrae": (0, 255, 255),
    "skeletal_muscle": (128, 0, 255),
    "subcutaneous_fat": (255, 255, 0),
}
STRUCTURES = [OverlayStructure(label, name, COLOURS[name]) for label, name in PHANTOM_LABELS.items()]
FOOTER = "Research use only — not for diagnosis"
# anisotropic voxels, so that a wrong aspect ratio shows
GEOMETRY = PhantomGeometry(shape=(128, 96, 48), spacing_mm=(2.6, 2.6, 5.0))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(GEOMETRY, noise_hu_sd=5.0)


@pytest.fixture(scope="module")
def rendered(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("overlays")
    measurements = measure_structures(phantom.labels, phantom.image)
    paths = render_overlays(
        phantom.image, phantom.labels, STRUCTURES, out, measurements=measurements, title="Phantom", footer=FOOTER
    )
    return paths, plan_views(phantom.labels, STRUCTURES), {m.name: m for m in measurements}


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def colour_mask(rgb: np.ndarray, colour) -> np.ndarray:
    return np.all(rgb == np.asarray(colour, np.uint8), axis=2)


def picture_of(rgb: np.ndarray, view) -> np.ndarray:
    (x0, y0), (width, height) = view.origin_px, view.size_px
    return rgb[y0 : y0 + height, x0 : x0 + width]


def panel_of(rgb: np.ndarray, view) -> np.ndarray:
    return rgb[:, view.origin_px[0] + view.size_px[0] + 1 :]


def names_in_slice(phantom, view) -> set[str]:
    labels = view.slice_of(phantom.labels.reoriented("RAS").array)
    return {PHANTOM_LABELS[int(v)] for v in np.unique(labels) if v}


def test_writes_three_pngs_atomically(rendered):
    paths, views, _ = rendered
    assert list(paths) == list(PLANES)
    folder = paths["axial"].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"overlay_{plane}.png" for plane in PLANES)
    for plane, path in paths.items():
        rgb = pixels(path)
        view = views[plane]
        assert (
            rgb.shape[1] >= view.origin_px[0] + view.size_px[0] and rgb.shape[0] >= view.origin_px[1] + view.size_px[1]
        )
        with Image.open(path) as image:
            assert image.text["Disclaimer"] == FOOTER and image.text["Title"] == "Phantom"


def test_pictures_have_square_pixels_and_a_readable_size(rendered, phantom):
    paths, views, _ = rendered
    ni, nj, nk = (n * s for n, s in zip(GEOMETRY.shape, GEOMETRY.spacing_mm, strict=True))
    expected_mm = {"axial": (ni, nj), "coronal": (ni, nk), "sagittal": (nj, nk)}
    for plane, view in views.items():
        width_mm, height_mm = expected_mm[plane]
        assert max(view.size_px) >= 512
        assert view.size_px[0] / view.size_px[1] == pytest.approx(width_mm / height_mm, rel=0.01)
    # decoded pixels: the body outline (subcutaneous fat, 320 x 230 mm) and a kidney's coronal section (semi-axes
    # 25 mm across, 50 mm along z, whatever the cut) keep their proportions
    body = np.argwhere(colour_mask(picture_of(pixels(paths["axial"]), views["axial"]), COLOURS["subcutaneous_fat"]))
    height, width = body.max(axis=0) - body.min(axis=0) + 1
    assert width / height == pytest.approx(320 / 230, rel=0.03)
    kidney_names = names_in_slice(phantom, views["coronal"]) & {"kidney_left", "kidney_right"}
    assert kidney_names
    coronal = picture_of(pixels(paths["coronal"]), views["coronal"])
    for name in kidney_names:
        kidney = np.argwhere(colour_mask(coronal, COLOURS[name]))
        height, width = kidney.max(axis=0) - kidney.min(axis=0) + 1
        assert width / height == pytest.approx(0.5, rel=0.12)


def test_contours_surround_the_structures_in_the_slice_and_only_those(rendered, phantom):
    paths, views, measured = rendered
    absent_somewhere = 0
    for plane, view in views.items():
        rgb = pixels(paths[plane])
        picture = picture_of(rgb, view)
        inside = names_in_slice(phantom, view)
        for name, colour in COLOURS.items():
            found = np.argwhere(colour_mask(picture, colour))
            if name not in inside:
                absent_somewhere += 1
                assert len(found) == 0, f"{name} is not in the {plane} slice but its colour is drawn"
                continue
            assert len(found) >= 20, f"{name} is in the {plane} slice but barely drawn"
            if name in ("skeletal_muscle", "subcutaneous_fat"):
                continue
            # an axis-aligned ellipsoid (or cylinder) cut by the plane is centred on the projection of its centre
            x, y = view.ras_to_px(measured[name].centroid_ras_mm)
            centre_px = np.array([y - view.origin_px[1], x - view.origin_px[0]])
            scale = max(view.size_px) / max(np.asarray(GEOMETRY.shape) * GEOMETRY.spacing_mm)
            assert np.linalg.norm(found.mean(axis=0) - centre_px) < 2.0 + 5.0 * scale, (plane, name)
            assert np.min(np.linalg.norm(found - centre_px, axis=1)) < 70 * scale
    assert absent_somewhere >= 3


def test_radiological_left_right_and_anterior_up(phantom, tmp_path):
    liver_and_spleen = [s for s in STRUCTURES if s.name in ("liver", "spleen")]
    paths = render_overlays(phantom.image, phantom.labels, liver_and_spleen, tmp_path)
    views = plan_views(phantom.labels, liver_and_spleen)
    for plane in ("axial", "coronal"):
        picture = picture_of(pixels(paths[plane]), views[plane])
        # the phantom's liver is on the patient's right: the image's left; the spleen the other way
        assert np.argwhere(colour_mask(picture, COLOURS["liver"]))[:, 1].mean() < picture.shape[1] / 2
        assert np.argwhere(colour_mask(picture, COLOURS["spleen"]))[:, 1].mean() > picture.shape[1] / 2


# (RAS axis, sign) that the picture's x and y grow along: radiological axial and coronal, sagittal anterior left
SCREEN_AXES = {"axial": ((0, -1), (1, -1)), "coronal": ((0, -1), (2, -1)), "sagittal": ((1, -1), (2, -1))}


def test_every_structure_sits_on_the_side_of_the_picture_its_position_says(rendered, phantom):
    paths, views, measured = rendered
    checked = set()
    for plane, view in views.items():
        picture = picture_of(pixels(paths[plane]), view)
        for name in names_in_slice(phantom, view):
            found = np.argwhere(colour_mask(picture, COLOURS[name]))
            centre_px = (found[:, 1].mean() - picture.shape[1] / 2, found[:, 0].mean() - picture.shape[0] / 2)
            for offset_px, (axis, sign) in zip(centre_px, SCREEN_AXES[plane], strict=True):
                position_mm = measured[name].centroid_ras_mm[axis]  # the grid is centred on RAS (0, 0, 0)
                if abs(position_mm) > 10:
                    assert np.sign(offset_px) == sign * np.sign(position_mm), (plane, name, axis)
                    checked.add((plane, axis))
    assert len(checked) == 6  # both directions of every plane were tested


def test_legend_shows_the_colours_of_the_structures_in_view(rendered, phantom):
    paths, views, _ = rendered
    for plane, view in views.items():
        rgb = pixels(paths[plane])
        panel = panel_of(rgb, view)
        inside = names_in_slice(phantom, view)
        for name, colour in COLOURS.items():
            swatch = colour_mask(panel, colour)
            assert swatch.any() == (name in inside), (plane, name)
            if name in inside:
                assert swatch.sum() >= 15 * 15
        with Image.open(paths[plane]) as image:
            description = image.text["Description"]
        assert f"liver: {phantom_volume(phantom, 'liver'):.1f} mL" in description


def phantom_volume(phantom, name: str) -> float:
    label = {v: k for k, v in PHANTOM_LABELS.items()}[name]
    return np.count_nonzero(phantom.labels.array == label) * np.prod(GEOMETRY.spacing_mm) / 1000


def test_the_same_pictures_from_any_voxel_order(phantom, rendered, tmp_path):
    paths, _, _ = rendered
    again = render_overlays(phantom.image.reoriented("RAS"), phantom.labels.reoriented("RAS"), STRUCTURES, tmp_path)
    for plane in PLANES:
        view = plan_views(phantom.labels, STRUCTURES)[plane]
        assert np.array_equal(picture_of(pixels(again[plane]), view), picture_of(pixels(paths[plane]), view))


def test_an_empty_label_map_renders_with_a_note(phantom, tmp_path):
    empty = phantom.labels.with_array(np.zeros(phantom.labels.shape, np.uint8), label_names=PHANTOM_LABELS)
    paths = render_overlays(phantom.image, empty, STRUCTURES, tmp_path)
    views = plan_views(empty, STRUCTURES)
    for plane, path in paths.items():
        rgb = pixels(path)
        with Image.open(path) as image:
            assert NO_STRUCTURES_NOTE in image.text["Description"]
        panel = panel_of(rgb, views[plane])
        assert np.any(panel.min(axis=2) > 120)  # text is drawn
        assert not any(colour_mask(rgb, colour).any() for colour in COLOURS.values())
        assert views[plane].slice_index == views[plane].shape_ras[views[plane].axes[0]] // 2


def test_bad_input_is_refused(phantom, tmp_path):
    shifted = phantom.labels.affine_ras.copy()
    shifted[2, 3] += 1.0
    other_grid = phantom.labels.with_array(phantom.labels.array)
    other_grid = type(other_grid)(other_grid.array, shifted, label_names=PHANTOM_LABELS)
    with pytest.raises(ValueError, match="different grids"):
        render_overlays(phantom.image, other_grid, STRUCTURES, tmp_path)
    with pytest.raises(ValueError, match="whole numbers"):
        render_overlays(phantom.image, phantom.labels.with_array(phantom.labels.array * 0.5), STRUCTURES, tmp_path)
    with pytest.raises(ValueError, match="window_hu"):
        render_overlays(phantom.image, phantom.labels, STRUCTURES, tmp_path, window_hu=(100, -100))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_previous_files(phantom, tmp_path, monkeypatch):
    paths = render_overlays(phantom.image, phantom.labels, STRUCTURES[:1], tmp_path)
    before = {p: p.read_bytes() for p in paths.values()}

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        render_overlays(phantom.image, phantom.labels, STRUCTURES, tmp_path, title="second")
    assert sorted(tmp_path.iterdir()) == sorted(before)
    assert all(p.read_bytes() == data for p, data in before.items())
