"""`shipyard drift`, `shipyard monitor` and `shipyard feedback import` against the shared
server and the prediction records it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from serving_harness import Models, Server


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shipyard.cli", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "250"})


def served_ids(server: Server, rows: list[list[float]], prefix: str) -> list[str]:
    ids = []
    for index, row in enumerate(rows):
        request_id = f"{prefix}-{index}"
        response = httpx.post(f"{server.url}/v1/deployments/cancer/predict",
                              json={"inputs": [row]}, headers={"x-request-id": request_id})
        assert response.status_code == 200
        ids.append(request_id)
    return ids


def wait_for_records(home: Path, rows: int) -> dict[str, object]:
    deadline = time.monotonic() + 15
    while True:
        report = json.loads(run(home, "drift", "cancer", "--window", "1h", "--json").stdout)
        if report["rows"] >= rows or time.monotonic() > deadline:
            return report
        time.sleep(0.5)


def test_drift_from_the_records_of_every_worker(server: Server, models: Models):
    served_ids(server, models.X[400:520].tolist(), f"drift-{uuid.uuid4().hex[:6]}")
    report = wait_for_records(server.home, 120)
    assert report["rows"] >= 120
    variant = next(v for v in report["variants"] if v["model_version"] == "1")
    assert variant["status"] in ("ok", "drift")
    assert "input[0]" in variant["fields"]
    assert variant["fields"]["input[0]"]["psi"] is not None
    table = run(server.home, "drift", "cancer", "--window", "30m")
    assert table.returncode in (0, 1)  # 1 means a field drifted: scripts can act on it
    assert "input[0]" in table.stdout


def test_drift_asked_of_the_server(server: Server):
    result = run(server.home, "drift", "cancer", "--url", server.url, "--json")
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["variants"][0]["model_version"] == "1"


def test_drift_refuses_a_bad_window_and_an_unknown_deployment(server: Server):
    for window in ("soon", "-1h", "0", "nan"):
        result = run(server.home, "drift", "cancer", "--window", window)
        assert result.returncode == 2, (window, result.stderr)
        assert "Expected a duration" in result.stderr
    missing = run(server.home, "drift", "no-such-deployment")
    assert missing.returncode == 3, missing.stderr


def test_monitor_prints_a_view_and_json(server: Server, models: Models):
    served_ids(server, models.X[:3].tolist(), f"mon-{uuid.uuid4().hex[:6]}")
    snap = json.loads(run(server.home, "monitor", "cancer", "--url", server.url, "--json").stdout)
    assert snap["deployment"] == "cancer"
    view = run(server.home, "monitor", "cancer", "--url", server.url, "--once")
    assert view.returncode == 0, view.stderr
    assert "champion" in view.stdout and "revision" in view.stdout
    nobody = run(server.home, "monitor", "cancer", "--url", "http://127.0.0.1:9", "--once")
    assert nobody.returncode != 0
    assert "No shipyard server answers" in nobody.stderr
    unknown = run(server.home, "monitor", "nope", "--url", server.url, "--once")
    assert unknown.returncode == 3


def test_feedback_import_stores_good_rows_and_reports_bad_ones(
    server: Server, models: Models, tmp_path: Path
):
    ids = served_ids(server, models.X[300:310].tolist(), f"imp-{uuid.uuid4().hex[:6]}")
    wait_for_records(server.home, 0)
    time.sleep(1.5)  # the writer's flush
    labels = models.y[300:310]
    lines = [{"request_id": i, "label": int(y)} for i, y in zip(ids, labels, strict=True)]
    lines.append({"request_id": "never-served", "label": 1})
    lines.append({"request_id": ids[0], "label": "not-a-class"})
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    result = run(server.home, "feedback", "import", "cancer", str(path), "--json")
    assert result.returncode == 1, result.stderr  # some rows failed
    report = json.loads(result.stdout)
    assert report["rows"] == 12
    assert report["written"] == 10
    assert report["failed"] == 2
    # Performance now has labels for version 1.
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        snap = httpx.get(f"{server.url}/v1/deployments/cancer/monitor").json()
        if (snap.get("performance") or {}).get("labelled", 0) >= 10:
            break
        time.sleep(1)
    variant = next(v for v in snap["variants"] if v["version"] == "1")
    metrics = {row["metric"] for row in variant["performance"] if row["slice"] == "all"}
    assert "accuracy" in metrics
