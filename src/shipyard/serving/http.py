"""Minimal ASGI plumbing for the hot path: headers, bounded body reads, responses.

The online server speaks raw ASGI instead of going through a framework's request objects:
per-request work is what decides throughput for small models, and this keeps it to a few
dictionary look-ups (see bench/serving for the measured difference).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

from shipyard.errors import (
    BadJSONError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UserError,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def media_type(scope: Scope) -> bytes:
    raw = header(scope, b"content-type") or b""
    return raw.split(b";", 1)[0].strip().lower()


async def read_body(scope: Scope, receive: Receive, *, limit: int, timeout_s: float) -> bytes:
    """The whole request body, refusing more than `limit` bytes or a client slower than
    `timeout_s` to send it (a slow-loris client must not hold a slot forever)."""
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise UserError(
                "Content-Length is not a number.", hint="Send a valid Content-Length header."
            ) from None
        if size > limit:
            raise PayloadTooLargeError(
                f"The body has {size} bytes; the limit is {limit}.",
                hint="Send fewer rows per request.",
            )
    first = await receive()
    body = first.get("body", b"")
    if not first.get("more_body", False):
        return bytes(body)
    chunks = [body]
    received = len(body)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestTimeoutError("The client went away while sending the body.")
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise PayloadTooLargeError(
                        f"The body exceeds the limit of {limit} bytes.",
                        hint="Send fewer rows per request.",
                    )
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestTimeoutError(
            f"The body took longer than {timeout_s:g}s to arrive.",
            hint="Send the request body in one go.",
        ) from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body:
        raise BadJSONError(
            "The request body is empty.", hint='Send JSON such as {"inputs": [...]}.'
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names the position; it never contains the document itself.
        raise BadJSONError(
            f"The body is not valid JSON: {str(exc)[:160]}.",
            hint="Check the JSON syntax; NaN and Infinity are not JSON.",
        ) from None


async def respond(
    send: Send,
    status: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    content_type: bytes = JSON,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def query_float(
    scope: Scope, name: str, *, default: float | None, low: float, high: float
) -> float | None:
    """One numeric query parameter, range-checked; a bad one is the caller's 400."""
    from urllib.parse import parse_qs

    raw = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    if not raw:
        return default
    try:
        value = float(raw[0])
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # NaN fails both comparisons
        raise UserError(
            f"Query parameter {name!r} must be a number from {low:g} to {high:g}.",
            hint=f"For example ?{name}={low:g}.",
            field=name,
        )
    return value
