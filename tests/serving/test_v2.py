"""The V2 codec against the real third-party client: tritonclient builds every request and
parses every response, in JSON and binary modes; then every bad input the decoder refuses."""

from __future__ import annotations

import struct
import timeit
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shipyard.bundle.manifest import FieldSpec, Schema
from shipyard.bundle.schema import to_batch
from shipyard.errors import SchemaError, UserError
from shipyard.serving import v2

http = pytest.importorskip("tritonclient.http")
triton_utils = pytest.importorskip("tritonclient.utils")
Client = http.InferenceServerClient


def infer_input(name: str, array: np.ndarray, binary: bool) -> Any:
    datatype = triton_utils.np_to_triton_dtype(array.dtype)
    tensor = http.InferInput(name, list(array.shape), datatype)
    return tensor.set_data_from_numpy(array, binary_data=binary)


def build(inputs: list[Any], **kwargs: Any) -> tuple[bytes, int | None]:
    """The body and Inference-Header-Content-Length exactly as tritonclient sends them."""
    body, json_size = Client.generate_request_body(inputs, **kwargs)
    return body, json_size


def send(arrays: dict[str, np.ndarray], binary: bool, **kwargs: Any) -> v2.InferRequest:
    inputs = [infer_input(name, array, binary) for name, array in arrays.items()]
    return v2.decode_request(*build(inputs, **kwargs))


def answer(outputs: dict[str, np.ndarray], request: v2.InferRequest, **kwargs: Any) -> Any:
    """Encode a response and parse it with tritonclient, checking the headers on the way."""
    body, headers = v2.encode_response(
        model_name="m",
        model_version="1",
        request_id=request.id,
        outputs=outputs,
        request=request,
        **kwargs,
    )
    length = headers.get(v2.HEADER_LENGTH)
    if length is None:
        assert headers["Content-Type"] == "application/json"
        orjson.loads(body)  # the whole body is JSON
    else:
        assert headers["Content-Type"] == "application/octet-stream"
    return Client.parse_response_body(
        body,
        verbose=False,
        header_length=None if length is None else int(length),
        content_encoding=None,
    )


def raw(doc: dict[str, Any], tail: bytes = b"") -> tuple[bytes, int | None]:
    head = orjson.dumps(doc)
    return head + tail, (len(head) if tail else None)


def fp32(data: Any, shape: list[int] | None = None, datatype: str = "FP32") -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": shape or [2], "data": data}]}


SAMPLES: dict[str, np.ndarray] = {
    "FP32": np.array([[1.5, -2.25, 3e38], [0.0, -0.0, 1e-30]], dtype=np.float32),
    "FP64": np.array([[1.5, -2.25, 1e300]], dtype=np.float64),
    "INT64": np.array([[-(2**63), 2**63 - 1], [0, 7]], dtype=np.int64),
    "BOOL": np.array([True, False, True]),
    "BYTES": np.array([["héllo".encode(), b""], [b"a", b"b c"]], dtype=object),
}


# -- requests from tritonclient ---------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_decodes_what_tritonclient_sends(datatype: str, binary: bool) -> None:
    array = SAMPLES[datatype]
    request = send({"t": array, "other": np.arange(3, dtype=np.int32)}, binary, request_id="r-1")
    tensor = request.inputs[0]
    assert (request.id, tensor.name, tensor.datatype) == ("r-1", "t", datatype)
    assert tensor.shape == list(array.shape) and tensor.data.shape == array.shape
    if datatype == "BYTES" and not binary:  # JSON carries text: elements come back as str
        assert tensor.data.tolist() == [[e.decode() for e in row] for row in array.tolist()]
    else:
        assert tensor.data.dtype == array.dtype
        np.testing.assert_array_equal(tensor.data, array)
    assert request.inputs[1].data.tolist() == [0, 1, 2]


def test_binary_tensors_are_writable_copies() -> None:
    request = send({"x": np.arange(4, dtype=np.float64)}, binary=True)
    data = request.inputs[0].data
    assert data.flags.writeable and data.flags.aligned
    data[0] = 9.0


def test_requested_outputs_and_parameters_are_read() -> None:
    outputs = [http.InferRequestedOutput("b", binary_data=False), http.InferRequestedOutput("a")]
    request = send({"x": SAMPLES["FP64"]}, False, outputs=outputs, parameters={"k": "v"})
    assert [(o.name, o.binary) for o in request.outputs] == [("b", False), ("a", True)]
    assert request.parameters == {"k": "v"}


