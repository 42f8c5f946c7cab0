"""Proven on real data: a served model trained on scikit-learn's breast-cancer data, an
unshifted live sample and then the same sample with one feature shifted. The drift alert
fires for that feature and only that feature; nothing fires on the unshifted sample."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from serving_harness import cli, start_server
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import shipyard

WINDOW_S = 4
SHIFTED = 7  # "mean concave points"


def alerts(url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/v1/deployments/watched/alerts").json()["active"]


def send(url: str, rows: np.ndarray) -> None:
    for chunk in np.array_split(rows, 10):
        response = httpx.post(f"{url}/v1/deployments/watched/predict",
                              json={"inputs": chunk.tolist()}, timeout=30)
        assert response.status_code == 200, response.text


def drift_status(url: str) -> dict[str, Any]:
    body = httpx.get(f"{url}/v1/deployments/watched/drift").json()
    return body["variants"][0]["report"]


def test_drift_alert_fires_for_the_shifted_feature_only(tmp_path: Path):
    X, y = load_breast_cancer(return_X_y=True)
    # Three disjoint random parts: training, the evaluation data the reference profile is
    # built from, and the live traffic.
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.5, random_state=0)
    X_eval, X_live, y_eval, _ = train_test_split(X_rest, y_rest, test_size=0.5, random_state=1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train)
    home = tmp_path / "home"
    settings = shipyard.Settings.load({"home": home}, environ={})
    shipyard.package(model, tmp_path / "bundle", name="watched", version="1",
                     owner="A <a@x.io>", sample=X_train[:20], eval_data=(X_eval, y_eval),
                     description="breast cancer, drift test")
    shipyard.push(tmp_path / "bundle", settings=settings)
    config = tmp_path / "monitoring.yaml"
    config.write_text(yaml.safe_dump({
        "drift": {"window_s": WINDOW_S, "slide_s": 1, "min_rows": 100},
        "alerts": [{"name": "input-drift", "metric": "drift.input.*", "op": ">=",
                    "threshold": 1, "severity": "critical"}],
    }))
    cli(home, "deploy", "watched", "--model", "watched:1", "--monitoring", str(config))
    server = start_server(home, "watched")
    try:
        # 1. Unshifted: the live part as it is. The window judges it; nothing fires.
        send(server.url, X_live)
        deadline = time.monotonic() + 10
        report = drift_status(server.url)
        while report["status"] == "insufficient_data" and time.monotonic() < deadline:
            time.sleep(0.3)
            report = drift_status(server.url)
        assert report["status"] == "ok", report["drifted"]
        assert report["rows"] == len(X_live)
        time.sleep(2.5)  # two alert evaluations over the unshifted window
        assert alerts(server.url) == []

        # 2. Let the unshifted rows leave the window, then send the same rows with one
        # feature moved by one standard deviation.
        time.sleep(WINDOW_S + 1.5)
        shifted = X_live.copy()
        shifted[:, SHIFTED] += X[:, SHIFTED].std()
        send(server.url, shifted)
        deadline = time.monotonic() + 15
        firing: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            firing = [a for a in alerts(server.url) if a["state"] == "firing"]
            if firing:
                break
            time.sleep(0.3)
        assert [a["scope"]["field"] for a in firing] == [f"input[{SHIFTED}]"]
        assert firing[0]["scope"]["model_version"] == "1"
        report = drift_status(server.url)
        assert [k for k in report["drifted"] if k.startswith("input")] == [f"input[{SHIFTED}]"]
        # The log carries the transition as one JSON line naming the field.
        assert f"input[{SHIFTED}]" in server.log.read_text()
    finally:
        server.stop()
