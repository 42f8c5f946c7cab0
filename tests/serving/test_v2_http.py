"""The Open Inference Protocol V2 over real HTTP, driven by the real `tritonclient[http]`."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from serving_harness import Models, Server
from tritonclient.utils import InferenceServerException


@pytest.fixture
def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def test_server_and_model_metadata(client: triton.InferenceServerClient):
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "shipyard"
    assert client.is_model_ready("cancer")
    assert client.is_model_ready("cancer", "1")
    meta = client.get_model_metadata("cancer")
    assert meta["name"] == "cancer" and meta["versions"] == ["1"]
    assert meta["inputs"][0]["datatype"] == "FP64" and meta["inputs"][0]["shape"] == [-1, 30]


@pytest.mark.parametrize("binary", [False, True])
def test_infer_in_json_and_binary_modes(client, models: Models, binary: bool):
    X = models.X[400:408]
    tensor = triton.InferInput("input", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("label", binary_data=binary),
        triton.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = client.infer("cancer", [tensor], outputs=outputs, request_id="triton-1")
    np.testing.assert_array_equal(result.as_numpy("label"), models.cancer_v1.predict(X))  # type: ignore[attr-defined]
    np.testing.assert_allclose(result.as_numpy("probabilities"), models.cancer_v1.predict_proba(X))  # type: ignore[attr-defined]
    response = result.get_response()
    assert response["model_name"] == "cancer" and response["model_version"] == "1"
    assert response["id"] == "triton-1"


def test_infer_with_version_and_default_outputs(client, models: Models):
    X = models.X[:2].astype(np.float32)
    tensor = triton.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer("cancer", [tensor], model_version="1")
    assert result.as_numpy("label").shape == (2,)


def test_frame_model_takes_one_tensor_per_field(client, models: Models):
    frame = models.frame.iloc[:3]
    inputs = []
    for column in frame.columns:
        values = frame[column].to_numpy()
        if values.dtype == object:
            tensor = triton.InferInput(column, [3], "BYTES")
            tensor.set_data_from_numpy(values.astype(np.object_))
        else:
            tensor = triton.InferInput(column, [3], "FP64")
            tensor.set_data_from_numpy(values.astype(np.float64))
        inputs.append(tensor)
    result = client.infer("tumours", inputs)
    assert result.as_numpy("label").shape == (3,)


def test_unknown_model_and_version(client):
    with pytest.raises(InferenceServerException, match="nope"):
        client.get_model_metadata("nope")
    assert not client.is_model_ready("cancer", "99")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 30], "datatype": "FP64", "data": [1.0] * 29}
                ]
            },
            422,
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 30], "datatype": "FP128", "data": [1.0] * 30}
                ]
            },
            422,
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 30], "datatype": "FP64", "data": ["a"] * 30}
                ]
            },
            422,
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 29], "datatype": "FP64", "data": [1.0] * 29}
                ]
            },
            422,
        ),
        ({"inputs": []}, 400),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 30], "datatype": "FP64", "data": [1.0] * 30}
                ],
                "outputs": [{"name": "nope"}],
            },
            422,
        ),
    ],
)
def test_bad_v2_tensors_get_4xx(server: Server, body, status):
    response = httpx.post(f"{server.url}/v2/models/cancer/infer", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert isinstance(error["error"], str) and error["code"]  # the V2 protocol's error shape


def test_unknown_request_fields_are_ignored(server: Server, models: Models):
    body = {
        "id": "x",
        "extra": {"anything": 1},
        "inputs": [
            {
                "name": "input",
                "shape": [1, 30],
                "datatype": "FP64",
                "data": models.X[0].tolist(),
                "also": "ignored",
            }
        ],
    }
    response = httpx.post(f"{server.url}/v2/models/cancer/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "1"
