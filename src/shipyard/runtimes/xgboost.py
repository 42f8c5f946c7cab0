"""XGBoost models in XGBoost's own binary format (UBJSON), never pickle.

`save_model` keeps the trees and the sklearn wrapper's metadata (number of classes), so the
recorded wrapper name is enough to rebuild an `XGBClassifier` or `XGBRegressor` on load; a raw
`Booster` stays a Booster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shipyard.errors import ManifestError
from shipyard.runtimes.base import Outputs, Predictor, Runtime, Saved, class_modules
from shipyard.runtimes.loading import (
    artifact,
    classes_option,
    classify,
    model_dir,
    reading,
    relative,
    require,
    restore_classes,
)

FILE = "model.ubj"
WRAPPERS = ("XGBClassifier", "XGBRegressor", "Booster")


def _xgboost() -> Any:
    return require("xgboost", "xgboost", "xgboost")


class XGBoostPredictor(Predictor):
    def __init__(self, model: Any, wrapper: str, classes: np.ndarray | None) -> None:
        self.model = model
        self.wrapper = wrapper
        self._classes = classes
        self.classes: list[Any] | None = None if classes is None else classes.tolist()

    def predict(self, batch: Any) -> Outputs:
        if self.wrapper == "XGBClassifier":
            # XGBClassifier.predict is the argmax of predict_proba (p > 0.5 for binary, which
            # argmax matches, ties included), so one call gives both outputs.
            return classify(np.asarray(self.model.predict_proba(batch)), self._classes)
        if self.wrapper == "XGBRegressor":
            return {"prediction": np.asarray(self.model.predict(batch))}
        return {"prediction": np.asarray(self.model.inplace_predict(batch))}


class XGBoostRuntime(Runtime):
    kind = "xgboost"
    extra = "xgboost"
    packages: ClassVar[tuple[str, ...]] = ("xgboost", "xgboost-cpu", "numpy", "scikit-learn")

    @classmethod
    def handles(cls, model: object) -> bool:
        return any(m.startswith("xgboost.") for m in class_modules(model))

    @classmethod
    def save(cls, model: object, folder: Path, sample: Any) -> Saved:
        xgb = _xgboost()
        options: dict[str, Any] = {"format": "ubj"}
        if isinstance(model, xgb.XGBClassifier):
            options["wrapper"] = "XGBClassifier"
            classes = np.asarray(model.classes_)
            options["n_classes"] = int(model.n_classes_)
            # XGBoost itself only knows 0..k-1; keep any other labels a subclass introduced.
            if not np.array_equal(classes, np.arange(len(classes))):
                options.update(classes_option(classes))
            booster = model.get_booster()
        elif isinstance(model, xgb.XGBModel):
            # XGBRegressor, XGBRanker, XGBRF*: one value per row through the regressor wrapper.
            options["wrapper"] = "XGBRegressor"
            booster = model.get_booster()
        elif isinstance(model, xgb.Booster):
            options["wrapper"] = "Booster"
            booster = model
        else:
            raise ManifestError(
                f"Got a {type(model).__qualname__}. Expected an XGBClassifier, XGBRegressor "
                "or xgboost.Booster.",
                hint="Pass the fitted estimator or its get_booster().",
                field="model",
            )
        if booster.feature_names:
            options["feature_names"] = list(booster.feature_names)
        path = model_dir(folder) / FILE
        # The wrapper's save_model also stores its sklearn metadata (n_classes, objective).
        (model if options["wrapper"] != "Booster" else booster).save_model(str(path))
        return Saved(files=[relative(folder, path)], options=options)

    @classmethod
    def load(cls, folder: Path, options: dict[str, Any]) -> Predictor:
        xgb = _xgboost()
        wrapper = options.get("wrapper", "Booster")
        if wrapper not in WRAPPERS:
            raise ManifestError(
                f"Got wrapper {wrapper!r}. Expected one of: {', '.join(WRAPPERS)}.",
                hint="Fix runtime.options.wrapper in shipyard.yaml or package the model again.",
                field="runtime.options.wrapper",
            )
        path = artifact(folder, FILE, cls.kind)
        threads = options.get("threads")
        with reading(folder, path, "xgboost"):
            if wrapper == "Booster":
                model = xgb.Booster(model_file=str(path))
                if threads:
                    model.set_param({"nthread": int(threads)})
            else:
                model = getattr(xgb, wrapper)(n_jobs=int(threads) if threads else None)
                model.load_model(str(path))
        classes = restore_classes(options)
        if wrapper == "XGBClassifier" and classes is None:
            classes = np.arange(int(options.get("n_classes", model.n_classes_)))
        return XGBoostPredictor(model, wrapper, classes)
