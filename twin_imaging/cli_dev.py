"""Developer commands: the synthetic phantom study, and the demo (the main job on the default input)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from twin_imaging.cli import analyze, inspect
from twin_imaging.io import write_nifti
from twin_imaging.testing import PhantomGeometry, SeriesSpec, write_phantom_study
from twin_imaging.volume import Volume


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--shape",
    nargs=3,
    type=click.IntRange(min=1),
    default=(256, 256, 80),
    show_default=True,
    help="Voxels along i (columns), j (rows), k (slices).",
)
@click.option(
    "--spacing",
    nargs=3,
    type=click.FloatRange(min=0, min_open=True),
    default=(1.5, 1.5, 2.5),
    show_default=True,
    help="Voxel size in mm along i, j, k.",
)
@click.option("--orientation", type=click.Choice(["axial", "coronal", "sagittal"]), default="axial", show_default=True)
@click.option(
    "--compression",
    type=click.Choice(["none", "jpeg2000", "jpegls", "rle"]),
    default="none",
    show_default=True,
    help="Lossless transfer syntax of the pixel data.",
)
@click.option("--multiframe", is_flag=True, help="One Enhanced CT instance instead of one file per slice.")
@click.option("--extra-series", is_flag=True, help="Add a localizer and a 5 mm series, as a scanner would.")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed (also fixes the UIDs).")
@click.option(
    "--renal-mass",
    type=click.Choice(["none", "tumor", "cyst", "both"]),
    default="none",
    show_default=True,
    help="Grow a renal tumour (left kidney) and/or cyst (right kidney), with their exact labels.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the exact label volume of the main series as NIfTI.",
)
def phantom(
    out_dir: Path, shape, spacing, orientation, compression, multiframe, extra_series, seed, renal_mass, labels_path
):
    """Write the synthetic abdominal CT phantom as a DICOM study into OUT_DIR."""
    from twin_imaging.testing.phantom import RENAL_CYST, RENAL_TUMOUR, PhantomAnatomy

    anatomy = PhantomAnatomy()
    if renal_mass in ("tumor", "both"):
        anatomy = anatomy.with_structure(RENAL_TUMOUR)
    if renal_mass in ("cyst", "both"):
        anatomy = anatomy.with_structure(RENAL_CYST)
    study = _write_phantom(
        out_dir,
        PhantomGeometry(shape=tuple(shape), spacing_mm=tuple(spacing), orientation=orientation),
        compression=None if compression == "none" else compression,
        multiframe=multiframe,
        extra_series=extra_series,
        seed=seed,
        anatomy=anatomy,
    )
    main_series = study.series_by_number(_MAIN_SERIES_NUMBER)
    click.echo(f"wrote {len(study.paths)} DICOM file(s) of {len(study.series)} series to {out_dir}")
    if labels_path:
        write_nifti(main_series.phantom.labels, labels_path)
        click.echo(f"wrote the exact labels of series {_MAIN_SERIES_NUMBER} to {labels_path}")


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="Where the study and the results go.",
)
@click.pass_context
def demo(ctx: click.Context, out_dir: Path) -> None:
    """The main job on the default input: write the phantom CT study (a localizer, a thick and a thin series), show
    which series is chosen and why, and analyse it with the shipped model into OUT/analysis."""
    study_dir = out_dir / "phantom_study"
    if study_dir.exists():
        shutil.rmtree(study_dir)
    study = _write_phantom(study_dir, PhantomGeometry(), compression=None, multiframe=False, extra_series=True, seed=0)
    click.echo(f"wrote the phantom CT study to {study_dir}\n")
    ctx.invoke(inspect, input_path=study_dir, series_uid=None, as_json=False)
    click.echo("")
    _write_phantom_truth(study.series_by_number(_MAIN_SERIES_NUMBER).phantom.labels, out_dir / "phantom_labels.nii.gz")
    ctx.invoke(
        analyze,
        input_path=study_dir,
        out_dir=out_dir / "analysis",
        model=None,
        series_uid=None,
        progress=True,
        attach=True,
        db=None,
        data_dir=out_dir / "twin",
        patient_id=None,
    )
    click.echo(
        f"the phantom's exact labels in the model's label values, to compare with analysis/labels.nii.gz: "
        f"{out_dir / 'phantom_labels.nii.gz'}"
    )


def _write_phantom_truth(labels: Volume, path: Path) -> None:
    """The phantom's labels in the default model's label table (by structure name), so that a viewer compares
    like with like; phantom structures the model does not label become 0, and are named."""
    from twin_imaging.datalist import label_lookup
    from twin_imaging.models import default_segmentation_package

    card = default_segmentation_package().card
    names = [s.name for s in card.structures]
    lookup = label_lookup(labels.label_names or {}, names)
    write_nifti(labels.with_array(lookup[labels.array], label_names=card.label_names()), path)
    dropped = sorted(set((labels.label_names or {}).values()) - set(names))
    if dropped:
        click.echo(f"phantom structures the model does not label (0 in {path.name}): {', '.join(dropped)}")


_MAIN_SERIES_NUMBER = 2


def _write_phantom(
    out_dir: Path, geometry: PhantomGeometry, *, compression, multiframe, extra_series, seed, anatomy=None
):
    main = SeriesSpec(
        geometry=geometry, series_number=_MAIN_SERIES_NUMBER, compression=compression, multiframe=multiframe
    )
    series = [main]
    if extra_series:
        n_thick = max(3, round(geometry.shape[2] * geometry.spacing_mm[2] / 5.0))
        thick = PhantomGeometry(
            shape=(*geometry.shape[:2], n_thick),
            spacing_mm=(*geometry.spacing_mm[:2], 5.0),
            orientation=geometry.orientation,
        )
        series = [
            SeriesSpec(geometry=geometry, series_number=1, kind="localizer"),
            main,
            SeriesSpec(geometry=thick, series_number=3, compression=compression),
        ]
    return write_phantom_study(out_dir, series=series, seed=seed, anatomy=anatomy)
