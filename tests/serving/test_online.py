"""The online server over real HTTP: native JSON routes, headers, limits and bad input."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from serving_harness import Models, Server, thread_policies


def predict(server: Server, name: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/deployments/{name}/predict", json=body, timeout=30, **kwargs
    )  # type: ignore[arg-type]


def test_records_and_columns_give_the_models_answers(server: Server, models: Models):
    X = models.X[400:410]
    records = {"inputs": [{"input": row} for row in X.tolist()]}
    answer = predict(server, "cancer", records)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == models.cancer_v1.predict(X).tolist()  # type: ignore[attr-defined]
    np.testing.assert_allclose(body["probabilities"], models.cancer_v1.predict_proba(X))  # type: ignore[attr-defined]
    assert body["model_version"] == "1" and body["variant"] == "champion"
    assert answer.headers["x-model-version"] == "1"
    assert answer.headers["x-variant"] == "champion"
    assert answer.headers["x-request-id"] == body["request_id"]
    columns = predict(server, "cancer", {"inputs": {"input": X.tolist()}})
    assert columns.json()["predictions"] == body["predictions"]


def test_frame_model_with_categories(server: Server, models: Models):
    rows = models.frame.iloc[:3].to_dict(orient="records")
    answer = predict(server, "tumours", {"inputs": rows})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 3


def test_request_id_is_echoed_and_a_bad_one_replaced(server: Server, models: Models):
    body = {"inputs": [{"input": models.X[0].tolist()}]}
    echoed = predict(server, "cancer", body, headers={"x-request-id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123" == echoed.json()["request_id"]
    forged = predict(server, "cancer", body, headers={"x-request-id": "x" * 500})
    assert forged.headers["x-request-id"] != "x" * 500


def test_health_listing_openapi_and_docs(server: Server):
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").json()["ready"] is True
    listing = httpx.get(f"{server.url}/v1/deployments").json()
    assert {d["name"] for d in listing} == {"cancer", "tumours", "sleepy", "texts"}
    one = httpx.get(f"{server.url}/v1/deployments/cancer").json()
    assert one["variants"][0]["model"] == "cancer:1"
    doc = httpx.get(f"{server.url}/openapi.json").json()
    schema = doc["paths"]["/v1/deployments/tumours/predict"]["post"]["requestBody"]
    record = schema["content"]["application/json"]["schema"]["properties"]["inputs"]["items"]
    assert record["properties"]["size_band"]["enum"] == ["large", "medium", "small"]
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and b"openapi.json" in docs.content


def test_access_log_lines_carry_the_model_version(server: Server, models: Models):
    predict(
        server,
        "cancer",
        {"inputs": [{"input": models.X[0].tolist()}]},
        headers={"x-request-id": "log-me-1"},
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        entries = [e for e in server.access_log() if e.get("request_id") == "log-me-1"]
        if entries:
            break
        time.sleep(0.05)
    entry = entries[0]
    assert entry["deployment"] == "cancer" and entry["model_version"] == "1"
    assert entry["status"] == 200 and entry["latency_ms"] > 0 and entry["variant"] == "champion"


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b'{"inputs": [', {}, 400, "bad_json"),
        (b"", {}, 400, "bad_json"),
        (b'{"inputs": [{"input": NaN}]}', {}, 400, "bad_json"),
        (b'{"inputs": [{"input": Infinity}]}', {}, 400, "bad_json"),
        (b"[" * 5000 + b"]" * 5000, {}, 400, "bad_json"),
        (b'{"inputs": []}', {}, 422, "schema_violation"),
        (b'{"inputs": "rows"}', {}, 422, "schema_violation"),
        (b'{"rows": []}', {}, 422, "schema_violation"),
        (b'{"inputs": [{"input": [1, 2]}]}', {}, 422, "schema_violation"),
        (b'{"inputs": [{"input": "' + b"1," * 30 + b'"}]}', {}, 422, "schema_violation"),
        (b'{"inputs": [{}]}', {}, 422, "schema_violation"),
        (
            b'{"inputs": [{"input": [1]}]}',
            {"content-type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        (
            b'{"inputs": [{"input": [1]}]}',
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_bad_native_input_gets_a_clear_4xx(server: Server, content, headers, status, code):
    response = httpx.post(
        f"{server.url}/v1/deployments/cancer/predict",
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )
    assert response.status_code == status, response.text
    if code:
        error = error_of(response)
        assert error["code"] == code and error["message"] and error["hint"]
        assert len(response.content) < 2000


@pytest.mark.parametrize(
    ("record", "field", "rule"),
    [
        ({"mean_radius": "big"}, "mean_radius", "type"),
        ({"mean_radius": True}, "mean_radius", "type"),
        ({"mean_radius": None}, "mean_radius", "nullable"),
        ({"size_band": "🦄 huge"}, "size_band", "categories"),
        ({"size_band": 3}, "size_band", "categories"),
        ({"bogus": 1}, "bogus", "unknown"),
        ({"mean_radius": ...}, "mean_radius", "required"),
    ],
)
def test_schema_violations_name_field_row_and_rule(
    server: Server, models: Models, record, field, rule
):
    rows = models.frame.iloc[:2].to_dict(orient="records")
    for key, value in record.items():
        if value is ...:
            del rows[1][key]
        else:
            rows[1][key] = value
    response = predict(server, "tumours", {"inputs": rows})
    assert response.status_code == 422, response.text
    details = error_of(response)["details"]
    assert details["field"] == field and details["rule"] == rule  # type: ignore[index]
    assert details.get("row") in (1, None)  # type: ignore[union-attr]


def test_row_limit_and_huge_body(server: Server, models: Models):
    rows = models.frame.iloc[:1].to_dict(orient="records") * 101
    response = predict(server, "tumours", {"inputs": rows})
    assert response.status_code == 422 and "limit is 100" in response.text
    row = b'{"input": [' + b"1.0," * 29 + b"1.0]},"
    huge = b'{"inputs": [' + row * (50_000_000 // len(row) + 1) + b"{}]}"
    assert len(huge) > 50_000_000
    response = httpx.post(
        f"{server.url}/v1/deployments/cancer/predict",
        content=huge,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert len(response.content) < 1000

    def chunks():  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(huge), 1 << 20):
            yield huge[start : start + (1 << 20)]

    response = httpx.post(
        f"{server.url}/v1/deployments/cancer/predict",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert httpx.get(f"{server.url}/livez").status_code == 200


def test_unknown_deployment_and_route(server: Server):
    response = predict(server, "nope", {"inputs": []})
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert httpx.get(f"{server.url}/nothing/here").status_code == 404
    assert httpx.get(f"{server.url}/v1/deployments/cancer/predict").status_code == 405
    long_name = "x" * 10_000
    response = predict(server, long_name, {"inputs": []})
    assert response.status_code == 404 and len(response.content) < 1000


def test_slow_client_sending_byte_by_byte_gets_408(server: Server):
    body = b'{"inputs": [{"input": [' + b"1.0," * 29 + b"1.0]}]}"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/deployments/cancer/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        started = time.monotonic()
        answer = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            sock.setblocking(False)
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            sock.setblocking(True)
            if answer:
                break
        sock.settimeout(10)
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 10
    assert httpx.get(f"{server.url}/livez").status_code == 200


def test_timeout_uses_the_static_fallback_and_is_counted(server: Server):
    before = httpx.get(f"{server.url}/v1/deployments/sleepy").json()["counters"]
    response = predict(server, "sleepy", {"inputs": [{"delay": 1.0}]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [-1]
    assert response.headers["x-variant"] == "fallback"
    time.sleep(0.9)  # the abandoned call still occupies the model's thread until it returns
    failed = predict(server, "sleepy", {"inputs": [{"delay": -1.0}]})
    assert failed.json()["predictions"] == [-1]
    after = httpx.get(f"{server.url}/v1/deployments/sleepy").json()["counters"]
    assert after["timeouts"] == before["timeouts"] + 1
    assert after["model_failures"] == before["model_failures"] + 1
    assert after["fallbacks"] == before["fallbacks"] + 2
    ok = predict(server, "sleepy", {"inputs": [{"delay": 0.0}]})
    assert ok.json()["predictions"] == [0.0]
    # Prometheus sees them too, on the version that timed out.
    metrics = httpx.get(f"{server.url}/metrics").text
    for family in ("shipyard_timeouts_total", "shipyard_fallbacks_total"):
        lines = [line for line in metrics.splitlines()
                 if line.startswith(family + "{") and 'deployment="sleepy"' in line]
        assert lines and float(lines[0].rsplit(" ", 1)[1]) >= 1, family


def test_overload_answers_429_with_retry_after_and_stays_responsive(server: Server):
    import concurrent.futures

    def slow() -> httpx.Response:
        return predict(server, "sleepy", {"inputs": [{"delay": 0.25}]})

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(slow) for _ in range(12)]
        time.sleep(0.05)
        live = httpx.get(f"{server.url}/livez", timeout=2)
        answers = [f.result() for f in futures]
    assert live.status_code == 200
    statuses = [a.status_code for a in answers]
    assert 429 in statuses and 200 in statuses, statuses
    rejected = next(a for a in answers if a.status_code == 429)
    assert rejected.headers["retry-after"] == "1"
    assert error_of(rejected)["code"] == "overloaded"


def test_errors_never_echo_the_input(server: Server):
    secret = "SECRET-" + "z" * 5000
    response = predict(server, "tumours", {"inputs": [{secret: 1}]})
    assert response.status_code == 422
    assert secret not in response.text and len(response.content) < 2000
    assert json.loads(response.content)["error"]["code"] == "schema_violation"


def test_unicode_and_emoji_in_a_text_field(server: Server):
    texts = ["olá 👋", "日本語のテキスト", "emoji 🚢⚓🌊", "zero\u200bwidth", "RTL \u202e txet"]
    response = predict(server, "texts", {"inputs": [{"text": t} for t in texts]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [len(t) for t in texts]
    wrong = predict(server, "texts", {"inputs": [{"text": 42}]})
    assert wrong.status_code == 422
    assert error_of(wrong)["details"] == {"field": "text", "row": 0, "rule": "type"}
    broken = httpx.post(f"{server.url}/v1/deployments/texts/predict",
                        content=b'{"inputs": [{"text": "\xff\xfe"}]}',
                        headers={"content-type": "application/json"})
    assert broken.status_code == 400


def test_model_failure_log_line_does_not_quote_the_model_error(server: Server):
    predict(server, "sleepy", {"inputs": [{"delay": -1.0}]})
    time.sleep(0.3)
    text = server.log.read_text(errors="replace")
    assert "sleepy:1 failed: RuntimeError" in text
    assert "asked to fail" not in text


def _start_and_stop(app: Any, started: Callable[[], list[str]]) -> list[str]:
    """Run `app`'s ASGI lifespan, startup then shutdown, in a loop of its own; returns the
    messages it sent, with what `started()` returns right after the startup completed."""
    import asyncio

    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return next(messages)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            sent.extend(started())

    asyncio.run(app({"type": "lifespan"}, receive, send))
    return sent


def test_a_server_started_with_the_collector_paused_turns_it_back_on(settings):
    """`shipyard serve` pauses the cyclic collector while it loads (a faster cold start); the
    app resumes it once started, and freezes what start-up loaded."""
    import gc

    from shipyard.serving.server import build_app

    app = build_app(settings, resume_gc=True)
    gc.disable()
    try:
        sent = _start_and_stop(app, lambda: [f"enabled={gc.isenabled()}"])
    finally:
        gc.enable()
        gc.unfreeze()
    assert sent == ["lifespan.startup.complete", "enabled=True", "lifespan.shutdown.complete"]


def test_the_monitor_learns_when_each_revision_began_answering(models: Models):
    """The rollout controller opens a step's evidence window only once this server answers
    with the step's revision (tests/registry/test_rollout_window.py)."""
    from shipyard.serving.server import build_app
    from shipyard.settings import Settings

    app = build_app(Settings.load({"home": models.home}, environ={}), ["cancer"])
    monitor = app.monitor
    assert monitor is not None
    seen: dict[str, tuple[float | None, float | None]] = {}
    before = time.time()

    def note() -> list[str]:
        for name, live in app.fleet.deployments.items():
            seen[name] = (monitor.live_since(name, live.revision),
                          monitor.live_since(name, live.revision + 1))
        return []

    _start_and_stop(app, note)
    assert list(seen) == ["cancer"]
    (now, later), = seen.values()
    assert now is not None and before <= now <= time.time() and later == math.inf, seen


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="a Linux scheduling policy")
def test_every_server_thread_runs_under_the_batch_policy(server: Server, models: Models):
    """Set on the event loop's thread before any other starts, so the model threads, the
    record writers and the access log inherit it (docs/serving.md, one core, many threads)."""
    answer = predict(server, "cancer", {"inputs": [{"input": models.X[0].tolist()}]})
    assert answer.status_code == 200
    assert thread_policies(server.proc.pid) == {os.SCHED_BATCH}


def test_request_ids_are_letters_ordered_by_time_and_unique():
    """Ids of ours sort by time (records append at the end of their index), stay letters
    only (never mistaken for a number worth redacting) and do not collide within a
    millisecond."""
    from shipyard.serving.online import REQUEST_ID, new_request_id

    now = 1_790_000_000.1234
    same_ms = {new_request_id(now) for _ in range(50_000)}
    assert len(same_ms) == 50_000
    for rid in list(same_ms)[:100]:
        assert len(rid) == 24 and rid.isalpha() and rid.islower()
        assert REQUEST_ID.match(rid.encode())
    later = [new_request_id(now + step) for step in (0.001, 0.5, 3600.0, 10 * 365 * 86400.0)]
    assert max(same_ms) < later[0] < later[1] < later[2] < later[3]
