"""scikit-learn estimators and pipelines, stored with joblib and loaded through the scanner.

A joblib file is a pickle: loading one runs whatever its globals name. So `load` never calls
joblib itself; `shipyard.bundle.scan.load_pickle` admits only allow-listed globals.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shipyard.bundle import scan
from shipyard.errors import BundleError
from shipyard.runtimes.base import Outputs, Predictor, Runtime, Saved, class_modules
from shipyard.runtimes.loading import artifact, model_dir, reading, relative

FILE = "model.joblib"


# Final estimators whose predict() is exactly classes_[argmax(predict_proba())]: for them the
# label comes from the probabilities, saving a second pass through scikit-learn's per-call
# input validation, which dominates the cost of a small batch.
ARGMAX_CONSISTENT = {
    "LogisticRegression",
    "LogisticRegressionCV",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "DecisionTreeClassifier",
    "ExtraTreeClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
    "KNeighborsClassifier",
    "GaussianNB",
    "MultinomialNB",
    "BernoulliNB",
    "ComplementNB",
    "MLPClassifier",
    "LinearDiscriminantAnalysis",
    "QuadraticDiscriminantAnalysis",
}


# shipyard has already refused NaN and infinity where the schema forbids them, so
# scikit-learn's own finiteness scan of every batch is redundant work; and the estimator's
# parameters were validated when it was fitted.
SETTINGS = {"assume_finite": True, "skip_parameter_validation": True}


def _is_classifier(model: Any) -> bool:
    return hasattr(model, "classes_")


class SklearnPredictor(Predictor):
    """Calls the estimator; for classifiers, label and probabilities from one transform."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes: list[Any] | None = (
            np.asarray(model.classes_).tolist() if _is_classifier(model) else None
        )
        self._proba = self.classes is not None and hasattr(model, "predict_proba")
        # A pipeline's transforms (imputers, encoders, scalers) would otherwise run twice per
        # batch: once for predict and once for predict_proba. Run them once, then the final
        # step twice; Pipeline.predict does exactly this internally.
        self._transform: Any = None
        self._final: Any = model
        steps = getattr(model, "steps", None)
        if self._proba and isinstance(steps, list) and len(steps) > 1:
            self._transform = model[:-1]
            self._final = model[-1]
        self._argmax = (
            self._proba
            and type(self._final).__name__ in ARGMAX_CONSISTENT
            and (type(self._final).__module__.startswith("sklearn."))
        )
        self._labels = np.asarray(model.classes_) if self.classes is not None else None
        from sklearn import config_context

        self._config = config_context
        self._multi_output = getattr(self._labels, "ndim", 1) > 1
        self._model_thread: int | None = None

    def enter_thread(self) -> None:
        from sklearn import set_config

        # scikit-learn's settings are per thread: set once here, they save entering and leaving
        # config_context (~5 us) on every call from the model thread.
        set_config(**SETTINGS)
        self._model_thread = threading.get_ident()

    def predict(self, batch: Any) -> Outputs:
        if threading.get_ident() == self._model_thread:
            return self._predict(batch)
        with self._config(**SETTINGS):
            return self._predict(batch)

    def _predict(self, batch: Any) -> Outputs:
        if self.classes is None:
            return {"prediction": np.asarray(self.model.predict(batch))}
        if not self._proba:
            return {"label": np.asarray(self.model.predict(batch))}
        if self._argmax and not self._multi_output and self._labels is not None:
            # One call through the whole pipeline: cheaper than transforming separately.
            probabilities = np.asarray(self.model.predict_proba(batch))
            return {
                "label": self._labels[probabilities.argmax(axis=1)],
                "probabilities": probabilities,
            }
        data = batch if self._transform is None else self._transform.transform(batch)
        return {
            "label": np.asarray(self._final.predict(data)),
            "probabilities": np.asarray(self._final.predict_proba(data)),
        }


class SklearnRuntime(Runtime):
    kind = "sklearn"
    extra = None  # scikit-learn and joblib are core dependencies
    packages: ClassVar[tuple[str, ...]] = ("scikit-learn", "joblib", "numpy", "scipy")

    @classmethod
    def handles(cls, model: object) -> bool:
        return any(m == "sklearn" or m.startswith("sklearn.") for m in class_modules(model))

    @classmethod
    def save(cls, model: object, folder: Path, sample: Any) -> Saved:
        import joblib

        path = model_dir(folder) / FILE
        # Uncompressed, so the scanner can read the pickle stream as written.
        joblib.dump(model, path, compress=0)
        task = "classification" if _is_classifier(model) else "regression"
        return Saved(files=[relative(folder, path)], options={"format": "joblib", "task": task})

    @classmethod
    def load(cls, folder: Path, options: dict[str, Any]) -> Predictor:
        path = artifact(folder, FILE, cls.kind)
        with reading(Path(folder), path, "joblib"):
            model = scan.load_pickle(path)
        if not callable(getattr(model, "predict", None)):
            raise BundleError(
                f"model/{FILE} holds a {type(model).__name__}, which has no predict().",
                hint="Package a fitted estimator or pipeline that ends in one.",
                file=f"model/{FILE}",
            )
        return SklearnPredictor(model)
