"""A diagnostic, not a peer: the floor's handler on a hand-written HTTP/1.1 protocol.

No ASGI and no uvicorn: an asyncio.Protocol on uvloop feeds httptools (the parser uvicorn
uses) and writes each answer straight to the transport, with no scope, message dicts or task
per request. It answers exactly as floor.py does. `--thread` runs the model on one worker
thread, handed over as shipyard's batcher does (a SimpleQueue put, then
`call_soon_threadsafe` back), which is what shipyard must do ("model code never blocks the
event loop"). Keep-alive only: no chunked bodies, limits or timeouts, so it measures what the
HTTP layer costs, and is no server to use.

    python lean_http.py --port P --model MODEL.joblib [--thread]
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import threading
from typing import Any, cast

import httptools
import joblib
import numpy as np
import orjson
import uvloop

HEAD = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


class Handler:
    def __init__(self, model_path: str) -> None:
        self.model = joblib.load(model_path)
        self.classes = self.model.classes_

    def answer(self, body: bytes) -> tuple[int, bytes]:
        try:
            rows = np.asarray(orjson.loads(body)["inputs"], dtype=np.float64)
            proba = self.model.predict_proba(rows)
            return 200, orjson.dumps({"label": self.classes[proba.argmax(axis=1)].tolist(),
                                      "probabilities": proba.tolist()})
        except Exception as exc:  # as the floor: any failure is the caller's
            return 400, orjson.dumps({"error": str(exc)})


class ModelThread:
    """One worker thread; answers come back on the loop through call_soon_threadsafe."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.jobs: queue.SimpleQueue[tuple[bytes, asyncio.Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._work, daemon=True).start()

    def _work(self) -> None:
        while True:
            body, future = self.jobs.get()
            result = self.handler.answer(body)
            future.get_loop().call_soon_threadsafe(future.set_result, result)


class Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, worker: ModelThread | None) -> None:
        self.handler, self.worker = handler, worker
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send((400, b"{}"))
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        if self.worker is None:
            self._send(self.handler.answer(body))
            return
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda done: self._send(done.result()))
        self.worker.jobs.put((body, future))

    def _send(self, answer: tuple[int, bytes]) -> None:
        status, payload = answer
        if self.transport is not None and not self.transport.is_closing():
            reason = b"OK" if status == 200 else b"Bad Request"
            self.transport.write(HEAD % (status, reason, len(payload)) + payload)


async def serve(port: int, handler: Handler, worker: ModelThread | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(handler, worker), "127.0.0.1", port,
                                      backlog=2048)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--thread", action="store_true")
    args = parser.parse_args()
    handler = Handler(args.model)
    uvloop.run(serve(args.port, handler, ModelThread(handler) if args.thread else None))


if __name__ == "__main__":
    main()
