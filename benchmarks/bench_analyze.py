"""How long the whole analysis takes on the CPU, stage by stage: a 512 x 512 x N phantom CT study (uncompressed DICOM),
through read, preprocess, sliding-window ONNX, post-processing, measurements and writing every output.

    .venv/bin/python benchmarks/bench_analyze.py [--slices 300] [--repeats 3] [--threads 2]

Prints one table row per stage: median seconds over the repeats, with the model loaded once (as a service would).
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from twin_imaging.inference.segment import Segmenter
from twin_imaging.models import default_segmentation_package
from twin_imaging.pipeline import analyze_study
from twin_imaging.testing import PhantomGeometry, SeriesSpec, write_phantom_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_analyze_"))
    geometry = PhantomGeometry(shape=(512, 512, args.slices), spacing_mm=(0.8, 0.8, 1.0))
    write_phantom_study(workdir / "study", series=(SeriesSpec(geometry=geometry),))
    start = time.perf_counter()
    segmenter = Segmenter(default_segmentation_package(), intra_op_threads=args.threads)
    load_seconds = time.perf_counter() - start

    runs: list[dict[str, float]] = []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        result = analyze_study(workdir / "study", workdir / f"out{repeat}", segmenter=segmenter)
        timings = dict(result.document.timings_s)
        timings["total"] = time.perf_counter() - start
        runs.append(timings)

    card = segmenter.card
    print(
        f"\nanalysis of a 512 x 512 x {args.slices} CT (0.8 x 0.8 x 1 mm, uncompressed DICOM) with "
        f"{card.model_id} {card.version} ({os.cpu_count()} CPU cores, {args.threads} ONNX threads, "
        f"{', '.join(segmenter.providers)}); median of {args.repeats}; model load {load_seconds:.2f} s"
    )
    print("| stage | seconds |")
    print("|---|---|")
    for stage in runs[0]:
        print(f"| {stage} | {statistics.median(run[stage] for run in runs):.2f} |")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
