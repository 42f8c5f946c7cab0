from __future__ import annotations

import json

import numpy as np
import pytest

from shipyard.errors import BundleError, ManifestError
from shipyard.runtimes.base import detect
from shipyard.runtimes.python import PythonRuntime

RULES_SOURCE = """
    import json
    from pathlib import Path

    import numpy as np


    class ThresholdModel:
        '''Flags a row when one feature passes a threshold learnt as the midpoint of means.'''

        classes = [0, 1]

        def __init__(self, feature=0, threshold=None):
            self.feature = feature
            self.threshold = threshold

        def fit(self, x, y):
            column = np.asarray(x)[:, self.feature]
            self.threshold = float((column[y == 0].mean() + column[y == 1].mean()) / 2)
            return self

        def predict(self, batch):
            return (np.asarray(batch)[:, self.feature] > self.threshold).astype(np.int64)

        def save(self, folder):
            rule = {"feature": self.feature, "threshold": self.threshold}
            (Path(folder) / "rule.json").write_text(json.dumps(rule))

        def load(self, folder):
            rule = json.loads((Path(folder) / "rule.json").read_text())
            self.feature, self.threshold = rule["feature"], rule["threshold"]


    class Scorer:
        '''Answers several outputs; rebuilt by a classmethod load.'''

        def __init__(self, scale=1.0):
            self.scale = scale

        def predict(self, batch):
            total = np.asarray(batch).sum(axis=1) * self.scale
            return {"score": total, "flag": total > 0}

        def save(self, folder):
            (Path(folder) / "scale.txt").write_text(str(self.scale))

        @classmethod
        def load(cls, folder):
            return cls(float((Path(folder) / "scale.txt").read_text()))


    class NeedsArguments:
        def __init__(self, weights):
            self.weights = weights

        def predict(self, batch):
            return batch


    class ReturnsText:
        def predict(self, batch):
            return "yes"
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory, write_module):
    import sys

    yield write_module(tmp_path_factory.mktemp("rulescode"), "rules", RULES_SOURCE)
    sys.modules.pop("rules", None)


def test_user_model_with_artifact_round_trips_in_a_fresh_process(
    tmp_path, rules, cancer, fresh_predict
):
    frame, y = cancer
    x = frame.to_numpy()
    model = rules.ThresholdModel(feature=7).fit(x, y)
    saved = PythonRuntime.save(model, tmp_path / "bundle", x)

    assert saved.files == ["model/rule.json"]
    assert saved.code_files == ["code/rules.py"]
    assert saved.options == {"entrypoint": "rules:ThresholdModel"}
    assert json.loads((tmp_path / "bundle" / "model" / "rule.json").read_text())["feature"] == 7
    result = fresh_predict("python", tmp_path / "bundle", saved.options, x)

    np.testing.assert_array_equal(result["outputs"]["prediction"], model.predict(x))
    assert result["classes"] == [0, 1]


def test_dict_outputs_are_kept_and_classmethod_load_is_used(tmp_path, rules):
    x = np.array([[1.0, 2.0], [-3.0, 1.0]])
    saved = PythonRuntime.save(rules.Scorer(scale=2.0), tmp_path, x)

    outputs = PythonRuntime.load(tmp_path, saved.options).predict(x)

    np.testing.assert_array_equal(outputs["score"], [6.0, -4.0])
    np.testing.assert_array_equal(outputs["flag"], [True, False])


def test_constructor_arguments_are_refused_at_save(tmp_path, rules):
    with pytest.raises(ManifestError, match="no arguments"):
        PythonRuntime.save(rules.NeedsArguments([1, 2]), tmp_path, None)


def test_unshaped_output_is_a_clear_error(tmp_path, rules):
    saved = PythonRuntime.save(rules.ReturnsText(), tmp_path, None)

    with pytest.raises(BundleError, match="Expected an array"):
        PythonRuntime.load(tmp_path, saved.options).predict(np.zeros((1, 1)))


def test_class_defined_in_a_function_is_refused(tmp_path):
    class Local:
        def predict(self, batch):
            return batch

    with pytest.raises(ManifestError, match="top level"):
        PythonRuntime.save(Local(), tmp_path, None)


def test_broken_artifact_is_a_bundle_error(tmp_path, rules, cancer):
    frame, y = cancer
    model = rules.ThresholdModel().fit(frame.to_numpy(), y)
    saved = PythonRuntime.save(model, tmp_path, None)
    (tmp_path / "model" / "rule.json").write_text("{not json")

    with pytest.raises(BundleError, match="rules:ThresholdModel"):
        PythonRuntime.load(tmp_path, saved.options)


def test_missing_code_file_is_a_bundle_error(tmp_path, rules):
    saved = PythonRuntime.save(rules.ReturnsText(), tmp_path, None)
    (tmp_path / "code" / "rules.py").unlink()

    with pytest.raises(BundleError, match=r"rules\.py"):
        PythonRuntime.load(tmp_path, saved.options)


def test_any_object_with_predict_is_detected_last(rules):
    assert detect(rules.ReturnsText()) is PythonRuntime
    assert not PythonRuntime.handles(object())


def test_importing_the_adapter_imports_no_framework(import_is_light):
    assert import_is_light("shipyard.runtimes.python", "sklearn", "torch")
