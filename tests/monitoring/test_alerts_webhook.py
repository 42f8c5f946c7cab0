"""The webhook sink against a real HTTP server on localhost (http.server in a thread)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shipyard.errors import ConfigError
from shipyard.monitoring.alerts import AlertEvaluator, WebhookSink
from shipyard.routing import AlertRule

SCOPE = {"deployment": "fraud", "variant": "canary", "model_version": "2.0.0"}
SECRET = "/hooks/T000/B000/s3cr3t-t0ken"


class Receiver(ThreadingHTTPServer):
    """Records every request; answers with the next planned status (200 when none left)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.received: list[dict] = []
        self.plan: list[int] = []
        self.delay_s = 0.0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{SECRET}"

    def wait_for(self, n: int, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.01)


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.received.append({"path": self.path, "headers": dict(self.headers),
                                         "body": body})
            status = self.server.plan.pop(0) if self.server.plan else 200
        time.sleep(self.server.delay_s)
        self.send_response(status)
        if status in (301, 302, 307, 308):
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # localhost must be reached directly
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def rule(for_s: float = 0) -> AlertRule:
    return AlertRule(name="errors", metric="error_rate", op=">", threshold=0.05, for_s=for_s)


def fire_and_resolve(ev: AlertEvaluator) -> None:
    ev.evaluate({"error_rate": 0.5}, 100, SCOPE)
    ev.evaluate({"error_rate": 0.5}, 200, SCOPE)
    ev.evaluate({"error_rate": 0.0}, 300, SCOPE)


def test_firing_and_resolved_are_posted_as_json(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url)
    ev = AlertEvaluator([rule(for_s=60)], [sink])
    fire_and_resolve(ev)  # pending, firing, resolved: pending stays in the log only
    assert sink.flush(10)
    assert [json.loads(r["body"])["state"] for r in receiver.received] == ["firing", "resolved"]
    first = receiver.received[0]
    assert first["path"] == SECRET
    assert first["headers"]["Content-Type"] == "application/json"
    body = json.loads(first["body"])
    assert body["rule"] == "errors" and body["scope"] == SCOPE and body["value"] == 0.5
    assert (sink.sent, sink.failed, sink.dropped) == (2, 0, 0)
    sink.close()


def test_the_evaluator_shorthand_posts_too(receiver: Receiver) -> None:
    ev = AlertEvaluator([rule()], webhook=receiver.url)
    ev.evaluate({"error_rate": 0.5}, 0, SCOPE)
    ev.close()  # drains the queue
    assert len(receiver.received) == 1
    assert SECRET not in repr(ev)


def test_server_errors_are_retried_with_backoff(receiver: Receiver) -> None:
    receiver.plan = [503, 500, 200]
    sink = WebhookSink(receiver.url, retries=3, backoff_s=0.01)
    AlertEvaluator([rule()], [sink]).evaluate({"error_rate": 0.5}, 0, SCOPE)
    assert sink.flush(10)
    assert len(receiver.received) == 3
    assert (sink.sent, sink.failed) == (1, 0)


def test_a_refusal_is_not_retried_and_the_log_hides_the_secret(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.plan = [400]
    sink = WebhookSink(receiver.url, retries=3, backoff_s=0.01)
    with caplog.at_level(logging.WARNING, logger="shipyard.alerts"):
        AlertEvaluator([rule()], [sink]).evaluate({"error_rate": 0.5}, 0, SCOPE)
        assert sink.flush(10)
    assert len(receiver.received) == 1
    assert (sink.sent, sink.failed) == (0, 1)
    (line,) = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert "HTTP 400" in line and "127.0.0.1" in line and "s3cr3t" not in line


def test_too_many_requests_is_retried(receiver: Receiver) -> None:
    receiver.plan = [429, 200]
    sink = WebhookSink(receiver.url, retries=2, backoff_s=0.01)
    AlertEvaluator([rule()], [sink]).evaluate({"error_rate": 0.5}, 0, SCOPE)
    assert sink.flush(10)
    assert (len(receiver.received), sink.sent) == (2, 1)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(receiver: Receiver, status: int) -> None:
    receiver.plan = [status]
    sink = WebhookSink(receiver.url, retries=2, backoff_s=0.01)
    AlertEvaluator([rule()], [sink]).evaluate({"error_rate": 0.5}, 0, SCOPE)
    assert sink.flush(10)
    assert [r["path"] for r in receiver.received] == [SECRET]  # /elsewhere never reached
    assert sink.failed == 1


def test_a_slow_receiver_never_blocks_evaluate(receiver: Receiver) -> None:
    receiver.delay_s = 1.0
    sink = WebhookSink(receiver.url, timeout_s=0.2, retries=1, backoff_s=0.01)
    ev = AlertEvaluator([rule()], [sink])
    started = time.perf_counter()
    fire_and_resolve(ev)
    assert time.perf_counter() - started < 0.9  # the receiver takes 1 s per POST
    assert sink.flush(15)
    assert sink.failed == 2  # both timed out, twice each
    receiver.wait_for(4)
    assert len(receiver.received) == 4


def test_an_unreachable_receiver_is_given_up_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", retries=2, backoff_s=0.01)
    with caplog.at_level(logging.WARNING, logger="shipyard.alerts"):
        AlertEvaluator([rule()], [sink]).evaluate({"error_rate": 0.5}, 0, SCOPE)
        assert sink.flush(10)
    assert (sink.sent, sink.failed) == (0, 1)
    assert any("after 3 attempt(s)" in r.getMessage() for r in caplog.records)


def test_the_queue_is_bounded_and_drops_the_oldest(receiver: Receiver) -> None:
    receiver.delay_s = 0.3
    sink = WebhookSink(receiver.url, max_queue=2, retries=0)
    ev = AlertEvaluator([AlertRule(name=f"r{i}", metric="x", for_s=0, threshold=0)
                         for i in range(10)], [sink])
    ev.evaluate({"x": 1.0}, 0, SCOPE)  # ten firing events at once
    assert sink.flush(15)
    assert sink.sent + sink.dropped == 10
    assert sink.dropped >= 7
    names = [json.loads(r["body"])["rule"] for r in receiver.received]
    assert names[-2:] == ["r8", "r9"]  # the newest survive


def test_close_delivers_what_is_queued_and_later_sends_are_ignored(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url)
    ev = AlertEvaluator([AlertRule(name=f"r{i}", metric="x", for_s=0, threshold=0)
                         for i in range(5)], [sink])
    ev.evaluate({"x": 1.0}, 0, SCOPE)
    sink.close()
    assert len(receiver.received) == 5
    ev.evaluate({"x": 0.0}, 1, SCOPE)  # resolved events after close: quietly ignored
    assert len(receiver.received) == 5


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.com/hook", "javascript:alert(1)", "", "hook",
    "http://", "https:///path-only", "gopher://example.com/",
])
def test_only_http_and_https_urls_are_accepted(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        WebhookSink(url)
    assert "http" in info.value.message and info.value.hint


def test_the_repr_never_shows_the_secret_path() -> None:
    sink = WebhookSink("https://hooks.example.com" + SECRET)
    assert repr(sink) == "WebhookSink('https://hooks.example.com', sent=0, failed=0)"
