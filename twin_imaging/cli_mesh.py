"""`twin-imaging mesh`: surface meshes of an analysis (from the twin) or of a label map, for viewing or printing."""

from __future__ import annotations

import re
from pathlib import Path

import click

_ANALYSIS_ID = re.compile(r"^[0-9a-f]{32}$")


@click.command()
@click.argument("source")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file: .stl or .obj (3D printing, planning software) or .glb (viewers).",
)
@click.option("--structure", "structures", multiple=True, help="Only this structure (repeatable; default: all).")
@click.option("--model", help="For a label map: the model whose structures its values are (default model).")
@click.option("--db", help="Twin database URL (default: settings), for an analysis id.")
def mesh(source: str, out_path: Path, structures: tuple[str, ...], model: str | None, db: str | None) -> None:
    """Surface meshes of SOURCE in patient coordinates (RAS, mm): an analysis id from the twin, or a label map NIfTI
    (values named by --model's card). Marching cubes, smoothed; the mesh volume is printed beside the mask's."""
    from twin_imaging.errors import InputError
    from twin_imaging.io.nifti import read_nifti
    from twin_imaging.meshes import structure_meshes, write_meshes
    from twin_imaging.models import default_segmentation_package
    from twin_imaging.models.package import load_model_package
    from twin_imaging.settings import get_settings

    if out_path.suffix.lower() not in (".stl", ".obj", ".glb"):
        raise click.BadParameter("the output must end in .stl, .obj or .glb", param_hint="--out")
    if _ANALYSIS_ID.match(source) and not Path(source).exists():
        from twin_imaging.cli_twin import actor, open_store

        with open_store(db) as store:
            analysis = store.analysis(source, actor=actor())
            _, stored = store.artifact_file(source, "labels_nifti", actor=actor())
            labels = read_nifti(stored)
        package = load_model_package(get_settings().models_dir / analysis.model_id, verify=False)
    else:
        path = Path(source)
        if not path.is_file():
            raise click.BadParameter(f"{source} is neither an analysis id nor a label map file", param_hint="SOURCE")
        labels = read_nifti(path)
        package = load_model_package(get_settings().models_dir / model) if model else default_segmentation_package()
    card = package.card
    unknown = set(structures) - {s.name for s in card.structures}
    if unknown:
        raise click.BadParameter(f"{sorted(unknown)} not among {card.model_id}'s structures", param_hint="--structure")
    labels = labels.with_array(labels.array, label_names=card.label_names())
    colors = {s.name: tuple(s.color_rgb) for s in card.structures}
    meshes = structure_meshes(labels, colors, names=structures or None)
    if not meshes:
        raise InputError("none of the structures asked for is in the label map")
    write_meshes(meshes, out_path)
    click.echo("| structure | faces | mesh volume (mL) | mask volume (mL) |")
    click.echo("|---|---|---|---|")
    for m in meshes:
        click.echo(f"| {m.name} | {len(m.faces)} | {m.volume_ml:.1f} | {m.mask_volume_ml:.1f} |")
    click.echo(f"wrote {out_path} (patient RAS, millimetres)")
