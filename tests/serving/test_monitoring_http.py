"""Monitoring over HTTP on the shared server: /metrics, the monitor snapshot, drift, alerts,
feedback and its failure paths. Every figure names its deployment, variant and version."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import Models, Server


def predict(
    server: Server, rows: list[list[float]], request_id: str | None = None
) -> httpx.Response:
    headers = {"x-request-id": request_id} if request_id else {}
    response = httpx.post(f"{server.url}/v1/deployments/cancer/predict",
                          json={"inputs": rows}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response


def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Poll until `check` returns something truthy (the monitor flushes once a second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


LABELS = {"deployment": "cancer", "variant": "champion", "model_version": "1"}


def samples(server: Server, name: str, **labels: str) -> list[float]:
    """Values of the samples called `name` whose labels include LABELS and `labels`."""
    text = httpx.get(f"{server.url}/metrics").text
    wanted = {**LABELS, **labels}
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                found.append(sample.value)
    return found


def test_metrics_are_prometheus_text_labelled_with_the_model_version(
    server: Server, models: Models
):
    for row in models.X[:5]:
        predict(server, [row.tolist()])
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert samples(server, "shipyard_requests_total", code="2xx")[0] >= 5
    assert samples(server, "shipyard_request_duration_seconds_count")[0] >= 5
    assert samples(server, "shipyard_inflight_requests")
    assert samples(server, "shipyard_errors_total", **{"class": "timeout"}) == [0.0]
    assert "shipyard_process_resident_memory_bytes" in response.text
    # Batch sizes and model CPU time reach Prometheus from the flusher within a second or so.
    assert eventually(lambda: (samples(server, "shipyard_batch_size_count") or [0])[0] >= 5)
    assert eventually(lambda: (samples(server, "shipyard_model_cpu_seconds_total") or [0])[0] > 0)
    openmetrics = httpx.get(f"{server.url}/metrics",
                            headers={"accept": "application/openmetrics-text"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


def test_errors_are_counted_by_class_not_by_what_the_caller_sent(server: Server):
    before = samples(server, "shipyard_errors_total", **{"class": "bad_input"})[0]
    bad = httpx.post(f"{server.url}/v1/deployments/cancer/predict",
                     json={"inputs": [[1.0] * 3]})
    assert bad.status_code == 422
    unknown = httpx.post(f"{server.url}/v1/deployments/no-such-{uuid.uuid4().hex}/predict",
                         json={"inputs": [[1.0]]})
    assert unknown.status_code == 404
    assert "no-such-" not in httpx.get(f"{server.url}/metrics").text  # never a label
    after = samples(server, "shipyard_errors_total", **{"class": "bad_input"})[0]
    assert after >= before + 1
    assert samples(server, "shipyard_requests_total", code="4xx")[0] >= 1


def test_monitor_snapshot_shows_traffic_drift_and_predictions(server: Server, models: Models):
    predict(server, models.X[400:460].tolist())

    def snapshot() -> dict[str, Any] | None:
        snap = httpx.get(f"{server.url}/v1/deployments/cancer/monitor").json()
        variants = [v for v in snap["variants"] if v["version"] == "1"]
        return snap if variants and variants[0]["drift"]["rows"] >= 60 else None

    snap = eventually(snapshot)
    assert snap, "the monitor never saw the traffic"
    assert snap["deployment"] == "cancer"
    assert snap["rollout"]["variants"][0]["name"] == "champion"
    variant = next(v for v in snap["variants"] if v["version"] == "1")
    assert variant["figures"]["latency_p99_ms"] > 0
    assert variant["traffic"] and variant["traffic"][-1]["requests"] >= 1
    assert variant["drift"]["rows"] >= 60
    assert "input[0]" in variant["drift"]["fields"]
    outputs = {p["output"] for p in variant["predictions"]}
    assert "label" in outputs or any(o.startswith("probabilities") for o in outputs)
    for prediction in variant["predictions"]:
        assert len(prediction["labels"]) == len(prediction["live"]) == len(prediction["reference"])


def test_drift_route_and_its_window_parameter(server: Server, models: Models):
    predict(server, models.X[:120].tolist())
    report = httpx.get(f"{server.url}/v1/deployments/cancer/drift", params={"window": 3600})
    assert report.status_code == 200
    body = report.json()
    assert body["window_s"] == 3600
    variant = next(v for v in body["variants"] if v["model_version"] == "1")
    assert variant["report"]["status"] in ("ok", "drift")
    for bad in ("0", "-5", "nan", "abc", "1e12"):
        response = httpx.get(f"{server.url}/v1/deployments/cancer/drift", params={"window": bad})
        assert response.status_code == 400, bad
        assert response.json()["error"]["details"]["field"] == "window"
    assert httpx.post(f"{server.url}/v1/deployments/cancer/drift").status_code == 405
    assert httpx.get(f"{server.url}/v1/deployments/nope/drift").status_code == 404


def test_alerts_route_answers_json(server: Server):
    response = httpx.get(f"{server.url}/v1/deployments/cancer/alerts")
    assert response.status_code == 200
    assert set(response.json()) == {"active", "history"}


def test_feedback_joins_a_served_request(server: Server, models: Models):
    request_id = f"fb-{uuid.uuid4().hex[:12]}"
    answer = predict(server, [models.X[450].tolist()], request_id=request_id).json()
    label = int(answer["predictions"][0]["label"]) if isinstance(
        answer["predictions"][0], dict) else int(answer["predictions"][0])
    url = f"{server.url}/v1/deployments/cancer/feedback"
    stored = httpx.post(url, json={"request_id": request_id, "label": label, "score": 0.9,
                                   "comment": "looks right ✓"})
    assert stored.status_code == 201, stored.text
    assert stored.json()["request_id"] == request_id
    again = httpx.post(url, json={"request_id": request_id, "label": label})
    assert again.status_code == 409
    thumbs = httpx.post(url, json={"request_id": request_id, "thumbs": True})
    assert thumbs.status_code == 201  # human feedback may come on top of a label


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"request_id": "never-served-xyz", "label": 1}, 404, None),
        ({"label": 1}, 400, "request_id"),
        ({"request_id": 12, "label": 1}, 400, "request_id"),
        ({"request_id": "x", "label": 1, "extra": 2}, 400, "extra"),
        ([1, 2, 3], 400, "request_id"),
    ],
)
def test_bad_feedback_is_a_clear_4xx(server: Server, body: object, status: int,
                                     field: str | None):
    response = httpx.post(f"{server.url}/v1/deployments/cancer/feedback", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["hint"]
    if field:
        assert error["details"]["field"] == field


def test_feedback_with_a_label_of_the_wrong_type_is_refused(server: Server, models: Models):
    request_id = f"fb-{uuid.uuid4().hex[:12]}"
    predict(server, [models.X[451].tolist()], request_id=request_id)
    url = f"{server.url}/v1/deployments/cancer/feedback"
    wrong = httpx.post(url, json={"request_id": request_id, "label": {"not": "a label"}})
    assert wrong.status_code == 422, wrong.text
    # Nothing was stored: a correct label is still accepted afterwards.
    assert httpx.post(url, json={"request_id": request_id, "label": 1}).status_code == 201


def test_feedback_needs_json(server: Server):
    response = httpx.post(f"{server.url}/v1/deployments/cancer/feedback", content=b"label=1",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    broken = httpx.post(f"{server.url}/v1/deployments/cancer/feedback", content=b"{",
                        headers={"content-type": "application/json"})
    assert broken.status_code == 400


def test_dashboard_page_is_served(server: Server):
    response = httpx.get(f"{server.url}/ui")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<script" in response.text
    # Self-contained: no script, style or font from anywhere else (closed networks, CSP).
    for attribute in ('src="http', "src='http", 'href="http', "@import", "url(http"):
        assert attribute not in response.text
