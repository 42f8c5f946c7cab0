"""BentoML peer: a 1.x `@bentoml.service` with one worker and one API taking the rows.

    BENCH_MODEL=MODEL.joblib bentoml serve bentoml_service:Bench --port P
    POST /predict  {"inputs": [[30 floats]]}
"""

from __future__ import annotations

import os

import bentoml
import joblib
import numpy as np


@bentoml.service(workers=1)
class Bench:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    @bentoml.api
    def predict(self, inputs: list[list[float]]) -> dict:
        proba = self.model.predict_proba(np.asarray(inputs, dtype=np.float64))
        return {"label": self.model.classes_[proba.argmax(axis=1)].tolist(),
                "probabilities": proba.tolist()}
