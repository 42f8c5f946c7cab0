from __future__ import annotations

import sys

import lightgbm as lgb
import numpy as np
import pytest

from shipyard.errors import BundleError, RuntimeUnavailableError, SchemaError
from shipyard.runtimes.base import detect
from shipyard.runtimes.lightgbm import LightGBMRuntime


def test_classifier_with_string_labels_round_trips_in_a_fresh_process(
    tmp_path, iris, fresh_predict
):
    x, y, names = iris
    model = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, np.array(names)[y])
    saved = LightGBMRuntime.save(model, tmp_path / "bundle", x)

    assert saved.files == ["model/model.txt"]
    assert saved.options["classes"] == names
    result = fresh_predict("lightgbm", tmp_path / "bundle", saved.options, x)

    outputs = result["outputs"]
    expected = model.predict(x)
    np.testing.assert_array_equal(outputs["label"], expected)
    assert outputs["label"].dtype == expected.dtype
    np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(x), rtol=1e-9)
    assert result["classes"] == names


@pytest.fixture(scope="module")
def binary(cancer):
    frame, y = cancer
    return lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(frame, y)


def test_binary_classifier_expands_probability_of_class_one(tmp_path, binary, cancer):
    frame, _ = cancer
    saved = LightGBMRuntime.save(binary, tmp_path, frame)

    outputs = LightGBMRuntime.load(tmp_path, saved.options).predict(frame)

    np.testing.assert_array_equal(outputs["label"], binary.predict(frame))
    np.testing.assert_allclose(outputs["probabilities"], binary.predict_proba(frame))
    # The sample's own names, not LightGBM's sanitised ones ('mean_radius').
    assert saved.options["feature_names"] == list(frame.columns)


def test_reordered_columns_are_put_back_in_training_order(tmp_path, binary, cancer):
    frame, _ = cancer
    saved = LightGBMRuntime.save(binary, tmp_path, frame)
    predictor = LightGBMRuntime.load(tmp_path, saved.options)

    shuffled = frame[list(reversed(frame.columns))]

    np.testing.assert_array_equal(predictor.predict(shuffled)["label"], binary.predict(frame))
    with pytest.raises(SchemaError, match="mean radius"):
        predictor.predict(frame.drop(columns=["mean radius"]))


def test_regressor_and_booster_answer_prediction(tmp_path, diabetes):
    x, y = diabetes
    model = lgb.LGBMRegressor(n_estimators=20, verbose=-1).fit(x, y)
    booster = lgb.train({"verbose": -1}, lgb.Dataset(x, label=y), num_boost_round=10)

    for name, obj, expected in [
        ("wrapper", model, model.predict(x)),
        ("booster", booster, booster.predict(x)),
    ]:
        saved = LightGBMRuntime.save(obj, tmp_path / name, x)
        predictor = LightGBMRuntime.load(tmp_path / name, {**saved.options, "threads": 1})
        assert "classes" not in saved.options
        np.testing.assert_allclose(predictor.predict(x)["prediction"], expected)


def test_corrupt_artifact_is_a_bundle_error_naming_the_file(tmp_path, diabetes):
    x, y = diabetes
    model = lgb.LGBMRegressor(n_estimators=2, verbose=-1).fit(x, y)
    saved = LightGBMRuntime.save(model, tmp_path, x)
    (tmp_path / "model" / "model.txt").write_text("tree\nversion=v4\nnum_class=banana\n")

    with pytest.raises(BundleError, match=r"model/model\.txt"):
        LightGBMRuntime.load(tmp_path, saved.options)


def test_missing_lightgbm_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)

    with pytest.raises(RuntimeUnavailableError) as caught:
        LightGBMRuntime.load(tmp_path, {})
    assert "shipyard[lightgbm]" in caught.value.hint


def test_detection_prefers_lightgbm_over_sklearn():
    assert detect(lgb.LGBMClassifier()) is LightGBMRuntime
    assert not LightGBMRuntime.handles(object())


def test_importing_the_adapter_does_not_import_lightgbm(import_is_light):
    assert import_is_light("shipyard.runtimes.lightgbm", "lightgbm")
