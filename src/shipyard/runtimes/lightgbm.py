"""LightGBM models in LightGBM's own text format, loaded as a bare `Booster`.

The text file holds the trees, the objective and the pandas categories, but not the sklearn
wrapper's class labels; those are recorded in the options, and labels and probabilities are
computed here the way `LGBMClassifier` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shipyard.errors import ManifestError, SchemaError
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

FILE = "model.txt"


def _lightgbm() -> Any:
    return require("lightgbm", "lightgbm", "lightgbm")


class LightGBMPredictor(Predictor):
    def __init__(
        self,
        booster: Any,
        classes: np.ndarray | None,
        feature_names: list[str] | None,
        threads: int | None,
    ) -> None:
        self.booster = booster
        self._classes = classes
        self.classes: list[Any] | None = None if classes is None else classes.tolist()
        self.feature_names = feature_names
        self._params: dict[str, Any] = {"num_threads": threads} if threads else {}

    def predict(self, batch: Any) -> Outputs:
        names = self.feature_names
        if names is not None and hasattr(batch, "columns") and list(batch.columns) != names:
            # The Booster reads a DataFrame by position; reordered columns would silently
            # feed the wrong features.
            missing = [n for n in names if n not in batch.columns]
            if missing:
                raise SchemaError(
                    f"Got a batch without column(s) {missing[:5]}. Expected {names[:10]}"
                    + ("..." if len(names) > 10 else "")
                    + ".",
                    hint="Send every input column the model was trained on.",
                )
            batch = batch[names]
        raw = np.asarray(self.booster.predict(batch, **self._params))
        if self._classes is None:
            return {"prediction": raw}
        if raw.ndim == 1:
            # Binary objectives give P(class 1) only.
            raw = np.column_stack([1.0 - raw, raw])
        return classify(raw, self._classes)


class LightGBMRuntime(Runtime):
    kind = "lightgbm"
    extra = "lightgbm"
    packages: ClassVar[tuple[str, ...]] = ("lightgbm", "numpy", "scikit-learn")

    @classmethod
    def handles(cls, model: object) -> bool:
        return any(m.startswith("lightgbm.") for m in class_modules(model))

    @classmethod
    def save(cls, model: object, folder: Path, sample: Any) -> Saved:
        lgb = _lightgbm()
        options: dict[str, Any] = {"format": "text"}
        if isinstance(model, lgb.LGBMClassifier):
            options["wrapper"] = "LGBMClassifier"
            options.update(classes_option(model.classes_))
            booster = model.booster_
        elif isinstance(model, lgb.LGBMModel):
            options["wrapper"] = "LGBMRegressor"
            booster = model.booster_
        elif isinstance(model, lgb.Booster):
            options["wrapper"] = "Booster"
            booster = model
        else:
            raise ManifestError(
                f"Got a {type(model).__qualname__}. Expected an LGBMClassifier, LGBMRegressor "
                "or lightgbm.Booster.",
                hint="Pass the fitted estimator or its booster_.",
                field="model",
            )
        # LightGBM stores sanitised feature names ('mean radius' -> 'mean_radius'); the
        # sample's own column names are what serving will send.
        columns = getattr(sample, "columns", None)
        if columns is not None and len(columns) == booster.num_feature():
            options["feature_names"] = [str(c) for c in columns]
        path = model_dir(folder) / FILE
        booster.save_model(str(path))
        return Saved(files=[relative(folder, path)], options=options)

    @classmethod
    def load(cls, folder: Path, options: dict[str, Any]) -> Predictor:
        lgb = _lightgbm()
        path = artifact(folder, FILE, cls.kind)
        with reading(folder, path, "lightgbm"):
            booster = lgb.Booster(model_file=str(path))
        threads = options.get("threads")
        return LightGBMPredictor(
            booster,
            restore_classes(options),
            options.get("feature_names"),
            int(threads) if threads else None,
        )
