"""Shadow traffic: the shadow sees every request after the caller's answer is sent, its
answers never reach the caller, and its agreement with the champion is measured."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from serving_harness import Models, start_server

import shipyard
from shipyard.registry.registry import Registry
from shipyard.routing import DeploymentSpec


def test_shadow_answers_are_compared_and_never_returned(models: Models, tmp_path: Path):
    settings = shipyard.Settings.load({"home": models.home}, environ={})
    spec = DeploymentSpec.parse({
        "variants": [
            {"name": "champion", "model": "cancer:1", "role": "champion", "weight": 100},
            {"name": "shadow", "model": "cancer:2", "role": "shadow", "weight": 0},
        ],
    })
    registry = Registry.open(settings)
    try:
        registry.deploy("shadowed", spec.to_json(), owner="A <a@x.io>", reason="shadow test")
    finally:
        registry.close()
    server = start_server(models.home, "shadowed")
    try:
        for index, row in enumerate(models.X[:80]):
            response = httpx.post(f"{server.url}/v1/deployments/shadowed/predict",
                                  json={"inputs": [row.tolist()]},
                                  headers={"x-request-id": f"sh-{index}"})
            assert response.status_code == 200
            assert response.headers["x-variant"] == "champion"
            assert response.headers["x-model-version"] == "1"
        deadline = time.monotonic() + 10
        paired: dict[str, object] = {}
        while time.monotonic() < deadline:
            snap = httpx.get(f"{server.url}/v1/deployments/shadowed/monitor").json()
            paired = snap["paired"].get("shadow", {})
            if paired.get("n", 0) >= 80:
                break
            time.sleep(0.3)
        assert paired["n"] == 80
        assert paired["kind"] == "classes"
        assert 0.5 <= paired["agreement"] <= 1.0
        confusion = paired["confusion"]
        assert sum(sum(row.values()) for row in confusion.values()) == 80
        shadow = next(v for v in snap["variants"] if v["variant"] == "shadow")
        assert shadow["figures"]["requests"] == 80  # its own latency and errors are watched
    finally:
        server.stop()
