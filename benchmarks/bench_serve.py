"""The API under load: 20 analyses of small studies at once against a real `bentoml serve`, none lost, and how long
a clinician's twin read takes meanwhile.

    .venv/bin/python benchmarks/bench_serve.py [--studies 20] [--concurrency 20] [--route sync|job]

Starts the server (its own twin, keys and BentoML home in a temporary folder), writes N phantom studies of
different patients (96 x 96 x 40, about 0.8 MB each), sends them all at once through /v1/analyze (or the job
route), then checks that the twin holds exactly N analyses. While they run, a clinician reads one (already
analysed) patient's twin every 0.25 s. Prints start-up time, throughput, latency percentiles, the read latencies
under load and the memory of the server's processes. The server's queue is sized to take every study at once.
Exits 1 if an analysis is missing. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from serving.launch import start_server
from twin_imaging.testing import PatientSpec, PhantomGeometry, SeriesSpec, write_phantom_study

GEOMETRY = PhantomGeometry(shape=(96, 96, 40), spacing_mm=(4.0, 4.0, 5.0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--route", choices=["sync", "job"], default="sync")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    studies = []
    for index in range(args.studies):
        folder = root / "studies" / f"{index:03d}"
        write_phantom_study(
            folder, (SeriesSpec(geometry=GEOMETRY),), patient=PatientSpec(patient_id=f"LOAD-{index:03d}"), seed=index
        )
        studies.append(folder)
    reader = root / "studies" / "reader"
    write_phantom_study(reader, (SeriesSpec(geometry=GEOMETRY),), patient=PatientSpec(patient_id="READER"), seed=999)
    server = start_server(root / "server", env={"TWIN_IMAGING_SERVE_ANALYSIS_QUEUE_MAX": str(args.studies)})
    try:
        worker_rss_before = _memory(server.process.pid)
        client = httpx.Client(base_url=server.url, timeout=1800, headers=server.headers("integration"))
        clinician = httpx.Client(base_url=server.url, timeout=60, headers=server.headers("clinician"))
        reader_files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(reader.glob("*.dcm"))]
        assert client.post("/v1/analyze", files=reader_files).status_code == 200
        reads: list[float] = []
        loaded = threading.Event()

        def read_while_loaded() -> None:
            while not loaded.is_set():
                started = time.perf_counter()
                assert clinician.post("/v1/twin/get", json={"patient_id": "READER"}).status_code == 200
                reads.append(time.perf_counter() - started)
                time.sleep(0.25)

        def send(folder: Path) -> tuple[float, int]:
            files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(folder.glob("*.dcm"))]
            started = time.perf_counter()
            if args.route == "sync":
                status = client.post("/v1/analyze", files=files).status_code
            else:
                job_id = client.post("/v1/analyze_job/submit", files=files).json()["job_id"]
                while (state := client.post("/v1/analyze_job/status", json={"job_id": job_id}).json()["status"]) in (
                    "queued",
                    "running",
                ):
                    time.sleep(0.2)
                status = 200 if state == "completed" else 500
            return time.perf_counter() - started, status

        wall_start = time.perf_counter()
        read_thread = threading.Thread(target=read_while_loaded)
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            pending = [pool.submit(send, s) for s in studies]
            time.sleep(0.5)  # the requests are in; the reads start while they queue
            read_thread.start()
            outcomes = [p.result() for p in pending]
        loaded.set()
        read_thread.join()
        wall = time.perf_counter() - wall_start
        peak = _memory(server.process.pid)

        held = 0
        for index in range(args.studies):
            twin = clinician.post("/v1/twin/get", json={"patient_id": f"LOAD-{index:03d}"})
            held += len(twin.json()["analyses"]) if twin.status_code == 200 else 0
    finally:
        server.stop()

    latencies = sorted(t for t, _ in outcomes)
    ok = sum(1 for _, status in outcomes if status == 200)
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    print(f"| measure ({args.studies} studies, {args.concurrency} at once, route {args.route}) | value |")
    print("|---|---|")
    print(f"| start-up to ready | {server.startup_s:.1f} s |")
    print(f"| answered 200 | {ok} / {args.studies} |")
    print(f"| analyses held by the twin | {held} |")
    print(f"| wall time | {wall:.1f} s |")
    print(f"| throughput | {args.studies / wall:.2f} studies/s |")
    print(f"| latency median / p95 / max | {statistics.median(latencies):.1f} / {p95:.1f} / {latencies[-1]:.1f} s |")
    reads.sort()
    print(
        f"| twin read while analyses queue: n / median / max | {len(reads)} / {statistics.median(reads) * 1000:.0f} / "
        f"{reads[-1] * 1000:.0f} ms |"
    )
    print(f"| server RSS at ready (all processes) | {worker_rss_before['total'] / 2**20:.0f} MB |")
    print(f"| largest process RSS after the load | {peak['largest'] / 2**20:.0f} MB |")
    print(f"| server RSS after the load (all processes) | {peak['total'] / 2**20:.0f} MB |")
    return 0 if ok == held == args.studies else 1


def _memory(pid: int) -> dict[str, int]:
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    sizes = [p.memory_info().rss for p in processes if p.is_running()]
    return {"total": sum(sizes), "largest": max(sizes)}


if __name__ == "__main__":
    sys.exit(main())
