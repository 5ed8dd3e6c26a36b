"""Screenshots of every view of the twin page, for the README: a demo twin (the phantom before and after a partial
nephrectomy, ``twin_imaging.testing.demo_twin``) served by a real `bentoml serve` on 127.0.0.1, driven in headless
Chromium at 1366 x 768.

    .venv/bin/python scripts/page_screenshots.py docs/page        # writes timeline.png, trends.png, viewer.png,
                                                                  # scenarios.png, sign_in.png
Needs the dev set-up (bash scripts/setup.sh dev: Debian's chromium and playwright). Everything runs in a temporary
folder; only the PNGs are written to OUT.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.launch import start_server  # noqa: E402
from twin_imaging.testing.browser import browser_missing, twin_page  # noqa: E402
from twin_imaging.testing.demo_twin import build_demo_twin  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for the PNGs")
    args = parser.parse_args()
    missing = browser_missing()
    if missing:
        print(f"cannot drive the page: {missing}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="twin-page-") as folder:
        root = Path(folder)
        twin = build_demo_twin(root / "data", work_dir=root / "work")
        server = start_server(root)
        try:
            with twin_page(server.url) as browser:
                browser.screenshot(args.out / "sign_in.png")
                browser.sign_in(server.keys["clinician"])
                browser.open_patient(twin.patient_id)
                browser.screenshot(args.out / "timeline.png")
                for view in ("trends", "viewer", "scenarios"):
                    browser.open_view(view)
                    browser.screenshot(args.out / f"{view}.png")
                if browser.console_errors:
                    print("console errors:", *browser.console_errors, sep="\n  ", file=sys.stderr)
                    return 1
        finally:
            server.stop()
    for path in sorted(args.out.glob("*.png")):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
