"""How long reading a DICOM series takes: a 512 x 512 x 300 phantom CT, uncompressed and JPEG 2000 lossless.

    .venv/bin/python benchmarks/bench_dicom_read.py [--slices 300] [--repeats 3] [--workdir DIR]

Prints one table row per (transfer syntax, decode threads): median seconds of ``read_dicom_series`` over the
repeats (headers, selection, decoding, HU), with the file-system cache warm, and, for reference, dcm2niix's time to
convert the same folder where dcm2niix is installed. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from twin_imaging.io import read_dicom_series
from twin_imaging.settings import get_settings
from twin_imaging.testing import PhantomGeometry, SeriesSpec, write_phantom_study


def timed(function, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the written series here")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_dicom_"))
    geometry = PhantomGeometry(shape=(512, 512, args.slices), spacing_mm=(0.8, 0.8, 1.0))
    rows = []
    for compression in (None, "jpeg2000"):
        name = compression or "uncompressed"
        folder = workdir / name
        if folder.exists():
            shutil.rmtree(folder)
        start = time.perf_counter()
        write_phantom_study(folder, series=(SeriesSpec(geometry=geometry, compression=compression),))
        write_seconds = time.perf_counter() - start
        size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
        read_dicom_series(folder)  # warm the file-system cache
        for threads in sorted({1, os.cpu_count() or 1}):
            os.environ["TWIN_IMAGING_DICOM_DECODE_THREADS"] = str(threads)
            get_settings.cache_clear()
            seconds = timed(lambda folder=folder: read_dicom_series(folder), args.repeats)
            rows.append((name, size_mb, write_seconds, threads, seconds, _dcm2niix_seconds(folder, args.repeats)))

    print(f"\nreading a 512 x 512 x {args.slices} CT series ({os.cpu_count()} CPU cores), median of {args.repeats}")
    header = ("transfer syntax", "size MB", "write s", "threads", "read s", "slices/s", "dcm2niix s")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for name, size_mb, write_seconds, threads, seconds, reference in rows:
        reference_text = f"{reference:.2f}" if reference is not None else "n/a"
        print(
            f"| {name} | {size_mb:.0f} | {write_seconds:.1f} | {threads} | {seconds:.2f} | "
            f"{args.slices / seconds:.0f} | {reference_text} |"
        )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


def _dcm2niix_seconds(folder: Path, repeats: int) -> float | None:
    dcm2niix = shutil.which("dcm2niix")
    if not dcm2niix:
        return None
    with tempfile.TemporaryDirectory() as out:
        command = [dcm2niix, "-z", "n", "-b", "n", "-f", "bench", "-o", out, str(folder)]
        return timed(lambda: subprocess.run(command, check=True, capture_output=True), repeats)


if __name__ == "__main__":
    main()
