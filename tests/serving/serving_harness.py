"""Helpers for serving tests: start real server processes, package the test models."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "shipyard.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@dataclass
class Server:
    home: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def access_log(self) -> list[dict[str, object]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(10)
        return self.proc.returncode


def thread_policies(pid: int) -> set[int]:
    """The scheduling policies of a live process's threads (os.SCHED_*), read from /proc."""
    policies = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            policies.add(os.sched_getscheduler(int(tid)))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    return policies


def start_server(
    home: Path, *args: str, env: dict[str, str] | None = None, wait_ready: bool = True
) -> Server:
    port = free_port()
    log = home / f"server-{port}.log"
    full_env = {**os.environ, "SHIPYARD_POLL_S": "0.2", **(env or {})}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shipyard.cli",
            "--home",
            str(home),
            "serve",
            "--port",
            str(port),
            *args,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=full_env,
    )
    server = Server(home, port, proc, log, full_env)
    if wait_ready:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        server.stop(signal.SIGKILL)
        raise RuntimeError(f"server never became ready: {log.read_text()[-3000:]}")
    return server


@dataclass
class Models:
    home: Path
    X: np.ndarray
    y: np.ndarray
    cancer_v1: object
    cancer_v2: object
    frame: pd.DataFrame


def _package_all(home: Path, work: Path, packaged: Path) -> Models:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import shipyard

    sys.path.insert(0, str(HERE))
    from sleepy_model import SleepyModel
    from text_model import TextLength

    settings = shipyard.Settings.load({"home": home}, environ={})
    X, y = load_breast_cancer(return_X_y=True)
    models = []
    for version, C in (("1", 1.0), ("2", 0.05)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        model.fit(X[:400], y[:400])
        dest = work / f"cancer-{version}"
        shipyard.package(
            model,
            dest,
            name="cancer",
            version=version,
            owner="A <a@x.io>",
            sample=X[:20],
            eval_data=(X[400:], y[400:]),
            thresholds={"accuracy": 0.8},
            description="cancer",
        )
        shipyard.push(dest, settings=settings)
        models.append(model)
    shipyard.push(packaged, settings=settings)
    sleepy = work / "sleepy"
    shipyard.package(
        SleepyModel(),
        sleepy,
        name="sleepy",
        version="1",
        owner="A <a@x.io>",
        sample=pd.DataFrame({"delay": [0.0, 0.01]}),
        runtime="python",
        description="sleeps",
    )
    shipyard.push(sleepy, settings=settings, allow_fragile=True)
    texts = work / "texts"
    shipyard.package(TextLength(), texts, name="texts", version="1", owner="A <a@x.io>",
                     sample=pd.DataFrame({"text": [f"sentence number {i}" for i in range(40)]}),
                     runtime="python", description="text lengths")
    shipyard.push(texts, settings=settings, allow_fragile=True)
    return Models(home, X, y, models[0], models[1], pd.DataFrame())
