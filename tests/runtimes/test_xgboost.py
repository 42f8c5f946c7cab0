from __future__ import annotations

import sys

import numpy as np
import pytest
import xgboost as xgb

from shipyard.errors import BundleError, ManifestError, RuntimeUnavailableError
from shipyard.runtimes.base import detect
from shipyard.runtimes.xgboost import XGBoostRuntime


def test_multiclass_classifier_round_trips_in_a_fresh_process(tmp_path, iris, fresh_predict):
    x, y, _ = iris
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(x, y)
    saved = XGBoostRuntime.save(model, tmp_path / "bundle", x)

    assert saved.files == ["model/model.ubj"]
    assert saved.options == {"format": "ubj", "wrapper": "XGBClassifier", "n_classes": 3}
    result = fresh_predict("xgboost", tmp_path / "bundle", saved.options, x)

    outputs = result["outputs"]
    np.testing.assert_array_equal(outputs["label"], model.predict(x))
    assert outputs["label"].dtype == model.predict(x).dtype
    np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(x), rtol=1e-6)
    assert result["classes"] == [0, 1, 2]


def test_binary_classifier_on_a_dataframe(tmp_path, cancer):
    frame, y = cancer
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(frame, y)
    saved = XGBoostRuntime.save(model, tmp_path, frame)

    outputs = XGBoostRuntime.load(tmp_path, saved.options).predict(frame)

    assert saved.options["feature_names"] == list(frame.columns)
    np.testing.assert_array_equal(outputs["label"], model.predict(frame))
    np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(frame), rtol=1e-6)


def test_regressor_answers_prediction(tmp_path, diabetes):
    x, y = diabetes
    model = xgb.XGBRegressor(n_estimators=20).fit(x, y)
    saved = XGBoostRuntime.save(model, tmp_path, x)

    predictor = XGBoostRuntime.load(tmp_path, {**saved.options, "threads": 1})

    assert saved.options["wrapper"] == "XGBRegressor"
    np.testing.assert_allclose(predictor.predict(x)["prediction"], model.predict(x), rtol=1e-6)


def test_raw_booster_answers_prediction(tmp_path, diabetes):
    x, y = diabetes
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(x, label=y), num_boost_round=10)
    saved = XGBoostRuntime.save(booster, tmp_path, x)

    predictor = XGBoostRuntime.load(tmp_path, saved.options)

    assert saved.options["wrapper"] == "Booster"
    expected = booster.predict(xgb.DMatrix(x))
    np.testing.assert_allclose(predictor.predict(x)["prediction"], expected, rtol=1e-6)


def test_artifact_is_native_not_pickle(tmp_path, iris):
    x, y, _ = iris
    XGBoostRuntime.save(xgb.XGBClassifier(n_estimators=2).fit(x, y), tmp_path, x)

    # UBJSON starts with '{'; a pickle would start with b'\x80'.
    assert (tmp_path / "model" / "model.ubj").read_bytes()[:1] == b"{"


def test_corrupt_artifact_is_a_bundle_error_naming_the_file(tmp_path, iris):
    x, y, _ = iris
    saved = XGBoostRuntime.save(xgb.XGBClassifier(n_estimators=2).fit(x, y), tmp_path, x)
    (tmp_path / "model" / "model.ubj").write_bytes(b"{not really ubjson")

    with pytest.raises(BundleError, match=r"model/model\.ubj"):
        XGBoostRuntime.load(tmp_path, saved.options)


def test_unknown_wrapper_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="wrapper"):
        XGBoostRuntime.load(tmp_path, {"wrapper": "os.system"})


def test_missing_xgboost_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)

    with pytest.raises(RuntimeUnavailableError) as caught:
        XGBoostRuntime.load(tmp_path, {"wrapper": "Booster"})
    assert "shipyard[xgboost]" in caught.value.hint


def test_detection_prefers_xgboost_over_sklearn(iris):
    assert detect(xgb.XGBClassifier()) is XGBoostRuntime
    assert XGBoostRuntime.handles(xgb.Booster())
    assert not XGBoostRuntime.handles(object())


def test_importing_the_adapter_does_not_import_xgboost(import_is_light):
    assert import_is_light("shipyard.runtimes.xgboost", "xgboost")
