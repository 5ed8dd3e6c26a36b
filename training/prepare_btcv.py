"""Write BTCV's NIfTI copy (the layout ``training/datalists/btcv.json`` reads) outside the repository.

    python -m training.prepare_btcv            # → settings.prepared_data_dir/btcv (TWIN_IMAGING_PREPARED_DATA_DIR)
    python -m training.prepare_btcv --force    # write it again

Runs the shared data's own ``btcv/prepare.py`` (which repairs the source's axis flip) and checks that every case
the datalist names is there. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from training.paths import REPO_ROOT
from twin_imaging.datalist import read_datalist
from twin_imaging.settings import get_settings

DATALIST = REPO_ROOT / "training" / "datalists" / "btcv.json"


def prepare_btcv(*, force: bool = False) -> Path:
    settings = get_settings()
    script = settings.shared_data_dir / "btcv" / "prepare.py"
    out = settings.prepared_data_dir / "btcv"
    if not script.exists():
        raise SystemExit(f"BTCV is not beside the project: {script} is missing (set TWIN_IMAGING_SHARED_DATA_DIR)")
    if force or not (out / "dataset.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(script), str(out)], check=True)
    datalist = read_datalist(DATALIST)  # raises, naming the file, if a case is missing
    print(f"BTCV: {len(datalist.training)} labelled cases in {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="write the copy again")
    prepare_btcv(force=parser.parse_args(argv).force)


if __name__ == "__main__":
    main()
