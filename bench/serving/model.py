"""The model every server in the benchmark serves, and the request row they all get.

A StandardScaler + LogisticRegression pipeline trained on scikit-learn's breast-cancer data
(30 float features, two classes). `save` writes it with joblib for the peers, each of which
loads it in its own virtual environment with the same scikit-learn version.

    python bench/serving/model.py DIR      writes DIR/model.joblib and DIR/reference.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

MODEL_FILE = "model.joblib"
REFERENCE_FILE = "reference.json"


def data() -> tuple[np.ndarray, np.ndarray]:
    """The breast-cancer data as float64 arrays: X is (569, 30), y holds 0 and 1."""
    X, y = load_breast_cancer(return_X_y=True)
    return np.asarray(X, dtype=np.float64), np.asarray(y)


def train() -> tuple[Pipeline, np.ndarray, np.ndarray]:
    X, y = data()
    model = Pipeline([("scale", StandardScaler()),
                      ("classify", LogisticRegression(max_iter=1000))])
    model.fit(X, y)
    return model, X, y


def request_row(X: np.ndarray) -> list[float]:
    """The single row every request carries (the first sample, as plain floats)."""
    return [float(v) for v in X[0]]


def save(folder: str | Path) -> dict[str, Any]:
    """Write the model and the expected answer for the request row; return that answer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, X, _ = train()
    joblib.dump(model, folder / MODEL_FILE)
    row = request_row(X)
    proba = model.predict_proba(np.asarray([row]))[0]
    reference = {"row": row, "label": int(model.classes_[int(np.argmax(proba))]),
                 "probabilities": [float(p) for p in proba]}
    (folder / REFERENCE_FILE).write_text(json.dumps(reference))
    return reference


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/serving/model.py DIR")
    print(json.dumps(save(sys.argv[1])))
