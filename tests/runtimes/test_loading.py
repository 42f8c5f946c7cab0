from __future__ import annotations

import sys

import numpy as np
import pytest

from shipyard.errors import BundleError, ManifestError, RuntimeUnavailableError, SchemaError
from shipyard.runtimes import loading


def test_require_names_the_extra_when_the_framework_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "some_framework", None)

    with pytest.raises(RuntimeUnavailableError) as caught:
        loading.require("some_framework", "some-framework", "extra-name")
    assert "pip install 'shipyard[extra-name]'" in caught.value.hint


def test_reading_wraps_framework_errors_and_keeps_our_own(tmp_path):
    path = tmp_path / "model" / "weights.bin"

    with pytest.raises(BundleError) as caught, loading.reading(tmp_path, path, "fancylib"):
        raise ValueError("bad magic number\nmore detail")
    assert caught.value.details["file"] == "model/weights.bin"
    assert "fancylib: ValueError: bad magic number." in caught.value.message
    assert isinstance(caught.value.__cause__, ValueError)

    with pytest.raises(SchemaError), loading.reading(tmp_path, path, "fancylib"):
        raise SchemaError("ours")


@pytest.mark.parametrize(
    "classes",
    [np.array([0, 1, 2]), np.array(["no", "yes"]), np.array(["a", "b"], dtype=object)],
)
def test_classes_come_back_in_their_dtype(classes):
    restored = loading.restore_classes(loading.classes_option(classes))

    assert restored is not None
    np.testing.assert_array_equal(restored, classes)
    assert restored.dtype == classes.dtype


def test_classify_maps_argmax_to_labels():
    outputs = loading.classify(np.array([[0.2, 0.8], [0.9, 0.1]]), np.array(["no", "yes"]))

    assert outputs["label"].tolist() == ["yes", "no"]


def test_prediction_is_one_value_per_row():
    assert loading.prediction(np.ones((3, 1)))["prediction"].shape == (3,)
    assert loading.prediction(np.ones((3, 2)))["prediction"].shape == (3, 2)


def test_copied_source_file_names_must_be_importable(tmp_path, write_module):
    module = write_module(tmp_path, "plain_mod", "class Model:\n    pass\n")
    try:
        assert loading.copy_class_source(module.Model, tmp_path / "b") == (
            "code/plain_mod.py",
            "plain_mod:Model",
        )
        module.Model.__module__ = "__main__"
        with pytest.raises(ManifestError, match="top level"):
            loading.copy_class_source(module.Model, tmp_path / "b")
    finally:
        sys.modules.pop("plain_mod", None)


def test_missing_artifact_names_the_expected_file(tmp_path):
    with pytest.raises(BundleError, match=r"model/weights\.bin.*demo runtime"):
        loading.artifact(tmp_path, "weights.bin", "demo")


def test_loading_module_imports_no_framework(import_is_light):
    frameworks = ("torch", "xgboost", "lightgbm", "onnxruntime", "sentence_transformers")
    assert import_is_light("shipyard.runtimes.loading", "sklearn", *frameworks)
