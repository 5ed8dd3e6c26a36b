"""How long the whole analysis takes, stage by stage: a 512 x 512 x N phantom CT study (uncompressed DICOM), through
read, preprocess, sliding-window ONNX, post-processing, measurements, every output and the twin, beside the standard
PyTorch + MONAI route with the same weights.

    .venv/bin/python benchmarks/bench_analyze.py [--slices 300] [--repeats 3] [--cores 2] [--threads N] \
        [--model abdomen_ct_fast --model abdomen_ct_accurate] [--providers CUDAExecutionProvider] [--no-baseline] \
        [--in-flight 2]

Prints one table: a row per stage, a column per model (default: the shipped default model), median seconds over the
repeats, each model loaded once (as a service would), each repeat attached to a fresh twin (SQLite), and the
process's peak resident memory after each model. ``--cores 1`` pins the process to one core (threads follow),
for the scaling with cores. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed analyses first (TensorRT builds its engines on the first)"
    )
    parser.add_argument("--cores", type=int, default=None, help="pin the process to this many cores (default: all)")
    parser.add_argument(
        "--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: the Segmenter's choice)"
    )
    parser.add_argument("--model", action="append", help="model id or package folder (repeat to compare)")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=0,
        help="also run this many studies at once on the one loaded model (threads, as the API's workers do) and "
        "report studies per minute",
    )
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
    cores = _pin_cores(args.cores)

    # imported after the pinning: the settings read the thread counts from the environment
    from twin_imaging.inference.segment import Segmenter
    from twin_imaging.models import default_segmentation_package, load_model_package
    from twin_imaging.testing import PhantomGeometry, SeriesSpec, write_phantom_study

    workdir = Path(tempfile.mkdtemp(prefix="bench_analyze_"))
    geometry = PhantomGeometry(shape=(512, 512, args.slices), spacing_mm=(0.8, 0.8, 1.0))
    write_phantom_study(workdir / "study", series=(SeriesSpec(geometry=geometry),))
    columns: dict[str, dict[str, float]] = {}
    for model in args.model or [None]:
        package = default_segmentation_package() if model is None else load_model_package(_package_path(model))
        start = time.perf_counter()
        segmenter = Segmenter(package, intra_op_threads=args.threads, providers=args.providers)
        load_seconds = time.perf_counter() - start
        column, labels = _ours(segmenter, workdir, args.repeats, warmup=args.warmup)
        column["model load"] = load_seconds
        if args.in_flight:
            column[f"studies per minute ({args.in_flight} in flight)"] = _throughput(
                segmenter, workdir, args.in_flight, studies=max(args.repeats, 2) * args.in_flight
            )
        if not args.no_baseline:
            _baseline(column, workdir / "study", package, labels, cores, args.repeats)
        column["peak RSS so far (GB)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        providers = "+".join(p.replace("ExecutionProvider", "") for p in segmenter.session.get_providers())
        threads = segmenter.session.get_session_options().intra_op_num_threads or "default"
        plan = f"{segmenter.concurrent_windows} window(s) at once, {threads} thread(s) each"
        columns[f"{package.card.model_id} {package.card.version} ({providers}; {plan})"] = column
        del segmenter, labels

    print(
        f"\nanalysis of a 512 x 512 x {args.slices} CT (0.8 x 0.8 x 1 mm, uncompressed DICOM); {cores} of "
        f"{os.cpu_count()} CPU cores; median of {args.repeats} (seconds); the PyTorch + MONAI route with {cores} "
        "torch threads"
    )
    names = list(columns)
    print("| stage | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    stages = list(dict.fromkeys(stage for column in columns.values() for stage in column))
    for stage in stages:
        print(f"| {stage} | " + " | ".join(_cell(columns[n].get(stage)) for n in names) + " |")
    shutil.rmtree(workdir, ignore_errors=True)


def _pin_cores(cores: int | None) -> int:
    """Pin this process to ``cores`` CPUs and size every thread pool to them; returns the cores in use."""
    available = sorted(os.sched_getaffinity(0))
    if cores is None:
        return len(available)
    if not 1 <= cores <= len(available):
        raise SystemExit(f"--cores must be 1..{len(available)}")
    os.sched_setaffinity(0, available[:cores])
    for setting in ("TWIN_IMAGING_DICOM_DECODE_THREADS", "TWIN_IMAGING_OUTPUT_THREADS"):
        os.environ[setting] = str(cores)
    return cores


def _ours(segmenter, workdir: Path, repeats: int, *, warmup: int):
    """Each repeat from the DICOM folder to a fresh twin; the medians, and the last run's labels."""
    from twin_imaging.pipeline import analyze_study
    from twin_imaging.settings import Settings
    from twin_imaging.twin import TwinStore

    for _ in range(warmup):
        analyze_study(workdir / "study", workdir / "warmup", segmenter=segmenter)
        shutil.rmtree(workdir / "warmup", ignore_errors=True)

    runs: list[dict[str, float]] = []
    result = None
    for repeat in range(repeats):
        twin = workdir / f"twin{repeat}"
        store = TwinStore(f"sqlite:///{twin / 'twin.sqlite3'}", artifacts_dir=twin / "artifacts", settings=Settings())
        start = time.perf_counter()
        result = analyze_study(workdir / "study", workdir / f"out{repeat}", segmenter=segmenter)
        attach_start = time.perf_counter()
        store.attach_analysis(result, actor="bench")
        end = time.perf_counter()
        store.close()
        timings = dict(result.document.timings_s)
        timings["twin attach"] = end - attach_start
        timings["total (DICOM to twin)"] = end - start
        runs.append(timings)
        shutil.rmtree(workdir / f"out{repeat}", ignore_errors=True)
        shutil.rmtree(twin, ignore_errors=True)
    column = {stage: statistics.median(run[stage] for run in runs) for stage in runs[0]}
    column["studies per minute (one at a time)"] = 60.0 / column["total (DICOM to twin)"]
    return column, result.segmentation.labels


