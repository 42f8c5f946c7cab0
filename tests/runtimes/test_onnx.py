from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shipyard.errors import BundleError, ManifestError, RuntimeUnavailableError, SchemaError
from shipyard.runtimes.base import detect
from shipyard.runtimes.onnx import ONNXRuntime


@pytest.fixture(scope="module")
def iris_model(iris):
    x, y, _ = iris
    model = LogisticRegression(max_iter=500).fit(x, y)
    proto = to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False})
    return model, proto


def test_classifier_round_trips_in_a_fresh_process(tmp_path, iris, iris_model, fresh_predict):
    x, _, _ = iris
    model, proto = iris_model
    saved = ONNXRuntime.save(proto, tmp_path / "bundle", x)

    assert saved.files == ["model/model.onnx"]
    assert saved.options["classes"] == [0, 1, 2]
    result = fresh_predict("onnx", tmp_path / "bundle", saved.options, x)

    outputs = result["outputs"]
    np.testing.assert_array_equal(outputs["label"], model.predict(x))
    np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(x), atol=1e-5)
    assert result["classes"] == [0, 1, 2]


def test_one_thread_per_session_by_default(tmp_path, iris_model):
    ONNXRuntime.save(iris_model[1], tmp_path, None)

    default = ONNXRuntime.load(tmp_path, {})
    configured = ONNXRuntime.load(tmp_path, {"threads": 2})

    assert default.session.get_session_options().intra_op_num_threads == 1
    assert configured.session.get_session_options().intra_op_num_threads == 2


def test_zipmap_probabilities_become_an_array(tmp_path, iris):
    x, y, names = iris
    model = LogisticRegression(max_iter=500).fit(x, np.array(names)[y])
    ONNXRuntime.save(to_onnx(model, x[:1].astype(np.float32)), tmp_path, x)

    predictor = ONNXRuntime.load(tmp_path, {})
    outputs = predictor.predict(x)

    np.testing.assert_array_equal(outputs["label"], model.predict(x))
    np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(x), atol=1e-5)


def test_regressor_answers_one_prediction_per_row(tmp_path, diabetes):
    x, y = diabetes
    model = LinearRegression().fit(x, y)
    ONNXRuntime.save(to_onnx(model, x[:1].astype(np.float32)), tmp_path, x)

    prediction = ONNXRuntime.load(tmp_path, {}).predict(x)["prediction"]

    assert prediction.shape == (len(x),)
    np.testing.assert_allclose(prediction, model.predict(x), rtol=1e-4)


def test_dataframe_feeds_one_graph_input_per_column(tmp_path, mixed):
    data, target = mixed
    numeric = ["mean texture", "mean smoothness", "worst area"]
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), numeric),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["size", "site"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(data, target)
    types = [(c, FloatTensorType([None, 1])) for c in numeric]
    types += [(c, StringTensorType([None, 1])) for c in ["size", "site"]]
    proto = to_onnx(pipeline, initial_types=types, options={"zipmap": False})
    saved = ONNXRuntime.save(proto, tmp_path, data)

    predictor = ONNXRuntime.load(tmp_path, saved.options)
    outputs = predictor.predict(data)

    assert predictor.classes == ["benign", "malignant"]
    np.testing.assert_array_equal(outputs["label"], pipeline.predict(data))
    np.testing.assert_allclose(outputs["probabilities"], pipeline.predict_proba(data), atol=1e-5)
    with pytest.raises(SchemaError, match="site"):
        predictor.predict(data.drop(columns=["site"]))


def test_invalid_graph_is_refused_at_save(tmp_path, iris_model):
    broken = onnx.ModelProto()
    broken.CopyFrom(iris_model[1])
    broken.graph.node[0].input[0] = "no_such_tensor"

    with pytest.raises(ManifestError, match="invalid"):
        ONNXRuntime.save(broken, tmp_path, None)


def test_corrupt_artifact_is_a_bundle_error_naming_the_file(tmp_path, iris_model):
    ONNXRuntime.save(iris_model[1], tmp_path, None)
    path = tmp_path / "model" / "model.onnx"
    path.write_bytes(path.read_bytes()[:100])

    with pytest.raises(BundleError, match=r"model/model\.onnx"):
        ONNXRuntime.load(tmp_path, {})


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)

    with pytest.raises(RuntimeUnavailableError) as caught:
        ONNXRuntime.load(tmp_path, {})
    assert "shipyard[onnx]" in caught.value.hint


def test_detects_model_protos_only(iris_model):
    assert detect(iris_model[1]) is ONNXRuntime
    assert not ONNXRuntime.handles(iris_model[1].SerializeToString())
    assert not ONNXRuntime.handles(onnx.GraphProto())


def test_importing_the_adapter_does_not_import_onnxruntime(import_is_light):
    assert import_is_light("shipyard.runtimes.onnx", "onnxruntime")
