"""Small real models and bundles shared by the api, cli and serving tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def mixed_data() -> tuple[pd.DataFrame, np.ndarray]:
    """Breast-cancer features plus a categorical column derived from them."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.data.iloc[:, :6].copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["size_band"] = pd.cut(
        frame["mean_area"], [0, 400, 700, 5000], labels=["small", "medium", "large"]
    ).astype(str)
    return frame, data.target.to_numpy()


@pytest.fixture(scope="session")
def pipeline(mixed_data):  # type: ignore[no-untyped-def]
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = mixed_data
    numeric = [c for c in X.columns if c != "size_band"]
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), numeric),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["size_band"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    model.fit(X.iloc[:400], y[:400])
    return model


@pytest.fixture(scope="session")
def packaged(tmp_path_factory, pipeline, mixed_data) -> Path:
    from shipyard import api

    X, y = mixed_data
    dest = tmp_path_factory.mktemp("bundles") / "tumours"
    api.package(
        pipeline,
        dest,
        name="tumours",
        version="1.0.0",
        owner="Ana Lima <ana@x.io>",
        sample=X.iloc[:20],
        eval_data=(X.iloc[400:], y[400:]),
        thresholds={"accuracy": 0.8},
        description="Tumour classifier.",
    )
    return dest
