from __future__ import annotations

import io
import json
import time

from shipyard.serving.accesslog import OWN_ID, AccessLog
from shipyard.serving.online import new_request_id


def logged(*entries: tuple[object, ...]) -> list[dict[str, object]]:
    stream = io.StringIO()
    log = AccessLog(stream)
    for entry in entries:
        log.record(*entry)
    log.close()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def entry(request_id: str, path: str = "/v1/deployments/d/predict") -> tuple[object, ...]:
    return (request_id, "POST", path, 200, 1.5, "d", "main", "1", 1, "127.0.0.1", None)


def test_the_servers_own_ids_are_written_as_made():
    ids = [new_request_id(time.time()) for _ in range(200)]
    # The log knows the server's ids by their shape: if new_request_id changes it, this fails
    # (an id no longer matching would only be scanned, and pass the check below unchanged).
    assert all(OWN_ID.fullmatch(i) for i in ids)
    assert [line["request_id"] for line in logged(*(entry(i) for i in ids))] == ids


def test_a_callers_id_and_path_are_redacted():
    lines = logged(entry("jane.doe@example.com"), entry("x", "/v1/deployments/4111111111111111"))
    assert lines[0]["request_id"] == "[EMAIL]"
    assert lines[1]["path"] == "/v1/deployments/[CARD]"


def test_observers_get_every_entry_in_bulk_with_its_context_never_logged():
    stream = io.StringIO()
    log = AccessLog(stream)
    got: list[tuple[object, ...]] = []
    log.observe(got.extend)
    for i in range(50):
        log.record(*entry(f"req-{i}"), {"secret": "jane.doe@example.com"})
    log.drain()  # on this thread, now: what a monitor's flush does
    assert [e[1] for e in got] == [f"req-{i}" for i in range(50)]
    assert all(e[-1] == {"secret": "jane.doe@example.com"} for e in got)
    log.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 50 and "jane" not in stream.getvalue()
    assert set(lines[0]) == {"time", "request_id", "method", "path", "status", "latency_ms",
                             "deployment", "variant", "model_version", "rows", "client"}


def test_a_disabled_log_still_hands_entries_to_its_observers():
    stream = io.StringIO()
    log = AccessLog(stream, enabled=False)
    log.record(*entry("before"), None)  # no observer yet: dropped, as before
    got: list[tuple[object, ...]] = []
    log.observe(got.extend)
    log.record(*entry("after"), {"key": 1})
    log.close()  # the thread's last drain
    assert [e[1] for e in got] == ["after"] and stream.getvalue() == ""


def test_a_failing_observer_neither_stops_the_log_nor_the_others():
    stream = io.StringIO()
    log = AccessLog(stream)
    got: list[tuple[object, ...]] = []

    def broken(entries: list[tuple[object, ...]]) -> None:
        raise RuntimeError("observer bug")

    log.observe(broken)
    log.observe(got.extend)
    log.record(*entry("a"), None)
    time.sleep(3 * 0.05)  # a few of the thread's ticks
    log.record(*entry("b"), None)
    log.close()
    assert [e[1] for e in got] == ["a", "b"]
    assert [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == ["a", "b"]
