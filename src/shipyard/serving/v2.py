"""The Open Inference Protocol V2 (KServe v2, Triton, MLServer) over REST: a pure codec.

A request body is one JSON object::

    {"id": "r1", "parameters": {...},
     "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [...]}],
     "outputs": [{"name": "y", "parameters": {"binary_data": true}}]}

`data` holds the elements row-major, flat or nested. With the binary tensor data extension the
JSON is only the head of the body (its length is the `Inference-Header-Content-Length` HTTP
header) and raw tensors follow in input order; such an input says `"parameters":
{"binary_data_size": N}` and has no `data`. Raw tensors are little-endian without padding,
BOOL is one byte, and a BYTES element is a 4-byte little-endian length and then the bytes.

A response mirrors it: `{"model_name", "model_version", "id", "outputs": [...]}`. An output goes
back raw when its requested output says `binary_data`, or else when the request parameter
`binary_data_output` is true (tritonclient sets it when it names no outputs), as Triton does.

Decoding trusts nothing: sizes are checked before anything is allocated, shapes and element
counts are capped (Triton CVE-2026-24146 / -24173), and every error names the tensor and the
rule broken but never echoes the data. A tensor that breaks a rule is a `SchemaError` (422);
a malformed envelope is a `UserError` (400), and so is a document nested deeper than
`MAX_DEPTH`; a string over `schema.MAX_STRING_CHARS` characters is a `PayloadTooLargeError`
(413). `schema.to_batch` then judges the values against the model's schema (dtype ranges,
nulls, categories).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import orjson

from shipyard.bundle.manifest import FieldSpec, Schema
from shipyard.bundle.schema import INT_LIMITS, bounded, check_json_limits
from shipyard.errors import SchemaError, UserError

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_ELEMENTS = 1 << 24  # per tensor
MAX_DIMS = 32
MAX_TENSORS = 128  # inputs, and requested outputs, per request
MAX_NAME = 128  # also bounds how much of a caller's name an error message repeats
MAX_ID = 256
# A request is an object > "inputs" list > tensor object > up to MAX_DIMS nested data lists.
MAX_DEPTH = MAX_DIMS + 3

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    **{f"UINT{8 * size}": np.dtype(f"u{size}") for size in (1, 2, 4, 8)},
    **{f"INT{8 * size}": np.dtype(f"i{size}") for size in (1, 2, 4, 8)},
    **{f"FP{8 * size}": np.dtype(f"f{size}") for size in (2, 4, 8)},
    "BYTES": np.dtype(object),
}
# On the wire numbers are little-endian; BOOL travels as bytes that must be 0 or 1.
_WIRE = {n: np.dtype("u1") if n == "BOOL" else d.newbyteorder("<") for n, d in DATATYPES.items()}
_BY_KIND = {(d.kind, d.itemsize): n for n, d in DATATYPES.items() if n != "BYTES"}
_FLOAT_MAX = {"FP16": float(np.finfo(np.float16).max), "FP32": float(np.finfo(np.float32).max)}
_JSON_KINDS = {"BOOL": frozenset({bool}), "BYTES": frozenset({str})}
_NUMBERS = frozenset({int, float})
_JSON_NAMES = {bool: "true/false", str: "string", dict: "object", type(None): "null"}
_U32 = struct.Struct("<I")
# What to do about each broken rule: the hint every error of that rule carries.
_HINTS = {
    "header_length": f"Set {HEADER_LENGTH} to the JSON head's length, or leave it out.",
    "json": "Send one JSON object; NaN and Infinity need the binary tensor data extension.",
    "inputs": f"Send 'inputs': a list of 1 to {MAX_TENSORS} objects with name, datatype, "
    "shape and data.",
    "outputs": f"Send 'outputs': a list of at most {MAX_TENSORS} objects, each named once.",
    "name": f"Name each tensor with a string of 1 to {MAX_NAME} characters.",
    "id": f"Send a string id of at most {MAX_ID} characters, or none.",
    "parameters": "Send parameters as a JSON object; binary_data flags as true or false.",
    "shared_memory": "Shared memory is off; send the tensor in the body, as JSON or binary.",
    "classification": "The classification extension is off; request the plain output.",
    "duplicate": "Send each tensor once.",
    "datatype": f"Use one of {', '.join(DATATYPES)}, and values that fit it.",
    "shape": f"Send at most {MAX_DIMS} non-negative dimensions and as many values as they hold.",
    "elements": f"Send at most {MAX_ELEMENTS} elements per tensor; split the batch.",
    "data": "Send either 'data' (flat row-major, or equal-length nested rows) or binary data.",
    "binary_size": f"Make {HEADER_LENGTH} plus every binary_data_size add up to the body, "
    "each matching its shape and datatype.",
    "range": "Send values the datatype can hold, or use a wider datatype.",
    "utf8": "Send BYTES elements as UTF-8 text, or ask for the output with binary_data.",
    "unknown": "Send only the tensors the model metadata lists.",
    "required": "Send every input the model metadata lists.",
    "output": "Request only outputs the model has, or none for all of them.",
}


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray  # BYTES: an object array of str (from JSON) or bytes (from binary)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: follow the request's binary_data_output
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


def datatype_for(spec: FieldSpec) -> str:
    """The V2 datatype that carries a schema field: float32 -> FP32, string -> BYTES, ..."""
    if spec.dtype in ("string", "category"):
        return "BYTES"
    return _BY_KIND[np.dtype(spec.dtype).kind, np.dtype(spec.dtype).itemsize]


def datatype_of(dtype: np.dtype[Any]) -> str | None:
    """The V2 datatype of a NumPy dtype; None for kinds V2 cannot carry (complex, dates)."""
    return "BYTES" if dtype.kind in "OUS" else _BY_KIND.get((dtype.kind, dtype.itemsize))


def _clip(value: Any) -> str:
    """A short view of a caller's value, built without reading all of it."""
    if type(value) is list:  # a shape, usually: show numbers, name anything else
        value = [v if type(v) in (int, float, bool) else type(v).__name__ for v in value[:9]]
    elif type(value) is dict:
        value = "{...}"
    text = repr(value[:41] if type(value) is str else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bad(name: str, rule: str, message: str) -> SchemaError:
    return SchemaError(f"Tensor {name!r}: {message}", hint=_HINTS[rule], field=name, rule=rule)


def _malformed(rule: str, message: str) -> UserError:
    return UserError(message, hint=_HINTS[rule], rule=rule)


# -- decoding ---------------------------------------------------------------------------------


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse and check a V2 inference request; `header_length` is the binary extension header."""
    view = memoryview(body)
    if header_length is None:
        head, blob = view, view[:0]
    elif type(header_length) is int and 0 < header_length <= len(view):
        head, blob = view[:header_length], view[header_length:]
    else:
        raise _malformed(
            "header_length",
            f"Got {HEADER_LENGTH} {_clip(header_length)} for a body of {len(view)} bytes.",
        )
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        # orjson's message gives the position, never the text around it.
        raise _malformed(
            "json",
            f"The request is not valid JSON: {exc.msg}, line {exc.lineno} column {exc.colno}.",
        ) from None
    if type(doc) is not dict:
        raise _malformed("json", f"Got a JSON {type(doc).__name__}. Expected an object.")
    # Nesting (400) and string length (413) before anything walks the document further.
    if not bounded(head, MAX_DEPTH):
        check_json_limits(doc, max_depth=MAX_DEPTH)
    inputs = doc.get("inputs")
    if type(inputs) is not list or not 0 < len(inputs) <= MAX_TENSORS:
        got = f"{len(inputs)} inputs" if type(inputs) is list else f"inputs {_clip(inputs)}"
        raise _malformed("inputs", f"Got {got}. Expected 1 to {MAX_TENSORS} input tensors.")
    tensors: list[Tensor] = []
    offset = 0
    for item in inputs:
        tensor, offset = _decode_input(item, blob, offset)
        tensors.append(tensor)
    _once([t.name for t in tensors], "inputs")
    if offset != len(blob):
        raise _malformed("binary_size", f"Got {len(blob) - offset} bytes after the last tensor.")
    parameters = _parameters(doc.get("parameters"), "request")
    if type(parameters.get("binary_data_output", False)) is not bool:
        raise _malformed("parameters", "Got a binary_data_output that is not true or false.")
    request_id = doc.get("id")
    if request_id is not None and (type(request_id) is not str or len(request_id) > MAX_ID):
        raise _malformed("id", f"Got id {_clip(request_id)}.")
    return InferRequest(request_id, tensors, _decode_outputs(doc.get("outputs")), parameters)


def _name(item: Any, where: str) -> str:
    if type(item) is not dict:
        raise _malformed(where, f"Got a {type(item).__name__} in {where}. Expected an object.")
    name = item.get("name")
    if type(name) is not str or not 0 < len(name) <= MAX_NAME:
        raise _malformed("name", f"Got the tensor name {_clip(name)} in {where}.")
    return name


def _once(names: list[str], where: str) -> None:
    if len(names) > 1 and len(set(names)) != len(names):
        twice = next(n for i, n in enumerate(names) if n in names[:i])
        raise _bad(twice, "duplicate", f"the name appears twice in {where}.")


def _parameters(value: Any, owner: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise _malformed("parameters", f"Got parameters of {owner!r} that are not an object.")
    if "shared_memory_region" in value:
        # Shared memory lets a caller aim the server at memory (Triton CVE-2024-0088): off.
        raise _malformed("shared_memory", f"Got a shared memory region for {owner!r}.")
    return value


def _decode_input(item: Any, blob: memoryview, offset: int) -> tuple[Tensor, int]:
    name = _name(item, "inputs")
    datatype = item.get("datatype")
    if type(datatype) is not str or datatype not in DATATYPES:
        raise _bad(name, "datatype", f"got the unknown datatype {_clip(datatype)}.")
    shape = item.get("shape")
    count = _count(name, shape)
    parameters = _parameters(item.get("parameters"), name)
    size = parameters.get("binary_data_size")
    data = item.get("data")
    if (size is None) == (data is None):
        raise _bad(name, "data", "send exactly one of 'data' and binary_data_size.")
    if size is None:
        array = _from_json(name, datatype, data, shape, count)
    else:
        left = len(blob) - offset
        if type(size) is not int or not 0 <= size <= left:
            raise _bad(
                name,
                "binary_size",
                f"binary_data_size {_clip(size)} does not fit the {left} bytes left in the body.",
            )
        array = _from_binary(name, datatype, blob[offset : offset + size], count)
        offset += size
    return Tensor(name, datatype, shape, array.reshape(shape), parameters), offset


def _count(name: str, shape: Any) -> int:
    if type(shape) is not list or len(shape) > MAX_DIMS:
        raise _bad(name, "shape", f"got the shape {_clip(shape)}.")
    count = 1
    for dim in shape:
        if type(dim) is not int or not 0 <= dim <= MAX_ELEMENTS:
            raise _bad(name, "shape", f"got the dimension {_clip(dim)}.")
        count *= dim
        # Checked at every step, so no product ever grows past the cap (Triton CVE-2026-24173).
        if count > MAX_ELEMENTS:
            raise _bad(name, "elements", f"the shape holds more than {MAX_ELEMENTS} elements.")
    return count


def _flatten(name: str, data: list[Any]) -> list[Any]:
    # One nesting level per pass, each pass a C-level loop; every level must be rectangular.
    while data and type(data[0]) is list:
        if set(map(type, data)) != {list} or len(set(map(len, data))) != 1:
            raise _bad(name, "data", "the nested data is not rectangular.")
        data = list(chain.from_iterable(data))
    return data


def _from_json(name: str, datatype: str, data: Any, shape: list[int], count: int) -> np.ndarray:
    if type(data) is not list:
        raise _bad(name, "data", f"got {type(data).__name__} data. Expected a JSON array.")
    flat = _flatten(name, data)
    if len(flat) != count:
        raise _bad(name, "shape", f"got {len(flat)} values for the shape {_clip(shape)}.")
    # The set of element types, built at C speed, judges every element without a Python
    # loop: it is what catches a bool among numbers, which NumPy would take as 1.
    kinds = set(map(type, flat))
    allowed = _JSON_KINDS.get(datatype, _NUMBERS)
    if not kinds <= allowed:
        if list in kinds:
            raise _bad(name, "data", "the nested data is not rectangular.")
        odd = ", ".join(sorted(_JSON_NAMES.get(k, k.__name__) for k in kinds - allowed))
        raise _bad(name, "datatype", f"got {odd} values for {datatype}.")
    dtype = DATATYPES[datatype]
    if dtype.kind in "Ob":
        return np.array(flat, dtype=dtype)
    if dtype.kind == "f":
        array = np.array(flat, dtype=np.float64)
        limit = _FLOAT_MAX.get(datatype)
        if limit is None:  # FP64: orjson already refuses what overflows a double
            return array
        if count and float(np.abs(array).max()) > limit:
            raise _bad(name, "range", f"a value overflows {datatype}.")
        return array.astype(dtype)
    if float in kinds:  # integers written as 2.0 pass; 2.5 does not
        array = np.array(flat, dtype=np.float64)
        if (array != np.trunc(array)).any():
            raise _bad(name, "datatype", f"got a number with a fraction for {datatype}.")
        info = np.iinfo(dtype)
        if count and (array.min() < info.min or array.max() >= float(info.max) + 1):
            raise _bad(name, "range", f"a value overflows {datatype}.")
        return array.astype(dtype)
    try:
        return np.array(flat, dtype=dtype)
    except OverflowError:  # NumPy refuses Python ints outside the dtype
        raise _bad(name, "range", f"a value overflows {datatype}.") from None


def _from_binary(name: str, datatype: str, chunk: memoryview, count: int) -> np.ndarray:
    if datatype == "BYTES":
        return _unpack_bytes(name, chunk, count)
    wire = _WIRE[datatype]
    if len(chunk) != count * wire.itemsize:
        raise _bad(
            name,
            "binary_size",
            f"got {len(chunk)} bytes for {count} {datatype} "
            f"elements, which take {count * wire.itemsize}.",
        )
    array = np.frombuffer(chunk, dtype=wire)
    if datatype == "BOOL" and (array > 1).any():
        raise _bad(name, "datatype", "got a BOOL byte other than 0 or 1.")
    # A copy: aligned, writable (models may write in place) and in native byte order.
    return array.astype(DATATYPES[datatype])


def _unpack_bytes(name: str, chunk: memoryview, count: int) -> np.ndarray:
    raw, pos, end = bytes(chunk), 0, len(chunk)
    # Each element takes at least its 4-byte length: checked before allocating for `count`.
    if count * 4 <= end:
        out = np.empty(count, dtype=object)
        for index in range(count):
            if pos + 4 > end:
                break
            (size,) = _U32.unpack_from(raw, pos)
            pos += 4 + size
            if pos > end:
                break
            out[index] = raw[pos - size : pos]
        else:
            if pos == end:
                return out
    raise _bad(name, "binary_size", f"{end} bytes do not hold {count} BYTES elements.")


def _decode_outputs(value: Any) -> list[RequestedOutput]:
    if value is None:
        return []
    if type(value) is not list or len(value) > MAX_TENSORS:
        raise _malformed("outputs", f"Got outputs {_clip(value)}.")
    outputs: list[RequestedOutput] = []
    for item in value:
        name = _name(item, "outputs")
        parameters = _parameters(item.get("parameters"), name)
        binary = parameters.get("binary_data")
        if binary is not None and type(binary) is not bool:
            raise _bad(name, "parameters", "binary_data is not true or false.")
        if parameters.get("classification"):
            raise _bad(name, "classification", "asks for classification.")
        outputs.append(RequestedOutput(name, binary, parameters))
    _once([o.name for o in outputs], "outputs")
    return outputs


# -- encoding ---------------------------------------------------------------------------------


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: dict[str, np.ndarray],
    request: InferRequest,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers, honouring the requested outputs and format."""
    default = request.parameters.get("binary_data_output") is True
    wanted = [(name, default) for name in outputs]
    if request.outputs:
        wanted = []
        for want in request.outputs:
            if want.name not in outputs:
                have = ", ".join(outputs)
                raise _bad(want.name, "output", f"is not an output of the model ({have}).")
            wanted.append((want.name, default if want.binary is None else want.binary))
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in wanted:
        array = np.asarray(outputs[name])
        datatype = datatype_of(array.dtype)
        if datatype is None:  # a model bug, refused like check_outputs refuses one
            message = f"the model returned {array.dtype}; cast it in the postprocessing code."
            raise _bad(name, "datatype", message)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            if datatype == "BYTES":
                raw = _pack(array)
            else:
                raw = array.astype(_WIRE[datatype], copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif datatype == "BYTES":
            entry["data"] = _texts(name, array)
        else:
            # orjson writes a contiguous native array itself, far faster than tolist().
            entry["data"] = np.ascontiguousarray(array, array.dtype.newbyteorder("=")).reshape(-1)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = entries
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return b"".join([head, *blobs]), headers


def _texts(name: str, array: np.ndarray) -> list[str]:
    items: list[Any] = array.reshape(-1).tolist()
    try:
        return [x if type(x) is str else x.decode() if type(x) is bytes else str(x) for x in items]
    except UnicodeDecodeError:
        raise _bad(name, "utf8", "an element is not UTF-8 text.") from None


def _pack(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1).tolist():
        raw = item if type(item) is bytes else str(item).encode()
        parts += (_U32.pack(len(raw)), raw)
    return b"".join(parts)


# -- schema mapping ---------------------------------------------------------------------------


def to_columns(request: InferRequest, schema: Schema) -> Any:
    """Map the tensors to what `shipyard.bundle.schema.to_batch` takes for this schema:
    an array ("array"), a dict of columns ("frame") or a list of strings ("text")."""
    names = [spec.name for spec in schema.inputs]
    by_name = {tensor.name: tensor for tensor in request.inputs}
    if schema.layout != "frame":
        spec = schema.inputs[0]
        if len(request.inputs) > 1:  # a lone tensor may have any name
            extra = next(n for n in by_name if n != spec.name)
            raise _bad(extra, "unknown", f"the model takes one tensor, {spec.name!r}.")
        tensor = request.inputs[0]
        if schema.layout == "text" or spec.dtype in ("string", "category"):
            return _strings(spec, _rows(spec, tensor))
        return _numbers(spec, tensor)
    for name in by_name:
        if name not in names:
            raise _bad(name, "unknown", "the tensor is not a model input.")
    columns: dict[str, Any] = {}
    for spec in schema.inputs:
        if spec.name not in by_name:
            raise _bad(spec.name, "required", "the input is missing.")
        tensor = _rows(spec, by_name[spec.name])
        if spec.dtype not in ("string", "category"):
            columns[spec.name] = _numbers(spec, tensor)
        elif tensor.datatype == "BYTES":
            columns[spec.name] = _strings(spec, tensor)
        else:  # numbers for a category field: to_batch checks them against the categories
            columns[spec.name] = tensor.data.tolist()
    return columns


def _rows(spec: FieldSpec, tensor: Tensor) -> Tensor:
    """A scalar field takes shape [n] or [n, 1]; the latter is squeezed to [n]."""
    shape = tensor.shape
    if spec.shape or len(shape) == 1:
        return tensor
    if len(shape) == 2 and shape[1] == 1:
        return Tensor(tensor.name, tensor.datatype, shape[:1], tensor.data.reshape(-1))
    raise _bad(tensor.name, "shape", f"got the shape {_clip(shape)}. Expected [n] or [n, 1].")


def _strings(spec: FieldSpec, tensor: Tensor) -> list[str]:
    if tensor.datatype != "BYTES":
        raise _bad(tensor.name, "datatype", f"got {tensor.datatype} for text {spec.name!r}.")
    try:
        return [x if type(x) is str else x.decode() for x in tensor.data.reshape(-1).tolist()]
    except UnicodeDecodeError:
        raise _bad(tensor.name, "utf8", "an element is not UTF-8 text.") from None


def _numbers(spec: FieldSpec, tensor: Tensor) -> np.ndarray:
    data = tensor.data
    kind = data.dtype.kind
    if kind == "O":
        raise _bad(tensor.name, "datatype", f"got BYTES for {spec.dtype} {spec.name!r}.")
    if kind in "iu" and spec.dtype.startswith("float"):
        return data.astype(spec.dtype)
    limits = INT_LIMITS.get(spec.dtype)
    if limits is not None and kind in "iuf" and data.size:
        # A tensor rule ("range"); to_batch would refuse the same values as "dtype_range".
        low, high = limits
        if kind == "f":  # compared as doubles: FP16 cannot even hold the limits
            with np.errstate(invalid="ignore"):  # a signalling NaN turns quiet, no warning
                wide = data.astype(np.float64, copy=False)
            outside = (wide >= float(high) + 1) | (wide < low)
        else:
            outside = (data > high) | (data < low)
        if outside.any():
            raise _bad(tensor.name, "range", f"a value overflows {spec.dtype}.")
    return data


# -- metadata ---------------------------------------------------------------------------------


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "shipyard", "version": version, "extensions": ["binary_tensor_data"]}


def model_metadata(name: str, versions: list[str], platform: str, schema: Schema) -> dict[str, Any]:
    """Inputs and outputs with their V2 datatypes; -1 marks the batch dimension."""

    def tensor(spec: FieldSpec) -> dict[str, Any]:
        return {"name": spec.name, "datatype": datatype_for(spec), "shape": [-1, *spec.shape]}

    inputs, outputs = [tensor(s) for s in schema.inputs], [tensor(s) for s in schema.outputs]
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": inputs,
        "outputs": outputs,
    }