def _throughput(segmenter, workdir: Path, in_flight: int, *, studies: int) -> float:
    """Studies per minute with ``in_flight`` analyses (each attached to its own twin) running at once."""
    from concurrent.futures import ThreadPoolExecutor

    from twin_imaging.pipeline import analyze_study
    from twin_imaging.settings import Settings
    from twin_imaging.twin import TwinStore

    # the twins are made first, one after another (a store's schema migration is not meant to run twice at once in
    # one process), as a service has its one store open before any study arrives
    stores = []
    for index in range(studies):
        twin = workdir / f"flight{index}"
        stores.append(
            TwinStore(f"sqlite:///{twin / 'twin.sqlite3'}", artifacts_dir=twin / "artifacts", settings=Settings())
        )

    def one(index: int) -> None:
        out = workdir / f"flight{index}" / "out"
        stores[index].attach_analysis(analyze_study(workdir / "study", out, segmenter=segmenter), actor="bench")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        list(pool.map(one, range(studies)))
    seconds = time.perf_counter() - start
    for index, store in enumerate(stores):
        store.close()
        shutil.rmtree(workdir / f"flight{index}", ignore_errors=True)
    return 60.0 * studies / seconds


def _baseline(column, study: Path, package, our_labels, threads: int, repeats: int) -> None:
    """The same weights through PyTorch + MONAI (``monai_baseline``): from the DICOM folder with MONAI's own reader,
    and from our decoded volume; the ratios of their times to ours, and how well their labels agree with ours."""
    sys.path.insert(0, str(Path(__file__).parent))
    from monai_baseline import monai_read, monai_route, torch_network

    from twin_imaging.pipeline import read_study

    network = torch_network(package)
    own_reads, from_volume = [], []
    monai_labels = monai_affine = None
    for _ in range(repeats):
        image, read_seconds = monai_read(study)
        monai_labels, monai_affine, steps = monai_route(image, package, network, threads=threads)
        own_reads.append({"read (MONAI PydicomReader)": read_seconds, **steps})
        del image
    for step in own_reads[0]:
        column[f"MONAI route: {step}"] = statistics.median(s[step] for s in own_reads)
    monai_total = statistics.median(sum(s.values()) for s in own_reads)
    ours = column["read"] + column["segment"]
    column["MONAI route: DICOM to labels"] = monai_total
    column["ours: DICOM to labels"] = ours
    column["MONAI route / ours (DICOM to labels)"] = monai_total / ours

    volume = read_study(study).volume
    for _ in range(repeats):
        from_volume.append(sum(monai_route(volume, package, network, threads=threads)[2].values()))
    column["MONAI route from our decoded volume: to labels"] = statistics.median(from_volume)
    column["MONAI route / ours (decoded volume to labels)"] = statistics.median(from_volume) / column["segment"]
    column["labels agreeing with the MONAI route (mean Dice)"] = _agreement(monai_labels, monai_affine, our_labels)


def _agreement(monai_labels, monai_affine, ours) -> float:
    """Mean Dice over the structures of either map, MONAI's labels placed on our grid (nearest; the grids are the
    same voxels, possibly in another axis order): the two routes run the same network."""
    import numpy as np

    from twin_imaging.transforms import resample_to_grid
    from twin_imaging.volume import Volume

    theirs = resample_to_grid(Volume(monai_labels, monai_affine), ours.shape, ours.affine_ras, order=0).array
    mine = np.asarray(ours.array)
    dice = []
    for label in sorted((set(np.unique(theirs)) | set(np.unique(mine))) - {0}):
        a, b = theirs == label, mine == label
        dice.append(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))
    return float(np.mean(dice)) if dice else 1.0


def _package_path(model: str) -> Path:
    from twin_imaging.settings import get_settings

    path = Path(model)
    return path if path.exists() else get_settings().models_dir / model


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
