from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from shipyard.bundle import scan
from shipyard.errors import BundleError, UnsafeArtifactError
from shipyard.runtimes.base import detect
from shipyard.runtimes.sklearn import SklearnRuntime


@pytest.fixture(scope="module")
def pipeline(mixed):
    data, target = mixed
    numeric = ["mean texture", "mean smoothness", "worst area"]
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["size", "site"]),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(data, target)


def test_pipeline_with_mixed_columns_round_trips_in_a_fresh_process(
    tmp_path, pipeline, mixed, fresh_predict
):
    data, _ = mixed
    saved = SklearnRuntime.save(pipeline, tmp_path / "bundle", data.head())

    assert saved.files == ["model/model.joblib"]
    assert saved.options == {"format": "joblib", "task": "classification"}
    result = fresh_predict("sklearn", tmp_path / "bundle", saved.options, data)

    outputs = result["outputs"]
    assert set(outputs) == {"label", "probabilities"}
    np.testing.assert_array_equal(outputs["label"], pipeline.predict(data))
    np.testing.assert_allclose(outputs["probabilities"], pipeline.predict_proba(data))
    assert result["classes"] == ["benign", "malignant"]


def test_classifier_keeps_string_labels_and_dtype(tmp_path, iris):
    x, y, names = iris
    labels = np.array(names)[y]
    model = LogisticRegression(max_iter=500).fit(x, labels)
    saved = SklearnRuntime.save(model, tmp_path, x)

    outputs = SklearnRuntime.load(tmp_path, saved.options).predict(x)

    expected = model.predict(x)
    np.testing.assert_array_equal(outputs["label"], expected)
    assert outputs["label"].dtype == expected.dtype
    np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(x))


def test_regressor_answers_prediction(tmp_path, diabetes):
    x, y = diabetes
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(x, y)
    saved = SklearnRuntime.save(model, tmp_path, x)

    predictor = SklearnRuntime.load(tmp_path, saved.options)

    assert saved.options["task"] == "regression"
    assert predictor.classes is None
    np.testing.assert_allclose(predictor.predict(x)["prediction"], model.predict(x))


def test_classifier_without_probabilities_answers_label_only(tmp_path, iris):
    x, y, _ = iris
    model = LinearSVC().fit(x, y)
    SklearnRuntime.save(model, tmp_path, x)

    outputs = SklearnRuntime.load(tmp_path, {}).predict(x)

    assert set(outputs) == {"label"}
    np.testing.assert_array_equal(outputs["label"], model.predict(x))


def test_load_goes_through_the_allowlist_unpickler(tmp_path, iris, monkeypatch):
    x, y, _ = iris
    SklearnRuntime.save(LogisticRegression(max_iter=500).fit(x, y), tmp_path, x)
    seen: list[Path] = []

    def refuse(path: Path) -> None:
        seen.append(path)
        raise UnsafeArtifactError("os.system is not allowed", file="model/model.joblib")

    monkeypatch.setattr(scan, "load_pickle", refuse)

    with pytest.raises(UnsafeArtifactError):
        SklearnRuntime.load(tmp_path, {})
    assert [p.name for p in seen] == ["model.joblib"]


def test_corrupt_artifact_is_a_bundle_error_naming_the_file(tmp_path, iris):
    x, y, _ = iris
    SklearnRuntime.save(LogisticRegression(max_iter=500).fit(x, y), tmp_path, x)
    path = tmp_path / "model" / "model.joblib"
    path.write_bytes(path.read_bytes()[:200])

    with pytest.raises(BundleError) as caught:
        SklearnRuntime.load(tmp_path, {})
    assert "model.joblib" in str(caught.value) + str(caught.value.details)


def test_missing_artifact_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match=r"model/model\.joblib"):
        SklearnRuntime.load(tmp_path, {})


def test_detects_estimators_and_pipelines(pipeline):
    assert SklearnRuntime.handles(pipeline)
    assert SklearnRuntime.handles(LogisticRegression())
    assert not SklearnRuntime.handles(object())
    assert detect(pipeline) is SklearnRuntime


def test_importing_the_adapter_does_not_import_sklearn(import_is_light):
    assert import_is_light("shipyard.runtimes.sklearn", "sklearn", "joblib")


def test_label_from_probabilities_matches_predict_for_every_argmax_estimator(tmp_path):
    """The shortcut (label = argmax of probabilities) must agree with predict() exactly."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    from shipyard.runtimes.sklearn import SklearnPredictor

    X, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    for estimator in (
        LogisticRegression(max_iter=500),
        RandomForestClassifier(10, random_state=0),
        GaussianNB(),
        KNeighborsClassifier(),
        DecisionTreeClassifier(),
    ):
        model = make_pipeline(StandardScaler(), estimator).fit(X, labels)
        predictor = SklearnPredictor(model)
        assert predictor._argmax
        out = predictor.predict(X)
        np.testing.assert_array_equal(out["label"], model.predict(X))
        np.testing.assert_allclose(out["probabilities"], model.predict_proba(X))


def test_model_thread_settings_stay_on_that_thread_and_answers_do_not_change(iris):
    """enter_thread sets scikit-learn's per-thread settings once; other threads keep theirs."""
    import threading

    import sklearn
    from sklearn.linear_model import LogisticRegression

    from shipyard.runtimes.sklearn import SklearnPredictor

    X, y, _ = iris
    predictor = SklearnPredictor(LogisticRegression(max_iter=500).fit(X, y))
    expected = predictor.predict(X)  # the main thread: settings only around the call
    assert sklearn.get_config()["assume_finite"] is False
    seen: dict[str, object] = {}

    def model_thread() -> None:
        predictor.enter_thread()
        seen["config"] = sklearn.get_config()
        seen["outputs"] = predictor.predict(X)

    worker = threading.Thread(target=model_thread)
    worker.start()
    worker.join()
    config = seen["config"]
    assert isinstance(config, dict)
    assert config["assume_finite"] is True and config["skip_parameter_validation"] is True
    assert sklearn.get_config()["assume_finite"] is False
    outputs = seen["outputs"]
    assert isinstance(outputs, dict)
    for name, values in expected.items():
        np.testing.assert_array_equal(outputs[name], values)
    # Back on a thread that is not the model's, the call still runs with the settings.
    with sklearn.config_context(assume_finite=False):
        again = predictor.predict(X)
        assert sklearn.get_config()["assume_finite"] is False
    np.testing.assert_array_equal(again["label"], expected["label"])
