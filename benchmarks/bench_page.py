"""How fast the twin page is usable for a 512 x 512 x 300 study: a real `bentoml serve`, a twin holding one analysis
of a 512 x 512 x 300 phantom CT (0.8 x 0.8 x 1 mm), Debian's headless chromium at 1366 x 768 (software WebGL).

    .venv/bin/python benchmarks/bench_page.py [--repeats 3]

Times, from the click to what the clinician sees (median of the repeats, each in a fresh browser):
- first view: "Open" on a patient id → the timeline drawn (the twin and its timeline read, the audit rows written);
- trends: the tab → the charts drawn;
- viewer planes: the tab → the CT and segmentation drawn in the three planes (the viewer copies downloaded, checked
  against their sha256, decoded); viewer + 3D: until the organ surfaces are drawn too.
Also the bytes the viewer downloads. A table, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.launch import start_server  # noqa: E402
from twin_imaging.inference.segment import Segmenter  # noqa: E402
from twin_imaging.models import default_segmentation_package  # noqa: E402
from twin_imaging.pipeline import analyze_study  # noqa: E402
from twin_imaging.settings import Settings  # noqa: E402
from twin_imaging.testing import PatientSpec, PhantomGeometry, SeriesSpec, write_phantom_study  # noqa: E402
from twin_imaging.testing.browser import browser_missing, twin_page  # noqa: E402
from twin_imaging.twin.store import TwinStore  # noqa: E402

PATIENT = PatientSpec(patient_id="BENCH-PAGE-1")


def one_run(url: str, key: str) -> dict[str, float]:
    with twin_page(url) as browser:
        browser.sign_in(key)
        page = browser.page
        started = time.perf_counter()
        browser.open_patient(PATIENT.patient_id)
        page.wait_for_selector("#timeline-rows tr[data-kind=analysis]")
        first = time.perf_counter() - started
        started = time.perf_counter()
        browser.open_view("trends")
        trends = time.perf_counter() - started
        started = time.perf_counter()
        page.click("[role=tab][data-view=viewer]")
        page.wait_for_selector("#legend li", timeout=120_000)
        planes = time.perf_counter() - started
        page.wait_for_selector("#render3d[data-meshes]", timeout=120_000)
        viewer = time.perf_counter() - started
        downloaded = page.evaluate(
            "performance.getEntriesByType('resource').reduce((n, e) => n + (e.encodedBodySize || 0), 0)"
        )
        if browser.console_errors:
            raise RuntimeError(f"console errors: {browser.console_errors}")
    return {"first view": first, "trends": trends, "viewer planes": planes, "viewer + 3D": viewer, "bytes": downloaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    missing = browser_missing()
    if missing:
        raise SystemExit(f"cannot drive the page: {missing}")
    with tempfile.TemporaryDirectory(prefix="bench-page-") as folder:
        root = Path(folder)
        geometry = PhantomGeometry(shape=(512, 512, args.slices), spacing_mm=(0.8, 0.8, 1.0))
        write_phantom_study(root / "study", (SeriesSpec(geometry=geometry),), patient=PATIENT)
        result = analyze_study(root / "study", root / "out", segmenter=Segmenter(default_segmentation_package()))
        data = root / "data"
        store = TwinStore(f"sqlite:///{data / 'twin.sqlite3'}", artifacts_dir=data / "artifacts", settings=Settings())
        store.attach_analysis(result, actor="bench")
        store.close()
        sizes = {o.kind: o.size_bytes for o in result.document.outputs if o.kind in ("viewer_ct", "viewer_labels")}
        server = start_server(root)
        try:
            runs = [one_run(server.url, server.keys["clinician"]) for _ in range(args.repeats)]
        finally:
            server.stop()
    print(f"\ntwin page, 512 x 512 x {args.slices} CT, headless chromium (SwiftShader WebGL), median of {args.repeats}")
    print("| step | median s | max s |\n|---|---|---|")
    for step in ("first view", "trends", "viewer planes", "viewer + 3D"):
        values = [r[step] for r in runs]
        print(f"| {step} | {statistics.median(values):.2f} | {max(values):.2f} |")
    ct_mb, labels_mb = sizes.get("viewer_ct", 0) / 1e6, sizes.get("viewer_labels", 0) / 1e6
    print(f"viewer copies: CT {ct_mb:.1f} MB, labels {labels_mb:.2f} MB")
    print(f"page downloads in all: {statistics.median(r['bytes'] for r in runs) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
