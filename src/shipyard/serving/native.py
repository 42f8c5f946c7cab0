"""The native JSON protocol: `POST /v1/deployments/{name}/predict`.

Request: `{"inputs": [{field: value, ...}, ...]}` (records) or `{"inputs": {field: [...]}}`
(columns), optionally `"parameters": {...}`. Response: `predictions` (the primary output),
every other output under its own name (`probabilities`, ...), `model_version`, `variant` and
`request_id`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from shipyard.bundle.schema import bounded, check_json_limits
from shipyard.errors import SchemaError
from shipyard.runtimes.base import Outputs
from shipyard.runtimes.model import PRIMARY

ALLOWED_KEYS = {"inputs", "parameters", "id"}


def decode(document: Any, raw: bytes | None = None) -> Any:
    """The `inputs` of a predict request, refusing other shapes with a pointed message.

    `document` is the decoded JSON body. It may nest at most `MAX_JSON_DEPTH` (32) arrays and
    objects (400, rule "depth") and hold no key or string over `MAX_STRING_CHARS` (1,000,000)
    characters (413, rule "string_length"); `schema.to_batch` then judges every value."""
    if raw is None or not bounded(raw):
        check_json_limits(document)
    if not isinstance(document, dict):
        raise SchemaError(
            "The body must be a JSON object with an 'inputs' key.",
            hint='Send {"inputs": [{"field": value}]}.',
            rule="body",
        )
    unknown = [k for k in document if k not in ALLOWED_KEYS]
    if unknown:
        raise SchemaError(
            f"Unknown top-level key {str(unknown[0])[:64]!r}.",
            hint="Send only 'inputs' (and optionally 'parameters').",
            field=str(unknown[0])[:64],
            rule="unknown",
        )
    if "inputs" not in document:
        raise SchemaError(
            "The body has no 'inputs'.",
            hint='Send {"inputs": [{"field": value}]}.',
            field="inputs",
            rule="required",
        )
    inputs = document["inputs"]
    if not isinstance(inputs, list | dict):
        raise SchemaError(
            "'inputs' must be a list of records or an object of columns.",
            hint='Send {"inputs": [{"field": value}]}.',
            field="inputs",
            rule="type",
        )
    return inputs


def encode(outputs: Outputs, *, model_version: str, variant: str, request_id: str) -> bytes:
    body: dict[str, Any] = {}
    primary = next((name for name in PRIMARY if name in outputs), None)
    if primary is None:
        primary = next(iter(outputs))
    body["predictions"] = outputs[primary]
    for name, values in outputs.items():
        if name != primary:
            body[name] = values
    body["model_version"] = model_version
    body["variant"] = variant
    body["request_id"] = request_id
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)


def _default(value: Any) -> Any:
    # Arrays orjson cannot serialise natively (object dtype, non-contiguous slices).
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError
