"""uvicorn's httptools protocol with one change: a response's head and body leave in one write.

uvicorn writes the status line and headers as soon as the app sends `http.response.start`, and
the body when it sends `http.response.body`: two system calls and two TCP segments for every
answer, where the client then wakes once for the head and again for the body. shipyard always
sends the two messages back to back, so the head waits for the body (or for the response's
end, for a HEAD request or a status without a body) and both go out together. Everything else
(parsing, keep-alive, pipelining, flow control, limits, shutdown) is uvicorn's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_INTERIM = b"HTTP/1.1 1"  # 100 Continue: the client waits for it before sending its body


class OneWrite:
    """A transport that holds a response's first write, its head, until its next one.

    An interim 100 Continue goes straight out (the client waits for it before sending its
    body), and so does every later write of a response, after the head it carries along.
    `next_response` and `close` send a head still held.
    """

    __slots__ = ("_fresh", "_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._fresh = True  # the next write starts a response

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data = self._head + data
            self._head = None
        elif self._fresh and not data.startswith(_INTERIM):
            self._fresh = False
            self._head = data
            return
        self._transport.write(data)

    def next_response(self) -> None:
        self._fresh = True
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():  # a client that left gets nothing more
                self._transport.write(head)

    def close(self) -> None:
        self.next_response()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteProtocol(HttpToolsProtocol):
    """`uvicorn.Config(http=OneWriteProtocol)`: uvicorn's protocol writing through `OneWrite`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Flow control keeps the real transport (pausing reads, watching the write buffer);
        # the request cycles, which write the answers, get the one that holds heads.
        self.transport = OneWrite(transport)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        # A response whose body was empty (HEAD, 204, 304) wrote nothing after its head.
        self.transport.next_response()  # type: ignore[attr-defined]
        super().on_response_complete()
