"""Server memory while a large STOW-RS body streams in, against a real `bentoml serve`.

    .venv/bin/python benchmarks/bench_stow_memory.py [--megabytes 100 1000]

For each size: writes that many MB of 512 x 512 CT instances (copies of one phantom slice with their own UIDs and
positions) to a temporary folder, pushes them in one multipart/related request streamed from disk, and prints the
rise of the server's resident memory (server and workers, sampled every 20 ms) over its level before the request.
The server's quiet time is an hour, so no analysis runs meanwhile. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import generate_uid

from serving.launch import start_server
from twin_imaging.testing import PhantomGeometry, SeriesSpec, write_phantom_study
from twin_imaging.testing.stow import stow_body, stow_content_type


def write_instances(folder: Path, megabytes: float) -> list[Path]:
    seed = write_phantom_study(folder / "seed", (SeriesSpec(geometry=PhantomGeometry(shape=(512, 512, 1))),))
    template = pydicom.dcmread(seed.paths[0])
    count = max(1, int(megabytes * 1e6 // seed.paths[0].stat().st_size))
    series = generate_uid()
    paths = []
    for index in range(count):
        template.SeriesInstanceUID = series
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.InstanceNumber = index + 1
        template.ImagePositionPatient = [0.0, 0.0, float(index)]
        paths.append(folder / f"{index:05d}.dcm")
        template.save_as(paths[-1], enforce_file_format=True)
    shutil.rmtree(folder / "seed")
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, nargs="+", default=[100.0, 1000.0])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_stow_"))
    server = start_server(root / "server", env={"TWIN_IMAGING_SERVE_STUDY_QUIET_SECONDS": "3600"})
    print("| body (MB) | instances | seconds | server resident before (MB) | peak rise (MB) |")
    print("|---|---|---|---|---|")
    try:
        for megabytes in args.megabytes:
            folder = root / f"body_{megabytes:g}"
            paths = write_instances(folder, megabytes)
            body_mb = sum(p.stat().st_size for p in paths) / 1e6
            baseline, peak, stop = server.resident_bytes(), [0], threading.Event()

            def sample(peak=peak, stop=stop) -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], server.resident_bytes())
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.perf_counter()
            response = httpx.post(
                f"{server.url}/dicomweb/studies",
                content=stow_body(paths),
                headers={**server.headers("integration"), "content-type": stow_content_type()},
                timeout=3600,
            )
            seconds = time.perf_counter() - started
            stop.set()
            sampler.join()
            if response.status_code != 200:
                print(f"STOW-RS answered {response.status_code}: {response.text[:300]}", file=sys.stderr)
                return 1
            rise = (peak[0] - baseline) / 1e6
            print(f"| {body_mb:.0f} | {len(paths)} | {seconds:.1f} | {baseline / 1e6:.0f} | {rise:.0f} |")
            shutil.rmtree(folder)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
