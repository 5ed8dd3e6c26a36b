"""Cohort throughput of `twin-imaging batch` on this machine: studies per minute with 1 and 2 Ray workers, and the
memory of each worker (its peak resident set), on a cohort of phantom CT studies (uncompressed DICOM), a fresh
SQLite twin per run. The time counts the whole command: Ray's start, the model loaded per worker, every study read,
analysed, written and attached.

    .venv/bin/python benchmarks/bench_batch.py [--studies 8] [--shape 256 256 120]

A table, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twin_imaging.testing import PhantomGeometry, write_phantom_cohort  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 120))
    parser.add_argument("--workers", type=int, nargs="+", default=(1, 2))
    args = parser.parse_args()
    cli = str(Path(sys.executable).parent / "twin-imaging")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        root = Path(folder)
        geometry = PhantomGeometry(shape=tuple(args.shape), spacing_mm=(1.5, 1.5, 2.5))
        write_phantom_cohort(root, args.studies, geometry, prefix="BENCH")
        manifest = root / "cohort.csv"
        manifest.write_text("source\n" + "".join(f"study{n}\n" for n in range(args.studies)), encoding="utf-8")
        for workers in args.workers:
            data = root / f"twin-{workers}"
            report = root / f"report-{workers}.json"
            env = {**os.environ, "TWIN_IMAGING_DATA_DIR": str(data), "TWIN_IMAGING_BATCH_WORKERS": str(workers)}
            started = time.perf_counter()
            subprocess.run(
                [cli, "batch", str(manifest), "--data-dir", str(data), "--report", str(report)],
                env=env, check=True, capture_output=True, text=True,
            )  # fmt: skip
            wall = time.perf_counter() - started
            studies = json.loads(report.read_text())["studies"]
            analysed = sum(s["status"] == "analysed" for s in studies)
            peak = {}
            for s in studies:
                peak[s["worker"]] = max(peak.get(s["worker"], 0.0), s["worker_peak_rss_mb"])
            per_study = sorted(s["seconds"] for s in studies)[len(studies) // 2]
            rows.append((workers, analysed, wall, 60 * analysed / wall, per_study, max(peak.values())))
    shape = " x ".join(map(str, args.shape))
    print(f"\ncohort of {args.studies} phantom CT studies ({shape}), {os.cpu_count()} CPU cores, local Ray")
    print("| workers | analysed | wall s | studies/min | median s per study | peak memory per worker (MB) |")
    print("|---|---|---|---|---|---|")
    for workers, analysed, wall, rate, per_study, peak in rows:
        print(f"| {workers} | {analysed} | {wall:.1f} | {rate:.1f} | {per_study:.1f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