def test_unknown_fields_are_ignored() -> None:
    doc = {
        "id": "1",
        "extra": {"deep": [1]},
        "parameters": {"custom": 1},
        "inputs": [
            {
                "name": "x",
                "datatype": "INT32",
                "shape": [2],
                "data": [1, 2],
                "new": 1,
                "parameters": {"content_type": "np"},
            }
        ],
        "outputs": [{"name": "y", "later": True, "parameters": {"x": 1}}],
    }
    request = v2.decode_request(*raw(doc))
    assert request.inputs[0].data.tolist() == [1, 2]
    assert request.outputs[0].binary is None


@pytest.mark.parametrize(
    "data",
    [
        [1, 2, 3, 4, 5, 6],
        [[1, 2, 3], [4, 5, 6]],
        [[[1], [2], [3]], [[4], [5], [6]]],
        [[1, 2, 3, 4, 5, 6]],
    ],
)
def test_flat_and_rectangular_nested_data_are_accepted(data: list[Any]) -> None:
    request = v2.decode_request(*raw(fp32(data, [2, 3], "INT64")))
    assert request.inputs[0].data.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_whole_numbers_written_as_floats_fit_integer_tensors() -> None:
    request = v2.decode_request(*raw(fp32([1.0, -3.0], datatype="INT32")))
    assert request.inputs[0].data.dtype == np.int32 and request.inputs[0].data.tolist() == [1, -3]


def test_empty_tensors_are_accepted() -> None:
    request = send({"x": np.zeros((0, 3), dtype=np.float32)}, binary=True)
    assert request.inputs[0].data.shape == (0, 3)
    request = send({"s": np.array([], dtype=object)}, binary=True)
    assert request.inputs[0].data.shape == (0,)


# -- responses parsed by tritonclient ---------------------------------------------------------

OUTPUTS: dict[str, np.ndarray] = {
    "p32": np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32),
    "p64": np.array([1e-300, 2.5]),
    "n": np.array([[-(2**63)], [2**63 - 1]], dtype=np.int64),
    "ok": np.array([True, False]),
    "u": np.array([2**64 - 1], dtype=np.uint64),
    "h": np.array([0.5, 65504], dtype=np.float16),
    "label": np.array(["sí", "no"]),
    "raw": np.array([b"\x00\xff", "text"], dtype=object),
}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_outputs_round_trip_through_tritonclient(binary: bool) -> None:
    outputs = dict(OUTPUTS) if binary else {k: v for k, v in OUTPUTS.items() if k != "raw"}
    wanted = [http.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    request = send({"x": SAMPLES["FP64"]}, False, outputs=wanted, request_id="abc")
    result = answer(outputs, request)
    assert result.get_response()["id"] == "abc"
    for name, array in outputs.items():
        got = result.as_numpy(name)
        assert got.shape == array.shape, name
        if array.dtype.kind in "OU":  # binary gives bytes back, JSON gives text
            items = array.ravel().tolist()
            if binary:
                want = [e if isinstance(e, bytes) else e.encode() for e in items]
            else:
                want = [e if isinstance(e, str) else e.decode() for e in items]
            assert got.ravel().tolist() == want, name
        else:
            assert got.dtype == array.dtype, name
            np.testing.assert_array_equal(got, array)


def test_all_outputs_come_back_binary_when_none_are_named() -> None:
    request = send({"x": SAMPLES["FP64"]}, False)  # tritonclient sets binary_data_output
    assert request.parameters == {"binary_data_output": True}
    result = answer({"a": np.arange(3), "b": np.array(["x"])}, request)
    for name in ("a", "b"):
        assert "binary_data_size" in result.get_output(name)["parameters"]
    assert result.as_numpy("b").tolist() == [b"x"]


def test_per_output_binary_data_overrides_the_request_default() -> None:
    doc = fp32([1, 2]) | {
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
    }
    result = answer({"a": np.arange(2), "b": np.arange(3), "c": np.arange(1)}, _decode(doc))
    assert "data" in result.get_output("a") and "data" not in result.get_output("b")
    assert result.get_output("c") is None  # only the requested outputs come back
    assert result.as_numpy("b").tolist() == [0, 1, 2]


def test_outputs_default_to_json_in_model_order() -> None:
    body, headers = v2.encode_response(
        model_name="m",
        model_version="2",
        request_id=None,
        parameters={"p": 1},
        outputs={"z": np.array(1.5), "a": np.array([[1], [2]], dtype=np.int32)},
        request=_decode(fp32([1, 2])),
    )
    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(body) == {
        "model_name": "m",
        "model_version": "2",
        "parameters": {"p": 1},
        "outputs": [
            {"name": "z", "datatype": "FP64", "shape": [], "data": [1.5]},
            {"name": "a", "datatype": "INT32", "shape": [2, 1], "data": [1, 2]},
        ],
    }


def test_non_finite_floats_survive_binary_and_become_null_in_json() -> None:
    values = np.array([np.nan, np.inf, 1.0], dtype=np.float32)
    out = [http.InferRequestedOutput("v", binary_data=True)]
    result = answer({"v": values}, send({"x": SAMPLES["FP64"]}, False, outputs=out))
    np.testing.assert_array_equal(result.as_numpy("v"), values)
    out = [http.InferRequestedOutput("v", binary_data=False)]
    result = answer({"v": values}, send({"x": SAMPLES["FP64"]}, False, outputs=out))
    assert result.get_output("v")["data"] == [None, None, 1.0]


def test_an_unknown_requested_output_is_a_schema_error_naming_it() -> None:
    request = send({"x": SAMPLES["FP64"]}, False, outputs=[http.InferRequestedOutput("nope")])
    with pytest.raises(SchemaError) as caught:
        answer({"yes": np.arange(2)}, request)
    assert caught.value.details == {"field": "nope", "rule": "output"}
    assert caught.value.status == 422


def test_outputs_v2_cannot_carry_are_refused() -> None:
    with pytest.raises(SchemaError, match="complex"):
        answer({"c": np.array([1j])}, _decode(fp32([1, 2])))
    with pytest.raises(SchemaError) as caught:  # not UTF-8: only binary can carry it
        answer({"b": np.array([b"\xff"], dtype=object)}, _decode(fp32([1, 2])))
    assert caught.value.details["rule"] == "utf8"


# -- bad input ---------------------------------------------------------------------------------


def _decode(doc: dict[str, Any]) -> v2.InferRequest:
    return v2.decode_request(*raw(doc))


def tensor(**fields: Any) -> dict[str, Any]:
    base = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}
    return {"inputs": [base | fields]}


