"""Server lifecycle under load: version switch, killed worker, SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest
from serving_harness import Models, Server, cli, start_server, thread_policies


class Load:
    """Threads sending single-row predictions until stopped; counts outcomes by version."""

    def __init__(
        self, server: Server, body: dict[str, object], threads: int = 4, deployment: str = "cancer"
    ) -> None:
        self.url = f"{server.url}/v1/deployments/{deployment}/predict"
        self.body = body
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json=self.body)
                    key = (
                        response.headers.get("x-model-version", "?")
                        if response.status_code == 200
                        else f"status {response.status_code}"
                    )
                except httpx.HTTPError as exc:
                    key = f"error {type(exc).__name__}"
                with self._lock:
                    self.outcomes[key] += 1
                    if not key[0].isdigit():
                        self.failures.append(key)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def wait_for(self, key: str, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.outcomes[key] < count:
            if time.monotonic() > deadline:
                pytest.fail(f"never saw {count} x {key}: {self.outcomes}")
            time.sleep(0.02)


def _private_home(models: Models, tmp_path: Path) -> Path:
    """A copy of the shared registry, so deploys here do not disturb the shared server."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(models.home, home, ignore=shutil.ignore_patterns("*.log", "cache"))
    return home


def test_version_switch_under_load_fails_no_request(models: Models, tmp_path: Path):
    home = _private_home(models, tmp_path)
    server = start_server(home, "cancer")
    try:
        body = {"inputs": [{"input": models.X[0].tolist()}]}
        with Load(server, body) as load:
            load.wait_for("1", 50)
            cli(home, "deploy", "cancer", "--model", "cancer:2")
            load.wait_for("2", 200)
        assert load.failures == [], load.outcomes
        assert load.outcomes["1"] >= 50 and load.outcomes["2"] >= 200
        listing = httpx.get(f"{server.url}/v1/deployments/cancer").json()
        assert listing["revision"] == 2
    finally:
        assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after draining


def test_a_body_still_arriving_across_a_version_switch_is_answered_by_the_new_version(
    models: Models, tmp_path: Path
):
    """The request is routed before its body arrives; meanwhile a new revision takes over and
    the replaced one retires (its batcher closes). The answer must come from the new one."""
    home = _private_home(models, tmp_path)
    server = start_server(home, "cancer")
    try:
        body = json.dumps({"inputs": [{"input": models.X[0].tolist()}]}).encode()
        head = (b"POST /v1/deployments/cancer/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head + body[:10])
            time.sleep(0.3)  # routed; the server waits for the rest of the body
            cli(home, "deploy", "cancer", "--model", "cancer:2")
            deadline = time.monotonic() + 30
            while httpx.get(f"{server.url}/v1/deployments/cancer").json()["revision"] != 2:
                assert time.monotonic() < deadline, "the server never switched"
                time.sleep(0.05)
            time.sleep(0.5)  # the replaced revision, with no request in flight, retires
            sock.sendall(body[10:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        status, _, rest = answer.partition(b"\r\n")
        assert status == b"HTTP/1.1 200 OK", answer[:600]
        assert b"x-model-version: 2" in rest.lower(), answer[:600]
    finally:
        server.stop()


def test_killed_worker_leaves_the_others_answering(models: Models, tmp_path: Path):
    home = _private_home(models, tmp_path)
    server = start_server(home, "cancer", "--workers", "2")
    try:
        parent = psutil.Process(server.proc.pid)
        deadline = time.monotonic() + 60
        while len(parent.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        # uvicorn's supervisor forks one child per worker (plus, on some versions, a
        # resource tracker that does not serve).
        workers = [c for c in parent.children() if "resource_tracker" not in " ".join(c.cmdline())]
        assert len(workers) >= 2, workers
        body = {"inputs": [{"input": models.X[0].tolist()}]}
        with Load(server, body, threads=4) as load:
            load.wait_for("1", 100)
            os.kill(workers[0].pid, signal.SIGKILL)
            killed_at = sum(load.outcomes.values())
            load.wait_for("1", load.outcomes["1"] + 300, timeout=60)
        after_kill = sum(load.outcomes.values()) - killed_at
        # Requests already on the killed worker's connections may fail; the rest must not.
        assert len(load.failures) <= 4, load.outcomes
        assert after_kill >= 300
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(20):
                assert client.post("/v1/deployments/cancer/predict", json=body).status_code == 200
    finally:
        server.stop()


def test_sigterm_drains_in_flight_requests(models: Models, tmp_path: Path):
    home = _private_home(models, tmp_path)
    server = start_server(home, "sleepy", "--scheduling", "normal")
    if sys.platform == "linux":  # the policy asked for, on every thread, the model's included
        assert thread_policies(server.proc.pid) == {os.SCHED_OTHER}
    cli(home, "deploy", "sleepy", "--model", "sleepy:1", "--timeout-ms", "5000")
    time.sleep(1.0)
    results: list[httpx.Response] = []

    def slow() -> None:
        results.append(
            httpx.post(
                f"{server.url}/v1/deployments/sleepy/predict",
                json={"inputs": [{"delay": 1.5}]},
                timeout=30,
            )
        )

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.4)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(30)
    code = server.proc.wait(30)
    assert results and results[0].status_code == 200, results
    assert results[0].json()["predictions"] == [3.0]
    assert code in (0, -signal.SIGTERM)


def test_metrics_add_up_across_workers(models: Models, tmp_path: Path):
    from prometheus_client.parser import text_string_to_metric_families

    home = _private_home(models, tmp_path)
    server = start_server(home, "cancer", "--workers", "2")
    try:
        body = {"inputs": [{"input": models.X[0].tolist()}]}
        for _ in range(60):  # a new connection each: the kernel spreads them over workers
            assert httpx.post(f"{server.url}/v1/deployments/cancer/predict",
                              json=body).status_code == 200
        # The worker that answers the scrape flushes first; another counts its requests at
        # its next flush, within a second.
        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(f"{server.url}/metrics").text
            answered = 0.0
            pids = set()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if (sample.name == "shipyard_requests_total"
                            and sample.labels.get("deployment") == "cancer"
                            and sample.labels.get("code") == "2xx"):
                        answered += sample.value
                    if sample.name == "shipyard_process_resident_memory_bytes":
                        pids.add(sample.labels.get("pid"))
            assert answered <= 60  # never counted twice
            if answered == 60 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answered == 60  # every worker's requests, counted once
        assert len(pids) >= 2, pids  # one memory series per live worker
        if sys.platform == "linux":  # the default policy reaches every worker's threads
            for pid in pids:
                assert thread_policies(int(pid)) == {os.SCHED_BATCH}
    finally:
        server.stop()
