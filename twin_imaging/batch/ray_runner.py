"""A cohort on Ray: one actor per worker loads the model once and takes studies one at a time until none is left.

    outcomes = run_on_ray(items, BatchConfig(workers=2, ...), on_done=progress_bar.update)

A local Ray instance is started (and stopped) unless ``ray_address`` names a cluster ("auto", or ray://host:10001
through a Ray Client). Each actor reserves ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs, and its ONNX
Runtime uses as many threads as it reserved CPUs (no oversubscription). A study goes to the first idle actor; an
actor that dies mid-study (killed, out of memory) fails that study with the reason and is replaced, so one bad
study or node never stops the cohort. Ray is the scheduler: nothing here queues, locks or retries on its own.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from twin_imaging.batch.manifest import BatchItem
from twin_imaging.batch.work import BatchWorker, ItemOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchConfig:
    workers: int
    database_url: str
    artifacts_dir: str
    package_dir: str | None = None
    dicomweb_url: str | None = None
    ray_address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


def _worker_env(config: BatchConfig) -> dict[str, str]:
    """The driver's twin-imaging settings, for the workers (a cluster's workers do not share its environment)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("TWIN_IMAGING_")}
    env["TWIN_IMAGING_ONNX_THREADS"] = str(max(1, math.floor(config.cpus_per_worker)))
    env["TWIN_IMAGING_DICOM_DECODE_THREADS"] = str(max(1, math.floor(config.cpus_per_worker)))
    return env


def run_on_ray(
    items: list[BatchItem], config: BatchConfig, *, on_done: Callable[[ItemOutcome], None] | None = None
) -> list[ItemOutcome]:
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    started_here = not ray.is_initialized()
    if started_here:
        options = (
            {"address": config.ray_address}
            if config.ray_address
            else {
                "num_cpus": max(1, math.ceil(config.workers * config.cpus_per_worker)),
                "include_dashboard": False,
            }
        )
        ray.init(
            **options, runtime_env={"env_vars": _worker_env(config)}, log_to_driver=False, logging_level=logging.WARNING
        )
    remote_worker = ray.remote(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker)(BatchWorker)

    def new_actor(index: int):
        return remote_worker.remote(
            package_dir=config.package_dir,
            database_url=config.database_url,
            artifacts_dir=config.artifacts_dir,
            dicomweb_url=config.dicomweb_url,
            name=f"worker-{index}",
        )

    queue = deque(items)
    pending: dict = {}
    outcomes: list[ItemOutcome] = []
    created = 0

    def give(actor) -> None:
        if queue:
            item = queue.popleft()
            pending[actor.run.remote(item)] = (actor, item)

    try:
        for _ in range(min(config.workers, len(items))):
            give(new_actor(created))
            created += 1
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor, item = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except (RayActorError, RayTaskError) as exc:  # the worker died or could not start: replace it
                reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                outcome = ItemOutcome(item.row, item.label, "failed", reason=f"the worker failed: {reason}")
                ray.kill(actor, no_restart=True)
                actor = new_actor(created)
                created += 1
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
            give(actor)
    finally:
        if started_here:
            ray.shutdown()
    return sorted(outcomes, key=lambda o: o.row)