BAD_TENSORS = {
    "count below shape": (tensor(shape=[3]), "shape"),
    "count above shape": (tensor(shape=[1]), "shape"),
    "unknown datatype": (tensor(datatype="FP8"), "datatype"),
    "bfloat16": (tensor(datatype="BF16"), "datatype"),
    "datatype not a string": (tensor(datatype=3), "datatype"),
    "strings for FP32": (tensor(data=["1.0", "2.0"]), "datatype"),
    "true for FP32": (tensor(data=[True, 1.0]), "datatype"),
    "bools for INT64": (tensor(datatype="INT64", data=[True, False]), "datatype"),
    "a bool among ints": (tensor(datatype="INT64", data=[1, True]), "datatype"),
    "a fraction for INT64": (tensor(datatype="INT64", data=[1, 1.5]), "datatype"),
    "numbers for BOOL": (tensor(datatype="BOOL", data=[0, 1]), "datatype"),
    "numbers for BYTES": (tensor(datatype="BYTES", data=["a", 1]), "datatype"),
    "null in data": (tensor(data=[None, 1.0]), "datatype"),
    "objects in data": (tensor(data=[{}, 1.0]), "datatype"),
    "1e39 for FP32": (tensor(data=[1e39, 1.0]), "range"),
    "70000 for FP16": (tensor(datatype="FP16", data=[7e4, 1]), "range"),
    "300 for UINT8": (tensor(datatype="UINT8", data=[300, 1]), "range"),
    "-1 for UINT32": (tensor(datatype="UINT32", data=[-1, 1]), "range"),
    "2**63 for INT64": (tensor(datatype="INT64", data=[2**63, 1]), "range"),
    "1e19 for INT64": (tensor(datatype="INT64", data=[1e19, 1]), "range"),
    "2**31 for INT32": (tensor(datatype="INT32", data=[2**31, 0.0]), "range"),
    "negative dimension": (tensor(shape=[-2]), "shape"),
    "bool dimension": (tensor(shape=[True, 2]), "shape"),
    "float dimension": (tensor(shape=[2.0]), "shape"),
    "shape not a list": (tensor(shape=2), "shape"),
    "too many dimensions": (tensor(shape=[1] * 33), "shape"),
    "absurd dimension": (tensor(shape=[2**62, 0]), "shape"),
    "absurd element count": (tensor(shape=[2**12, 2**12, 2]), "elements"),
    "overflowing product": (tensor(shape=[2**16] * 4), "elements"),
    "data not a list": (tensor(data=1.0), "data"),
    "data and binary size": (tensor(parameters={"binary_data_size": 8}), "data"),
    "neither data nor binary": (tensor(data=None), "data"),
    "ragged rows": (tensor(shape=[3], data=[[1.0, 2.0], [3.0]]), "data"),
    "rows and scalars": (tensor(shape=[3], data=[[1.0, 2.0], 3.0]), "data"),
    "scalar then rows": (tensor(shape=[2], data=[1.0, [2.0, 3.0]]), "data"),
    "ragged deep": (tensor(shape=[3], data=[[[1.0, 2.0]], [[3.0]]]), "data"),
    "output binary_data not a bool": (
        tensor() | {"outputs": [{"name": "x", "parameters": {"binary_data": 1}}]},
        "parameters",
    ),
    "classification": (
        tensor() | {"outputs": [{"name": "x", "parameters": {"classification": 3}}]},
        "classification",
    ),
    "duplicate inputs": ({"inputs": tensor()["inputs"] * 2}, "duplicate"),
    "duplicate outputs": (tensor() | {"outputs": [{"name": "x"}, {"name": "x"}]}, "duplicate"),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_bad_tensors_are_schema_errors_naming_tensor_and_rule(case: str) -> None:
    doc, rule = BAD_TENSORS[case]
    with pytest.raises(SchemaError) as caught:
        _decode(doc)
    assert caught.value.details == {"field": "x", "rule": rule}
    assert caught.value.status == 422 and caught.value.hint
    assert "Tensor 'x'" in caught.value.message


BAD_REQUESTS = {
    "not an object": ([1, 2], "json"),
    "no inputs": ({"outputs": []}, "inputs"),
    "empty inputs": ({"inputs": []}, "inputs"),
    "inputs not a list": ({"inputs": {"name": "x"}}, "inputs"),
    "too many inputs": ({"inputs": [{}] * 129}, "inputs"),
    "input not an object": ({"inputs": [1]}, "inputs"),
    "no name": ({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}, "name"),
    "name not a string": (tensor(name=7), "name"),
    "empty name": (tensor(name=""), "name"),
    "long name": (tensor(name="n" * 129), "name"),
    "outputs not a list": (tensor() | {"outputs": {"name": "y"}}, "outputs"),
    "output without name": (tensor() | {"outputs": [{}]}, "name"),
    "parameters not an object": (tensor() | {"parameters": [1]}, "parameters"),
    "binary_data_output not a bool": (
        tensor() | {"parameters": {"binary_data_output": "yes"}},
        "parameters",
    ),
    "input shared memory": (
        tensor(parameters={"shared_memory_region": "r", "shared_memory_byte_size": 8}),
        "shared_memory",
    ),
    "output shared memory": (
        tensor() | {"outputs": [{"name": "y", "parameters": {"shared_memory_region": "r"}}]},
        "shared_memory",
    ),
    "id not a string": (tensor() | {"id": 5}, "id"),
    "long id": (tensor() | {"id": "i" * 257}, "id"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_malformed_requests_are_user_errors(case: str) -> None:
    doc, rule = BAD_REQUESTS[case]
    with pytest.raises(UserError) as caught:
        v2.decode_request(orjson.dumps(doc))
    assert caught.value.details["rule"] == rule
    assert caught.value.status == 400 and caught.value.hint


@pytest.mark.parametrize(
    "body", [b"", b"{", b'{"inputs": [NaN]}', b"\xff\xfe", b'{"a": Infinity}', b"[1] [2]"]
)
def test_invalid_json_is_a_user_error(body: bytes) -> None:
    with pytest.raises(UserError) as caught:
        v2.decode_request(body)
    assert caught.value.details == {"rule": "json"} and caught.value.status == 400


def binary_doc(datatype: str, shape: list[int], size: Any) -> dict[str, Any]:
    spec = {"name": "x", "datatype": datatype, "shape": shape}
    return {"inputs": [spec | {"parameters": {"binary_data_size": size}}]}


def framed(doc: dict[str, Any], tail: bytes, length: int | None = -1) -> v2.InferRequest:
    head = orjson.dumps(doc)
    return v2.decode_request(head + tail, len(head) if length == -1 else length)


def strings(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


BAD_FRAMES = {
    "size past the body": (binary_doc("FP32", [2], 16), bytes(8)),
    "size below the shape": (binary_doc("FP32", [2], 4), bytes(4)),
    "size above the shape": (binary_doc("FP32", [1], 8), bytes(8)),
    "negative size": (binary_doc("FP32", [0], -4), b""),
    "size not an int": (binary_doc("FP32", [1], 4.0), bytes(4)),
    "bytes: length past the end": (binary_doc("BYTES", [1], 8), struct.pack("<I", 99) + b"abcd"),
    "bytes: too few elements": (binary_doc("BYTES", [3], 10), strings(b"ab", b"")),
    "bytes: truncated prefix": (binary_doc("BYTES", [2], 7), strings(b"a") + b"\x01\x00"),
    "bytes: bytes left over": (binary_doc("BYTES", [1], 8), strings(b"ab") + b"zz"),
    "bytes: huge count": (binary_doc("BYTES", [2**24], 4), strings(b"")),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_binary_sizes_that_do_not_add_up_are_refused(case: str) -> None:
    doc, tail = BAD_FRAMES[case]
    with pytest.raises(SchemaError) as caught:
        framed(doc, tail)
    assert caught.value.details == {"field": "x", "rule": "binary_size"}


def test_bool_bytes_other_than_0_or_1_are_refused() -> None:
    with pytest.raises(SchemaError) as caught:
        framed(binary_doc("BOOL", [2], 2), b"\x01\x02")
    assert caught.value.details["rule"] == "datatype"


def test_trailing_bytes_and_binary_without_header_are_refused() -> None:
    with pytest.raises(UserError) as caught:
        framed(binary_doc("FP32", [1], 4), bytes(5))
    assert caught.value.details == {"rule": "binary_size"}
    with pytest.raises(SchemaError):  # no header: the body is all JSON, no binary part
        framed(binary_doc("FP32", [1], 4), b"", length=None)


@pytest.mark.parametrize("length", [0, -1, 10_000, True])
def test_a_header_length_outside_the_body_is_refused(length: int) -> None:
    body, _ = raw(fp32([1.0, 2.0]))
    with pytest.raises(UserError) as caught:
        v2.decode_request(body, length)
    assert caught.value.details == {"rule": "header_length"}


def test_errors_never_echo_big_input() -> None:
    big = "A" * 100_000
    cases = [
        tensor(data=[big, big]),
        tensor(shape=[big]),
        tensor(datatype=big),
        tensor() | {"id": big},
        {"inputs": big},
        tensor() | {"outputs": big},
    ]
    for doc in cases:
        with pytest.raises(UserError) as caught:
            _decode(doc)
        assert len(str(caught.value)) < 400 and len(orjson.dumps(caught.value.to_dict())) < 600


# -- to_columns -------------------------------------------------------------------------------


def frame_schema() -> Schema:
    return Schema(
        layout="frame",
        inputs=[
            FieldSpec(name="age", dtype="float64"),
            FieldSpec(name="n", dtype="int64"),
            FieldSpec(name="city", dtype="category", categories=["a", "b"]),
            FieldSpec(name="note", dtype="string"),
        ],
    )


def test_frame_layout_takes_one_tensor_per_field() -> None:
    request = send(
        {
            "age": np.array([[30], [40]], dtype=np.int32),
            "n": np.array([1, 2], dtype=np.int64),
            "city": np.array([b"a", b"b"], dtype=object),
            "note": np.array(["x", "y"], dtype=object),
        },
        binary=True,
    )
    frame = to_batch(v2.to_columns(request, frame_schema()), frame_schema())
    expected = {"age": [30.0, 40.0], "n": [1, 2], "city": ["a", "b"], "note": ["x", "y"]}
    pd.testing.assert_frame_equal(frame, pd.DataFrame(expected), check_dtype=False)
    assert frame["age"].dtype == np.float64 and frame["n"].dtype == np.int64


@pytest.mark.parametrize(
    ("arrays", "field", "rule"),
    [
        ({"age": np.array([1.0])}, "n", "required"),
        (
            {
                "age": np.array([1.0]),
                "n": np.array([1]),
                "city": np.array(["a"], dtype=object),
                "note": np.array(["x"], dtype=object),
                "zip": np.array([1]),
            },
            "zip",
            "unknown",
        ),
        (
            {
                "age": np.array([[1.0, 2.0]]),
                "n": np.array([1]),
                "city": np.array(["a"], dtype=object),
                "note": np.array(["x"], dtype=object),
            },
            "age",
            "shape",
        ),
        (
            {
                "age": np.array(["1"], dtype=object),
                "n": np.array([1]),
                "city": np.array(["a"], dtype=object),
                "note": np.array(["x"], dtype=object),
            },
            "age",
            "datatype",
        ),
        (
            {
                "age": np.array([1.0]),
                "n": np.array([2**63], dtype=np.uint64),
                "city": np.array(["a"], dtype=object),
                "note": np.array(["x"], dtype=object),
            },
            "n",
            "range",
        ),
        (
            {
                "age": np.array([1.0]),
                "n": np.array([1]),
                "city": np.array(["a"], dtype=object),
                "note": np.array([b"\xff"], dtype=object),
            },
            "note",
            "utf8",
        ),
    ],
)
def test_frame_layout_refuses_missing_extra_and_wrong_tensors(
    arrays: dict[str, np.ndarray], field: str, rule: str
) -> None:
    with pytest.raises(SchemaError) as caught:
        v2.to_columns(send(arrays, binary=True), frame_schema())
    assert caught.value.details == {"field": field, "rule": rule}


def test_array_layout_takes_one_tensor_of_any_name() -> None:
    schema = Schema(layout="array", inputs=[FieldSpec(name="input", dtype="float64", shape=[3])])
    rows = np.arange(6, dtype=np.int64).reshape(2, 3)
    batch = to_batch(v2.to_columns(send({"whatever": rows}, binary=False), schema), schema)
    assert batch.dtype == np.float64 and batch.tolist() == rows.tolist()
    with pytest.raises(SchemaError) as caught:
        v2.to_columns(send({"input": rows, "extra": rows}, binary=False), schema)
    assert caught.value.details == {"field": "extra", "rule": "unknown"}


def test_floats_reach_integer_fields_only_through_to_batch_checks() -> None:
    schema = Schema(layout="array", inputs=[FieldSpec(name="input", dtype="int64", shape=[2])])
    whole = v2.to_columns(send({"input": np.array([[1.0, 2.0]])}, binary=True), schema)
    assert to_batch(whole, schema).dtype == np.int64
    fraction = v2.to_columns(send({"input": np.array([[1.5, 2.0]])}, binary=True), schema)
    with pytest.raises(SchemaError, match="fractional"):
        to_batch(fraction, schema)
    with pytest.raises(SchemaError) as caught:
        v2.to_columns(send({"input": np.array([[1e30, 2.0]])}, binary=True), schema)
    assert caught.value.details["rule"] == "range"


def test_text_layout_takes_a_bytes_tensor() -> None:
    schema = Schema(layout="text", inputs=[FieldSpec(name="text", dtype="string")])
    for binary in (False, True):
        request = send({"text": np.array([["héllo"], ["wörld"]], dtype=object)}, binary)
        assert to_batch(v2.to_columns(request, schema), schema) == ["héllo", "wörld"]
    with pytest.raises(SchemaError) as caught:
        v2.to_columns(send({"text": np.array([1.0])}, binary=False), schema)
    assert caught.value.details == {"field": "text", "rule": "datatype"}
    with pytest.raises(SchemaError) as caught:
        v2.to_columns(send({"text": np.array([b"\xc3"], dtype=object)}, binary=True), schema)
    assert caught.value.details == {"field": "text", "rule": "utf8"}


# -- metadata ---------------------------------------------------------------------------------


def test_datatypes_match_tritonclient() -> None:
    for name, dtype in v2.DATATYPES.items():
        assert np.dtype(triton_utils.triton_to_np_dtype(name)) == dtype
        assert v2.datatype_of(dtype) == name
    assert v2.datatype_of(np.dtype("U3")) == "BYTES"
    assert v2.datatype_of(np.dtype(complex)) is None


def test_metadata_describes_server_and_model() -> None:
    assert v2.server_metadata("1.0") == {
        "name": "shipyard",
        "version": "1.0",
        "extensions": ["binary_tensor_data"],
    }
    expected = {
        "float32": "FP32",
        "float64": "FP64",
        "int32": "INT32",
        "int64": "INT64",
        "bool": "BOOL",
        "string": "BYTES",
        "category": "BYTES",
    }
    fields = [FieldSpec(name=k, dtype=k, shape=[2] if k == "int32" else []) for k in expected]  # type: ignore[arg-type]
    schema = Schema(inputs=fields, outputs=[FieldSpec(name="p", dtype="float64", shape=[3])])
    meta = v2.model_metadata("iris", ["1", "2"], "sklearn", schema)
    assert (meta["name"], meta["versions"], meta["platform"]) == ("iris", ["1", "2"], "sklearn")
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == list(expected.items())
    assert meta["inputs"][2]["shape"] == [-1, 2] and meta["inputs"][0]["shape"] == [-1]
    assert meta["outputs"] == [{"name": "p", "datatype": "FP64", "shape": [-1, 3]}]


# -- properties -------------------------------------------------------------------------------

NUMERIC = [dtype for name, dtype in v2.DATATYPES.items() if name != "BYTES"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def tensors(draw: st.DrawFn, binary: bool) -> np.ndarray:
    if draw(st.booleans()):
        text = st.binary(max_size=8) if binary else st.text(max_size=8).map(str.encode)
        return draw(hnp.arrays(np.dtype(object), SHAPES, elements=text))
    dtype = draw(st.sampled_from(NUMERIC))
    finite: dict[str, Any] = {"allow_nan": binary, "allow_infinity": binary}
    elements = hnp.from_dtype(dtype, **finite) if dtype.kind == "f" else None
    return draw(hnp.arrays(dtype, SHAPES, elements=elements))


def as_text(array: np.ndarray) -> np.ndarray:
    return np.vectorize(bytes.decode, otypes=[object])(array)


@settings(max_examples=150, deadline=None)
@given(st.booleans().flatmap(lambda b: st.tuples(st.just(b), st.lists(tensors(b), max_size=4))))
def test_any_tensor_round_trips_exactly(case: tuple[bool, list[np.ndarray]]) -> None:
    binary, arrays = case
    arrays = arrays or [np.zeros(2)]  # a request has at least one input
    named = {f"t{i}": array for i, array in enumerate(arrays)}
    request = send(named, binary)
    for tensor_, array in zip(request.inputs, arrays, strict=True):
        if array.dtype == object and not binary:
            assert tensor_.data.tolist() == as_text(array).tolist()
        else:
            assert tensor_.data.dtype == array.dtype and tensor_.data.shape == array.shape
            np.testing.assert_array_equal(tensor_.data, array)
    wanted = [http.InferRequestedOutput(name, binary_data=binary) for name in named]
    result = answer(named, send({"x": np.zeros(1)}, False, outputs=wanted))
    for name, array in named.items():
        got = result.as_numpy(name)
        if array.dtype == object:
            want = array if binary else as_text(array)
            assert got.reshape(array.shape).tolist() == want.tolist()
        else:
            assert got.dtype == array.dtype and got.shape == array.shape
            np.testing.assert_array_equal(got, array)


# -- speed (reported, not asserted) -----------------------------------------------------------


def test_codec_speed_is_reported() -> None:
    row = http.InferInput("input", [1, 30], "FP64")
    row.set_data_from_numpy(np.random.default_rng(0).random((1, 30)), binary_data=False)
    wanted = [http.InferRequestedOutput(n, binary_data=False) for n in ("label", "proba")]
    body, length = build([row], outputs=wanted)
    request = v2.decode_request(body, length)
    outputs = {"label": np.array([1]), "proba": np.array([[0.2, 0.8]])}

    def encode() -> Any:
        return v2.encode_response(
            model_name="m", model_version="1", request_id=None, outputs=outputs, request=request
        )

    def micros(call: Any) -> float:
        # The best of many short runs: a busy machine preempts long ones.
        return min(timeit.repeat(call, number=200, repeat=100)) / 200 * 1e6

    print(
        f"\nv2 codec: orjson.loads {micros(lambda: orjson.loads(body)):.1f} us, "
        f"decode FP64[1,30] {micros(lambda: v2.decode_request(body, length)):.1f} us, "
        f"encode 2 outputs {micros(encode):.1f} us"
    )
