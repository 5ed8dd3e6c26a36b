"""Run the API as a hospital would, for tests and benchmarks: `bentoml serve` in its own process group on
127.0.0.1 and a free port, with its own BentoML home, twin data folder and API keys; wait until /readyz answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from twin_imaging.access import ROLES, ApiKeyRegistry
from twin_imaging.testing.network import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunningServer:
    url: str
    keys: dict[str, str]  # role → a key of that role
    startup_s: float  # from launch to the first 200 of /readyz
    process: subprocess.Popen
    root: Path
    _log: object = field(repr=False, default=None)

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def resident_bytes(self) -> int:
        """Resident memory of the server and its workers together (psutil, a dev dependency)."""
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.NoSuchProcess:
            return 0

    def log_text(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log is not None:
            self._log.close()


def start_server(root: Path, *, env: dict[str, str] | None = None, ready_timeout_s: float = 90) -> RunningServer:
    """Start the service with its state under ``root`` (keys, data, BentoML home, server.log)."""
    root.mkdir(parents=True, exist_ok=True)
    registry = ApiKeyRegistry.load(root / "keys.json")
    keys = {role: registry.create(f"launch-{role}-{time.time_ns()}", role=role) for role in ROLES}
    port = free_port()
    environment = {
        **os.environ,
        "BENTOML_HOME": str(root / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "TWIN_IMAGING_DATA_DIR": str(root / "data"),
        "TWIN_IMAGING_API_KEYS_FILE": str(root / "keys.json"),
        **(env or {}),
    }
    log = open(root / "server.log", "ab")  # noqa: SIM115 (closed by RunningServer.stop)
    started = time.monotonic()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "bentoml"),
            "serve",
            "serving.service:TwinImaging",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = RunningServer(f"http://127.0.0.1:{port}", keys, 0.0, process, root, log)
    deadline = started + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"bentoml serve exited with {process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    server.startup_s = time.monotonic() - started
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"bentoml serve was not ready within {ready_timeout_s} s:\n{server.log_text()[-3000:]}")
