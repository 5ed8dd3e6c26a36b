"""The API under load: 20 analyses of small studies at once against a real `bentoml serve`, none lost.

    .venv/bin/python benchmarks/bench_serve.py [--studies 20] [--concurrency 20] [--route sync|job]

Starts the server (its own twin, keys and BentoML home in a temporary folder), writes N phantom studies of
different patients (96 x 96 x 40, about 0.8 MB each), sends them all at once through /v1/analyze (or the job
route), then checks that the twin holds exactly N analyses. Prints start-up time, throughput, latency percentiles
and the memory of the server's processes. Exits 1 if an analysis is missing. Not a test: numbers depend on the
machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
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
    server = start_server(root / "server")
    try:
        worker_rss_before = _memory(server.process.pid)
        client = httpx.Client(base_url=server.url, timeout=1800, headers=server.headers("integration"))

        def send(folder: Path) -> tuple[float, int]:
            files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(folder.glob("*.dcm"))]
            started = time.perf_counter()
            if args.route == "sync":
                status = client.post("/v1/analyze", files=files).status_code
            else:
                task_id = client.post("/v1/analyze_job/submit", files=files).json()["task_id"]
                while (state := client.get("/v1/analyze_job/status", params={"task_id": task_id}).json()["status"]) in (
                    "pending",
                    "in_progress",
                ):
                    time.sleep(0.2)
                status = 200 if state == "completed" else 500
            return time.perf_counter() - started, status

        wall_start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            outcomes = list(pool.map(send, studies))
        wall = time.perf_counter() - wall_start
        peak = _memory(server.process.pid)

        clinician = httpx.Client(base_url=server.url, timeout=60, headers=server.headers("clinician"))
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
