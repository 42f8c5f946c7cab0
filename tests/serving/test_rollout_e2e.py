"""Rollouts end to end: a server with its controller, a canary judged on labelled traffic.

A deliberately worse version is rolled back on its own, with its evidence on record; a good
one is promoted to all traffic. A kill -9 mid-rollout loses nothing; a rollback puts all
traffic on the previous version within 2 s, and no request fails meanwhile.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from serving_harness import Server, cli, start_server
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import shipyard

X, y = load_breast_cancer(return_X_y=True)
X_train, X_live, y_train, y_live = train_test_split(X, y, test_size=0.4, random_state=0)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a good 1, a bad 2 (trained on shuffled labels) and a good 3."""
    home = tmp_path_factory.mktemp("rollout-home")
    work = tmp_path_factory.mktemp("rollout-bundles")
    settings = shipyard.Settings.load({"home": home}, environ={})
    rng = np.random.default_rng(0)
    for version, labels, C in (("1", y_train, 1.0), ("2", rng.permutation(y_train), 1.0),
                               ("3", y_train, 0.5)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        model.fit(X_train, labels)
        shipyard.package(model, work / version, name="cancer", version=version,
                         owner="A <a@x.io>", sample=X_train[:20],
                         eval_data=(X_live[:100], y_live[:100]), description="rollout test")
        shipyard.push(work / version, settings=settings, allow_fragile=True)
    return home


def rollout_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shipyard.cli", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=120)


def send_labelled(server: Server, name: str, rows: int, stop: threading.Event | None = None,
                  seen: Counter[str] | None = None) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for index in range(rows):
            if stop is not None and stop.is_set():
                return
            i = index % len(X_live)
            answer = client.post(f"/v1/deployments/{name}/predict",
                                 json={"inputs": [X_live[i].tolist()]})
            assert answer.status_code == 200, answer.text
            if seen is not None:
                seen[answer.headers["x-model-version"]] += 1
            feedback = client.post(f"/v1/deployments/{name}/feedback",
                                   json={"request_id": answer.headers["x-request-id"],
                                         "label": int(y_live[i])})
            assert feedback.status_code == 201, feedback.text


def wait_status(home: Path, name: str, wanted: set[str], timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = json.loads(rollout_cli(home, "rollout", "status", name, "--json").stdout)
        if found["rollout"]["status"] in wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


PLAN = {
    "strategy": "canary",
    "interval_s": 1,
    "steps": [{"weight": 50, "wait_for_labels": 25, "min_samples": 25}, {"weight": 100}],
    "rules": [{"name": "accuracy", "metric": "accuracy", "op": ">=", "threshold": 0.85,
               "min_samples": 25}],
}


def start_canary(home: Path, tmp_path: Path, name: str, model: str) -> None:
    plan = tmp_path / f"{name}-{model.replace(':', '-')}.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "model": model}))
    started = rollout_cli(home, "rollout", "start", name, "--plan", str(plan))
    assert started.returncode == 0, started.stderr


def test_a_worse_canary_is_rolled_back_and_a_good_one_promoted(home: Path, tmp_path: Path):
    cli(home, "deploy", "canaried", "--model", "cancer:1")
    server = start_server(home, "canaried")
    try:
        start_canary(home, tmp_path, "canaried", "cancer:2")
        stop = threading.Event()
        sender = threading.Thread(target=send_labelled, args=(server, "canaried", 400, stop))
        sender.start()
        found = wait_status(home, "canaried", {"rolled_back", "promoted", "aborted"})
        stop.set()
        sender.join()
        assert found["rollout"]["status"] == "rolled_back", found
        spec = json.loads(cli(home, "deployments", "--json"))
        served = next(d for d in spec if d["name"] == "canaried")["models"]
        assert served == ["champion=cancer:1"]
        why = rollout_cli(home, "rollout", "explain", "canaried").stdout
        assert "accuracy" in why and "rolled_back" in why
        history = json.loads(rollout_cli(home, "history", "canaried", "--json").stdout)
        assert len(history) >= 3  # deploy, the canary step, the rollback

        # The second run: a good version goes all the way.
        start_canary(home, tmp_path, "canaried", "cancer:3")
        stop = threading.Event()
        sender = threading.Thread(target=send_labelled, args=(server, "canaried", 600, stop))
        sender.start()
        found = wait_status(home, "canaried", {"rolled_back", "promoted", "aborted"}, 90)
        stop.set()
        sender.join()
        assert found["rollout"]["status"] == "promoted", found
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answer = httpx.post(f"{server.url}/v1/deployments/canaried/predict",
                                json={"inputs": [X_live[0].tolist()]})
            if answer.headers["x-model-version"] == "3":
                break
            time.sleep(0.2)
        assert answer.headers["x-model-version"] == "3"
    finally:
        server.stop()


def test_bad_rollout_requests_are_refused_and_change_nothing(home: Path, tmp_path: Path):
    cli(home, "deploy", "refusing", "--model", "cancer:1")
    cases = [
        ["--strategy", "canary", "--model", "cancer:3", "--steps", "50,25"],  # not increasing
        ["--strategy", "nonsense", "--model", "cancer:3"],
        ["--strategy", "canary", "--model", "cancer:404"],
        ["--strategy", "ab", "--model", "cancer:3"],  # no key
    ]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump([{"name": "x", "metric": "no_such_metric", "op": "<",
                                      "threshold": 1}]))
    cases.append(["--strategy", "canary", "--model", "cancer:3", "--rules", str(rules)])
    for args in cases:
        result = rollout_cli(home, "rollout", "start", "refusing", *args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr
    revisions = json.loads(rollout_cli(home, "history", "refusing", "--json").stdout)
    assert len(revisions) == 1
    # Two rollouts at once: the second is refused.
    first = rollout_cli(home, "rollout", "start", "refusing", "--strategy", "canary",
                        "--model", "cancer:3", "--steps", "10,100")
    assert first.returncode == 0, first.stderr
    second = rollout_cli(home, "rollout", "start", "refusing", "--strategy", "canary",
                         "--model", "cancer:3", "--steps", "10,100")
    assert second.returncode == 4, second.stderr
    aborted = rollout_cli(home, "rollout", "abort", "refusing", "--reason", "test")
    assert aborted.returncode == 0, aborted.stderr
    missing = rollout_cli(home, "rollback", "refusing", "--to", "99")
    assert missing.returncode == 3, missing.stderr


def test_kill_9_mid_rollout_then_the_rollout_continues(home: Path, tmp_path: Path):
    cli(home, "deploy", "crashy", "--model", "cancer:1")
    plan = tmp_path / "slow.yaml"
    plan.write_text(yaml.safe_dump({
        "strategy": "canary", "model": "cancer:3", "interval_s": 1,
        "steps": [{"weight": 30, "min_duration_s": 1, "min_samples": 10}, {"weight": 100}],
    }))
    assert rollout_cli(home, "rollout", "start", "crashy", "--plan", str(plan)).returncode == 0
    server = start_server(home, "crashy")
    try:
        send_labelled(server, "crashy", 20)
        server.stop(signal.SIGKILL)
        recorded = json.loads(rollout_cli(home, "rollout", "status", "crashy", "--json").stdout)
        assert recorded["rollout"]["status"] == "running"
        split = recorded["configured_split"]
        server = start_server(home, "crashy")
        # The restarted server serves the recorded split, then its controller (once the dead
        # one's lease expires) carries the rollout on to the end.
        listing = httpx.get(f"{server.url}/v1/deployments/crashy").json()
        assert {v["name"]: v["weight"] for v in listing["variants"]} == split
        stop = threading.Event()
        sender = threading.Thread(target=send_labelled, args=(server, "crashy", 2000, stop))
        sender.start()
        found = wait_status(home, "crashy", {"promoted", "rolled_back", "aborted"}, 90)
        stop.set()
        sender.join()
        assert found["rollout"]["status"] == "promoted", found
    finally:
        server.stop()


def test_rollback_moves_all_traffic_within_2_s_and_drops_nothing(home: Path):
    from shipyard.registry.registry import Registry
    from shipyard.rollout import manage

    cli(home, "deploy", "flip", "--model", "cancer:1")
    server = start_server(home, "flip")
    try:
        cli(home, "deploy", "flip", "--model", "cancer:3")  # 1 stays loaded, warm
        failures: list[str] = []
        stop = threading.Event()
        answers: list[tuple[float, str]] = []

        def load() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    response = client.post("/v1/deployments/flip/predict",
                                           json={"inputs": [X_live[1].tolist()]})
                    if response.status_code != 200:
                        failures.append(response.text)
                        continue
                    answers.append((time.monotonic(), response.headers["x-model-version"]))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while not (answers and answers[-1][1] == "3") and time.monotonic() < deadline:
            time.sleep(0.1)
        settings = shipyard.Settings.load({"home": home}, environ={})
        with Registry.open(settings) as registry:
            manage.rollback(registry, "flip", reason="test: the new version misbehaves")
        decided = time.monotonic()  # the rollback revision is committed
        time.sleep(3.0)
        stop.set()
        for thread in threads:
            thread.join()
        assert failures == []
        last_new = max((t for t, v in answers if v == "3"), default=decided)
        switch_s = max(0.0, last_new - decided)
        print(f"rollback: all traffic on version 1 {switch_s:.2f} s after the decision")
        assert switch_s < 2.0
        assert answers[-1][1] == "1"
        seen = Counter(v for _, v in answers)
        assert seen["1"] > 0 and seen["3"] > 0
    finally:
        server.stop()


def test_ab_arms_are_sticky_across_replicas_and_reported(home: Path, tmp_path: Path):
    cli(home, "deploy", "abtest", "--model", "cancer:1")
    started = rollout_cli(home, "rollout", "start", "abtest", "--strategy", "ab",
                          "--model", "cancer:3", "--ab-key", "header:x-user",
                          "--ab-split", "control=50,treatment=50", "--step-duration", "1h")
    assert started.returncode == 0, started.stderr
    first = start_server(home, "abtest")
    second = start_server(home, "abtest")
    try:
        body = {"inputs": [X_live[0].tolist()]}
        arms: dict[str, str] = {}
        rng = np.random.default_rng(1)
        for user in range(60):
            headers = {"x-user": f"user-{user}"}
            a = httpx.post(f"{first.url}/v1/deployments/abtest/predict", json=body,
                           headers=headers)
            b = httpx.post(f"{second.url}/v1/deployments/abtest/predict", json=body,
                           headers=headers)
            assert a.headers["x-variant"] == b.headers["x-variant"]  # same arm on each replica
            arms[f"user-{user}"] = a.headers["x-variant"]
            feedback = httpx.post(f"{first.url}/v1/deployments/abtest/feedback",
                                  json={"request_id": a.headers["x-request-id"],
                                        "thumbs": bool(rng.random() < (
                                            0.8 if a.headers["x-variant"] == "treatment"
                                            else 0.3))})
            assert feedback.status_code == 201, feedback.text
        assert set(arms.values()) == {"control", "treatment"}
        again = httpx.post(f"{first.url}/v1/deployments/abtest/predict", json=body,
                           headers={"x-user": "user-7"})
        assert again.headers["x-variant"] == arms["user-7"]  # and on every request
        keyless = httpx.post(f"{first.url}/v1/deployments/abtest/predict", json=body)
        assert keyless.status_code == 400
        assert "x-user" in keyless.json()["error"]["message"]
        time.sleep(1.5)  # the records' writer
        report = json.loads(rollout_cli(home, "rollout", "report", "abtest", "--json").stdout)
        assert report["arms"] == ["control", "treatment"]
        assert sum(report["observed"].values()) >= 60
        thumbs = [c for c in report["comparisons"] if c["metric"] == "thumbs"]
        control = next(c for c in thumbs if c["arm"] == "control")
        treatment = next(c for c in thumbs if c["arm"] == "treatment")
        assert treatment["mean"] > control["mean"]
        assert treatment["difference"] > 0 and treatment["interval"] != "-"
        assert treatment["verdict"] in ("better", "no difference yet")
        assert report["srm"]["mismatch"] is False
    finally:
        first.stop()
        second.stop()


def test_a_rollback_to_an_artifact_that_is_gone_is_refused(home: Path, tmp_path: Path):
    import shutil

    from shipyard.registry.registry import Registry

    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    cli(copy, "deploy", "gone", "--model", "cancer:1")
    cli(copy, "deploy", "gone", "--model", "cancer:3")
    settings = shipyard.Settings.load({"home": copy}, environ={})
    with Registry.open(settings) as registry:
        record = registry.resolve("cancer:1")
        only_v1 = {f.sha256 for f in record.files} - {
            f.sha256 for f in registry.resolve("cancer:3").files}
    for blob in (copy / "store").rglob("*"):
        if blob.is_file() and any(blob.name.startswith(d) or d in str(blob) for d in only_v1):
            blob.unlink()
    result = rollout_cli(copy, "rollback", "gone")
    assert result.returncode == 3, result.stderr
    assert "gone from the" in result.stderr and "artifact store" in result.stderr
    history = json.loads(rollout_cli(copy, "history", "gone", "--json").stdout)
    assert len(history) == 2  # nothing changed
