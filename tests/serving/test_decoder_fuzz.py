"""A hypothesis fuzzer over the request decoders: whatever comes in, only a 4xx comes out.

Both protocols are driven from the bytes of the body to the batch the model would get:

- native: `http.parse_json` -> `native.decode` -> `schema.to_batch`
- V2: `v2.decode_request` (JSON, and the binary tensor data extension) -> `v2.to_columns` ->
  `schema.to_batch`

for a frame schema with every dtype (nullable or not, shaped, bounded, categorical), an array
schema and a text schema. Requests are drawn for the schema (its field names, plausible types,
edge values: bools, numeric strings, values past int32/int64/float32, huge Python integers,
NaN and infinities in binary tensors) and now and then anything at all, so most examples get
through the envelope and into `to_batch`. The only exceptions allowed out are `ShipyardError`s
with a 4xx status whose JSON body serialises and stays short (it never echoes the input back).
The suite turns warnings into errors, so a silent NumPy cast ("invalid value encountered in
cast") fails too. Each test runs a bounded number of examples without a deadline.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.bundle.manifest import FieldSpec, Schema
from shipyard.bundle.schema import to_batch
from shipyard.errors import ShipyardError
from shipyard.serving import native, v2
from shipyard.serving.http import parse_json

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FRAME = Schema(
    layout="frame",
    inputs=[
        FieldSpec(name="f32", dtype="float32"),
        FieldSpec(name="f64", dtype="float64", nullable=True, minimum=-1e6, maximum=1e6),
        FieldSpec(name="i32", dtype="int32", minimum=0),
        FieldSpec(name="i64", dtype="int64", nullable=True),
        FieldSpec(name="flag", dtype="bool", nullable=True),
        FieldSpec(name="city", dtype="category", categories=["a", "b", 1, True]),
        FieldSpec(name="note", dtype="string", nullable=True),
        FieldSpec(name="vec", dtype="float32", shape=[2]),
    ],
)
ARRAY = Schema(
    layout="array", inputs=[FieldSpec(name="input", dtype="int32", shape=[3], nullable=True)]
)
ANY_WIDTH = Schema(layout="array", inputs=[FieldSpec(name="input", dtype="float32", shape=[-1])])
TEXT = Schema(layout="text", inputs=[FieldSpec(name="text", dtype="string")])
SCHEMAS = [FRAME, ARRAY, ANY_WIDTH, TEXT]
NAMES = sorted({spec.name for schema in SCHEMAS for spec in schema.inputs})
schemas = st.sampled_from(SCHEMAS)


def only_4xx(call: Callable[[], Any]) -> None:
    """Run one request through: it answers, or raises a 4xx ShipyardError; nothing else."""
    try:
        call()
    except ShipyardError as exc:
        assert 400 <= exc.status < 500, (exc.status, str(exc))
        body = orjson.dumps(exc.to_dict())  # an error body always serialises (no NaN, no bytes)
        assert len(body) < 4000, body[:200]


def body_of(document: Any) -> bytes:
    # json, not orjson: it writes integers beyond 64 bits, which orjson must then refuse or
    # read as floats.
    return json.dumps(document).encode()


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.integers(min_value=1, max_value=one_in)) == 1


# -- values -----------------------------------------------------------------------------------

NUMBER_EDGES = [
    0,
    1,
    -1,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**64 - 1,
    2**64,
    10**30,
    0.5,
    -2.5,
    1e19,
    -1e19,
    2.0**63,
    3.4028235e38,
    3.5e38,
    1e39,
    -1e39,
    1e308,
    5e-324,
]
OTHER_EDGES = [True, False, None, "", "1.5", "a", "b", "NaN", "\x00\u202e", [], {}]
numbers = st.one_of(
    st.sampled_from(NUMBER_EDGES),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(
    numbers, st.sampled_from(OTHER_EDGES), st.booleans(), st.none(), st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=20,
)


def plausible(spec: FieldSpec, wild: bool) -> st.SearchStrategy[Any]:
    """Values of about the right type for `spec`, edges included; in a wild request, now and
    then anything, and shaped values of another shape."""
    if spec.dtype == "bool":
        one: st.SearchStrategy[Any] = st.booleans()
    elif spec.dtype == "category":
        one = st.sampled_from([*(spec.categories or []), "c", 2, 1.0, False])
    elif spec.dtype == "string":
        one = st.text(max_size=30)
    else:
        small = st.integers(min_value=0, max_value=100)
        one = st.one_of(small, small, small, numbers)
    if spec.nullable:
        one = st.one_of(one, one, one, st.none())
    if wild:
        one = st.one_of(one, one, st.sampled_from([True, None, "1.5", 1.5, 2**40, 1e39]))
    if spec.shape:
        width = max(spec.shape[0], 1) if spec.shape[0] != -1 else 3
        one = st.lists(one, min_size=width, max_size=width)
        if wild:
            one = st.one_of(one, one, st.lists(one, max_size=width + 1), one)
    return st.one_of(one, one, one, json_values) if wild else one


# -- native -----------------------------------------------------------------------------------


@st.composite
def native_documents(draw: st.DrawFn, schema: Schema) -> Any:
    if sometimes(draw, 10):
        return draw(json_values)
    wild = sometimes(draw, 2)
    rows = draw(st.integers(min_value=0 if wild else 1, max_value=4))
    inputs: Any
    if wild and sometimes(draw, 5):
        inputs = draw(json_values)
    elif schema.layout == "frame" and draw(st.booleans()):
        inputs = {
            spec.name: draw(st.lists(plausible(spec, wild), min_size=rows, max_size=rows))
            for spec in schema.inputs
        }
    elif schema.layout == "frame" or (wild and sometimes(draw, 4)):
        inputs = [
            {spec.name: draw(plausible(spec, wild)) for spec in schema.inputs} for _ in range(rows)
        ]
    else:  # array rows, or texts: the bare list
        inputs = [draw(plausible(schema.inputs[0], wild)) for _ in range(rows)]
    if schema.layout == "frame" and isinstance(inputs, dict | list) and inputs:
        target = inputs if isinstance(inputs, dict) else inputs[0]
        if isinstance(target, dict) and wild and sometimes(draw, 5):  # a field too many or few
            target.pop(schema.inputs[0].name, None) if draw(st.booleans()) else target.update(zzz=1)
    document: dict[str, Any] = {"inputs": inputs}
    if sometimes(draw, 5):
        document["parameters"] = draw(json_values)
    if sometimes(draw, 20):
        document[draw(st.sampled_from(["id", "extra"]))] = draw(json_values)
    return document


def native_path(body: bytes, schema: Schema) -> None:
    inputs = native.decode(parse_json(body))
    to_batch(inputs, schema, max_rows=100)


@FUZZ
@given(case=schemas.flatmap(lambda schema: st.tuples(st.just(schema), native_documents(schema))))
def test_native_decoder_answers_any_json_with_a_4xx_at_worst(case: tuple[Schema, Any]) -> None:
    schema, document = case
    body = body_of(document)
    only_4xx(lambda: native_path(body, schema))


def mangled(raw: bytes) -> st.SearchStrategy[bytes]:
    """A valid body cut short, or with a few bytes replaced: broken JSON, broken UTF-8."""
    return st.tuples(st.integers(0, max(0, len(raw) - 1)), st.binary(max_size=3)).map(
        lambda cut: raw[: cut[0]] + cut[1] + raw[cut[0] + 1 :]
    )


@FUZZ
@given(
    case=schemas.flatmap(
        lambda schema: st.tuples(
            st.just(schema),
            st.one_of(
                st.binary(max_size=200),
                native_documents(schema).map(body_of).flatmap(mangled),
            ),
        )
    )
)
def test_native_decoder_answers_any_bytes_with_a_4xx_at_worst(case: tuple[Schema, bytes]) -> None:
    schema, body = case
    only_4xx(lambda: native_path(body, schema))


# -- V2 ---------------------------------------------------------------------------------------

DATATYPE_NAMES = sorted(v2.DATATYPES)


def element_values(datatype: str, wild: bool) -> st.SearchStrategy[Any]:
    """JSON elements for a V2 datatype: mostly in range, sometimes at the edges and past them;
    in a wild request, now and then of another type."""
    if datatype == "BOOL":
        right: st.SearchStrategy[Any] = st.booleans()
    elif datatype == "BYTES":
        right = st.text(max_size=10)
    elif datatype.startswith("FP"):
        right = st.floats(min_value=-1e4, max_value=1e4)
        right = st.one_of(right, right, right, st.floats(allow_nan=False, allow_infinity=False))
    else:
        right = st.integers(min_value=0, max_value=100)
        right = st.one_of(right, right, right, st.integers(-(2**65), 2**65))
    edgy = st.one_of(right, right, right, right, right, st.sampled_from(NUMBER_EDGES))
    return st.one_of(edgy, edgy, edgy, scalars) if wild else edgy


@st.composite
def tensor_heads(draw: st.DrawFn, schema: Schema, wild: bool) -> list[tuple[dict[str, Any], int]]:
    """(tensor without its data, element count) for the schema's inputs, in some order; in a
    wild request tensors go missing, get odd names, shapes and datatypes, or come extra."""
    rows = draw(st.integers(min_value=0 if wild else 1, max_value=4))
    specs = list(schema.inputs)
    if len(specs) > 1:
        specs = draw(st.permutations(specs))
        if wild and sometimes(draw, 4):
            specs = specs[: draw(st.integers(0, len(specs) - 1))]
    heads = []
    for spec in specs:
        shape = [rows, *[3 if d == -1 else d for d in spec.shape]]
        if not spec.shape and draw(st.booleans()):
            shape = [rows, 1]
        datatype, name = v2.datatype_for(spec), spec.name
        if wild and sometimes(draw, 3):
            shape = draw(st.lists(st.integers(min_value=-2, max_value=5), max_size=4))
        if sometimes(draw, 3 if wild else 8):  # another datatype: INT32 for a float, ...
            datatype = draw(st.sampled_from(DATATYPE_NAMES))
        if wild and sometimes(draw, 4):
            name = draw(st.text(max_size=8))
        count = math.prod(shape) if all(d >= 0 for d in shape) else 1
        heads.append(({"name": name, "datatype": datatype, "shape": shape}, count))
    if wild and sometimes(draw, 4):
        heads.append(({"name": "zzz", "datatype": "FP32", "shape": [rows]}, rows))
    return heads


@st.composite
def v2_documents(draw: st.DrawFn, schema: Schema) -> Any:
    if sometimes(draw, 10):
        return draw(json_values)
    wild = sometimes(draw, 3)
    inputs = []
    for head, count in draw(tensor_heads(schema, wild)):
        data: Any = draw(
            st.lists(element_values(head["datatype"], wild), min_size=count, max_size=count)
        )
        shape = head["shape"]
        if len(shape) == 2 and shape[1] > 0 and draw(st.booleans()):  # nested rows
            data = [data[i * shape[1] : (i + 1) * shape[1]] for i in range(shape[0])]
        if wild and sometimes(draw, 5):
            data = draw(json_values)
        tensor = {**head, "data": data}
        if wild and sometimes(draw, 5):
            tensor["parameters"] = draw(json_values)
        if wild and sometimes(draw, 8):
            del tensor[draw(st.sampled_from(sorted(tensor)))]
        inputs.append(tensor)
    document: dict[str, Any] = {"inputs": inputs}
    if sometimes(draw, 10):
        document["id"] = draw(st.one_of(st.text(max_size=10), json_values))
    if wild and sometimes(draw, 4):
        document["parameters"] = draw(json_values)
    if sometimes(draw, 10):
        document["outputs"] = draw(
            st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"name": st.text(max_size=5)}, optional={"parameters": json_values}
                    ),
                    max_size=3,
                ),
                json_values,
            )
        )
    return document


def v2_path(body: bytes, header_length: int | None, schema: Schema) -> None:
    request = v2.decode_request(body, header_length)
    to_batch(v2.to_columns(request, schema), schema, max_rows=100)


@FUZZ
@given(case=schemas.flatmap(lambda schema: st.tuples(st.just(schema), v2_documents(schema))))
def test_v2_decoder_answers_any_json_with_a_4xx_at_worst(case: tuple[Schema, Any]) -> None:
    schema, document = case
    body = body_of(document)
    only_4xx(lambda: v2_path(body, None, schema))


@st.composite
def binary_requests(draw: st.DrawFn, schema: Schema) -> tuple[bytes, int | None]:
    """A JSON head naming binary tensors, then their raw bytes: well-formed, or not quite."""
    heads: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    wild = sometimes(draw, 3)
    for head, count in draw(tensor_heads(schema, wild)):
        datatype = head["datatype"]
        if datatype == "BYTES":
            items = draw(
                st.lists(
                    st.one_of(st.text(max_size=6).map(str.encode), st.binary(max_size=6)),
                    min_size=count,
                    max_size=count,
                )
            )
            raw = b"".join(struct.pack("<I", len(item)) + item for item in items)
        else:
            size = count * v2.DATATYPES[datatype].itemsize
            # Random bytes: NaN, infinities, huge and tiny values, BOOL bytes other than 0/1.
            raw = draw(st.binary(min_size=size, max_size=size))
        if wild and sometimes(draw, 6):
            raw = raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=3))
        size_field: Any = len(raw) if not (wild and sometimes(draw, 6)) else draw(scalars)
        heads.append({**head, "parameters": {"binary_data_size": size_field}})
        blobs.append(raw)
    head = body_of({"inputs": heads})
    body = head + b"".join(blobs)
    header_length: int | None = len(head)
    if wild and sometimes(draw, 4):
        header_length = draw(st.one_of(st.none(), st.integers(-5, len(body) + 5)))
    return body, header_length


@FUZZ
@given(case=schemas.flatmap(lambda schema: st.tuples(st.just(schema), binary_requests(schema))))
def test_v2_binary_extension_answers_any_tensor_with_a_4xx_at_worst(
    case: tuple[Schema, tuple[bytes, int | None]],
) -> None:
    schema, (body, header_length) = case
    only_4xx(lambda: v2_path(body, header_length, schema))


@FUZZ
@given(
    case=schemas.flatmap(
        lambda schema: st.tuples(
            st.just(schema),
            st.one_of(
                st.tuples(
                    st.binary(max_size=300),
                    st.one_of(st.none(), st.integers(min_value=-10, max_value=400)),
                ),
                binary_requests(schema).flatmap(
                    lambda request: st.tuples(mangled(request[0]), st.just(request[1]))
                ),
            ),
        )
    )
)
def test_v2_decoder_answers_any_bytes_with_a_4xx_at_worst(
    case: tuple[Schema, tuple[bytes, int | None]],
) -> None:
    schema, (body, header_length) = case
    only_4xx(lambda: v2_path(body, header_length, schema))
