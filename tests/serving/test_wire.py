"""A response's head and body leave in one write (shipyard.serving.wire).

The protocol is driven by uvicorn itself, with a transport that records what it is asked to
send (the socket's own transport cannot say how many writes made up what arrived); then the
shared real server answers the cases that depend on the order of writes over a socket.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from serving_harness import Server
from uvicorn.config import Config
from uvicorn.server import ServerState

from shipyard.serving.wire import OneWrite, OneWriteProtocol

BODY = b'{"ok":true}'


class Recording:
    """The transport's side that the protocol sees: what it wrote, whether it closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/fail":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"100")]})
        raise RuntimeError("the app broke after its head")
    status = 204 if scope["path"] == "/empty" else 200
    body = b"" if status == 204 else BODY
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def exchange(*chunks: bytes) -> Recording:
    """Feed `chunks` to a fresh connection, one at a time, letting the app answer between."""
    config = Config(app, http=OneWriteProtocol, lifespan="off", log_level="critical",
                    server_header=False, date_header=False)
    config.load()
    protocol = OneWriteProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Recording()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        protocol.data_received(chunk)
        for _ in range(20):
            await asyncio.sleep(0)
    return transport


def request(method: str = "GET", path: str = "/", body: bytes = b"", *extra: bytes) -> bytes:
    head = [f"{method} {path} HTTP/1.1".encode(), b"host: test", *extra]
    if body:
        head.append(b"content-length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def test_a_response_leaves_in_one_write() -> None:
    sent = asyncio.run(exchange(request()))
    assert len(sent.writes) == 1
    assert sent.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert sent.writes[0].endswith(b"\r\n\r\n" + BODY)


def test_a_response_without_a_body_still_leaves() -> None:
    for method, path, status in (("HEAD", "/", b"200"), ("GET", "/empty", b"204")):
        sent = asyncio.run(exchange(request(method, path)))
        assert len(sent.writes) == 1, method
        assert sent.writes[0].startswith(b"HTTP/1.1 " + status)
        assert sent.writes[0].endswith(b"\r\n\r\n")  # nothing after the head


def test_100_continue_is_not_held_back() -> None:
    """The client waits for the interim answer before it sends its body."""
    body = b'{"x": 1}'
    head = request("POST", "/", b"", b"expect: 100-continue", b"content-length: %d" % len(body))
    sent = asyncio.run(exchange(head, body))
    assert sent.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(sent.writes) == 2
    assert sent.writes[1].startswith(b"HTTP/1.1 200") and sent.writes[1].endswith(BODY)


def test_pipelined_requests_get_one_write_each_in_order() -> None:
    sent = asyncio.run(exchange(request(path="/a") + request("HEAD", "/b") + request(path="/c")))
    assert [w.split(b"\r\n", 1)[0] for w in sent.writes] == [b"HTTP/1.1 200 OK"] * 3
    assert [w.endswith(BODY) for w in sent.writes] == [True, False, True]


def test_a_held_head_goes_out_before_the_connection_closes() -> None:
    """An app that fails after its head: the client still gets what was sent, then EOF."""
    sent = asyncio.run(exchange(request(path="/fail")))
    assert sent.closed
    assert len(sent.writes) == 1 and sent.writes[0].startswith(b"HTTP/1.1 200")


def test_a_malformed_request_is_answered_and_closed() -> None:
    sent = asyncio.run(exchange(b"NOT HTTP AT ALL\r\n\r\n"))
    assert sent.closed
    assert len(sent.writes) == 1 and sent.writes[0].startswith(b"HTTP/1.1 400")


def test_one_write_passes_everything_else_to_the_transport() -> None:
    transport = Recording()
    wrapper = OneWrite(transport)  # type: ignore[arg-type]
    assert wrapper.get_extra_info("peername") == ("127.0.0.1", 50000)
    wrapper.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.writes == []
    wrapper.write(b"a")
    wrapper.write(b"b")  # a later write of the same response goes straight out
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\na", b"b"]
    wrapper.next_response()
    wrapper.write(b"HTTP/1.1 200 OK\r\n\r\n")
    wrapper.close()
    assert transport.writes[-1] == b"HTTP/1.1 200 OK\r\n\r\n" and transport.closed


def test_a_head_held_for_a_client_that_left_is_dropped() -> None:
    """uvicorn closes the transport when the connection is lost: nothing is written then."""
    transport = Recording()
    wrapper = OneWrite(transport)  # type: ignore[arg-type]
    wrapper.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.closed = True  # the connection was lost before the body
    wrapper.close()
    assert transport.writes == []


# -- over a real socket, against the shared server ---------------------------------------------


def read_responses(
    sock: socket.socket, count: int, heads_only: tuple[int, ...] = ()
) -> list[tuple[bytes, bytes]]:
    """`count` complete responses (status line, body) from a keep-alive connection; the
    answers numbered in `heads_only` answer HEAD requests (no body, whatever the length)."""
    data, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed after {len(answers)} answers"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
        size = int(fields.get(b"content-length", b"0"))
        if len(answers) in heads_only:
            size = 0
        if lines[0].startswith(b"HTTP/1.1 100"):
            answers.append((lines[0], b""))
            continue
        while len(data) < size:
            data += sock.recv(65536)
        answers.append((lines[0], data[:size]))
        data = data[size:]
    return answers


@pytest.fixture
def connection(server: Server) -> Any:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        yield sock


def test_pipelined_requests_over_a_socket(connection: socket.socket) -> None:
    get = b"GET /livez HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    head = b"HEAD /readyz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    connection.sendall(get + head + get)
    answers = read_responses(connection, 3, heads_only=(1,))
    assert answers == [(b"HTTP/1.1 200 OK", b'{"live":true}'), (b"HTTP/1.1 200 OK", b""),
                       (b"HTTP/1.1 200 OK", b'{"live":true}')]


def test_expect_100_continue_over_a_socket(connection: socket.socket) -> None:
    body = b'{"inputs": []}'
    connection.sendall(
        b"POST /v1/deployments/cancer/predict HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\nexpect: 100-continue\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    interim = read_responses(connection, 1)
    assert interim[0][0] == b"HTTP/1.1 100 Continue"
    connection.sendall(body)
    status, answer = read_responses(connection, 1)[0]
    assert status.startswith(b"HTTP/1.1 422")  # an empty inputs list, named as such
    assert b"empty batch" in answer
