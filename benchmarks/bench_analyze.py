"""How long the whole analysis takes on the CPU, stage by stage: a 512 x 512 x N phantom CT study (uncompressed DICOM),
through read, preprocess, sliding-window ONNX, post-processing, measurements and writing every output.

    .venv/bin/python benchmarks/bench_analyze.py [--slices 300] [--repeats 3] [--threads 2] \
        [--model abdomen_ct_fast --model abdomen_ct_accurate]

Prints one table: a row per stage, a column per model (default: the shipped default model), median seconds over the
repeats, with each model loaded once (as a service would), and the process's peak resident memory after each model.
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from twin_imaging.inference.segment import Segmenter
from twin_imaging.models import default_segmentation_package, load_model_package
from twin_imaging.pipeline import analyze_study
from twin_imaging.settings import get_settings
from twin_imaging.testing import PhantomGeometry, SeriesSpec, write_phantom_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--model", action="append", help="model id or package folder (repeat to compare)")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the PyTorch + MONAI route (needs the [train] extra)"
    )
    parser.add_argument(
        "--providers",
        default=None,
        help="ONNX Runtime providers, e.g. CUDAExecutionProvider or TensorrtExecutionProvider,CUDAExecutionProvider "
        "(default: settings, auto)",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_analyze_"))
    geometry = PhantomGeometry(shape=(512, 512, args.slices), spacing_mm=(0.8, 0.8, 1.0))
    write_phantom_study(workdir / "study", series=(SeriesSpec(geometry=geometry),))
    columns: dict[str, dict[str, float]] = {}
    for model in args.model or [None]:
        package = default_segmentation_package() if model is None else load_model_package(_package_path(model))
        start = time.perf_counter()
        segmenter = Segmenter(package, intra_op_threads=args.threads, providers=args.providers)
        load_seconds = time.perf_counter() - start
        runs: list[dict[str, float]] = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            result = analyze_study(workdir / "study", workdir / f"out{repeat}", segmenter=segmenter)
            timings = dict(result.document.timings_s)
            timings["total"] = time.perf_counter() - start
            runs.append(timings)
        column = {stage: statistics.median(run[stage] for run in runs) for stage in runs[0]}
        column["model load"] = load_seconds
        if not args.no_baseline:
            _baseline(column, workdir / "study", package, args.threads, args.repeats)
        column["peak RSS so far (GB)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        providers = "+".join(p.replace("ExecutionProvider", "") for p in segmenter.session.get_providers())
        columns[f"{package.card.model_id} {package.card.version} ({providers})"] = column
        del segmenter

    print(
        f"\nanalysis of a 512 x 512 x {args.slices} CT (0.8 x 0.8 x 1 mm, uncompressed DICOM); {os.cpu_count()} CPU "
        f"cores, {args.threads} ONNX threads; median of {args.repeats} (seconds)"
    )
    names = list(columns)
    print("| stage | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    stages = list(dict.fromkeys(stage for column in columns.values() for stage in column))
    for stage in stages:
        print(f"| {stage} | " + " | ".join(_cell(columns[n].get(stage)) for n in names) + " |")
    shutil.rmtree(workdir, ignore_errors=True)


def _baseline(column, study, package, threads: int, repeats: int) -> None:
    """The same weights through PyTorch + MONAI (``monai_baseline``), from the same decoded volume; the ratio of its
    DICOM-to-labels time to ours."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from monai_baseline import monai_route, torch_network

    from twin_imaging.pipeline import read_study

    network = torch_network(package)
    volume = read_study(study).volume
    steps = [monai_route(volume, package, network, threads=threads)[1] for _ in range(repeats)]
    for step in steps[0]:
        column[f"MONAI route: {step}"] = statistics.median(s[step] for s in steps)
    monai_total = statistics.median(sum(s.values()) for s in steps) + column["read"]
    ours = column["read"] + column["segment"]
    column["MONAI route: DICOM to labels"] = monai_total
    column["ours: DICOM to labels"] = ours
    column["MONAI route / ours (DICOM to labels)"] = monai_total / ours


def _package_path(model: str) -> Path:
    path = Path(model)
    return path if path.exists() else get_settings().models_dir / model


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
