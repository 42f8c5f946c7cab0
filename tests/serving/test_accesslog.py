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
