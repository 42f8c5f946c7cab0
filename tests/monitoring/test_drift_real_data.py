"""Proven on real data: a packaged breast-cancer model, its own reference profile, live traffic.

The reference is the bundle's profile of its evaluation rows; live windows are rows the model
never saw, sketched the way the server does it (prepare -> run -> sketch_columns -> update).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import shipyard
from shipyard.monitoring.drift import DriftReport, drift_report
from shipyard.monitoring.sketch import ReferenceBins, WindowSketch, sketch_columns

SHIFTED = "mean texture"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, pd.DataFrame]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    order = np.random.default_rng(0).permutation(len(data.data))  # the file is not shuffled
    X, y = data.data.iloc[order].reset_index(drop=True), data.target.to_numpy()[order]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(X.iloc[:250], y[:250])
    folder: Path = tmp_path_factory.mktemp("bundles") / "cancer"
    shipyard.package(
        model, folder, name="cancer", version="1.0.0", owner="Ana Lima <ana@example.com>",
        sample=X.iloc[:20], eval_data=(X.iloc[250:410], y[250:410]),
    )
    return shipyard.load(folder), X.iloc[410:].reset_index(drop=True)


def report_on(model: object, frame: pd.DataFrame) -> DriftReport:
    bins = ReferenceBins.from_profile(model.manifest.profile)  # type: ignore[attr-defined]
    sketch = WindowSketch(bins)
    for start in range(0, len(frame), 50):  # a few chunks, as the server accumulates them
        batch = model.prepare(frame.iloc[start:start + 50])  # type: ignore[attr-defined]
        outputs = model.run(batch)  # type: ignore[attr-defined]
        sketch.update(sketch_columns(model.schema, batch, outputs))  # type: ignore[attr-defined]
    return drift_report(bins, sketch)


def test_unshifted_live_traffic_raises_no_alarm(served: tuple[object, pd.DataFrame]) -> None:
    model, live = served
    report = report_on(model, live)
    assert report.rows == len(live) == 159
    assert report.status == "ok", [report.fields[k].reason for k in report.drifted]
    assert {"label", "probabilities[0]", "probabilities[1]"} <= set(report.fields)


def test_one_shifted_feature_drifts_and_only_that_one(
    served: tuple[object, pd.DataFrame],
) -> None:
    model, live = served
    shifted = live.copy()
    shifted[SHIFTED] += 1.5 * live[SHIFTED].std()
    report = report_on(model, shifted)
    assert report.status == "drift"
    inputs = [k for k in report.drifted if report.fields[k].role == "input"]
    assert inputs == [SHIFTED], [report.fields[k].reason for k in report.drifted]
    assert report.fields[SHIFTED].reason.startswith("drift:")
    # Same rows, same size: every other input is as calm as in the unshifted window.
    calm = report_on(model, live)
    for key, field in report.fields.items():
        if field.role == "input" and key != SHIFTED:
            assert field.value == pytest.approx(calm.fields[key].value)


def test_a_live_quantile_moves_with_the_shift(served: tuple[object, pd.DataFrame]) -> None:
    model, live = served
    shifted = live.copy()
    shifted[SHIFTED] += 10.0
    before = report_on(model, live).fields[SHIFTED].quantiles
    after = report_on(model, shifted).fields[SHIFTED].quantiles
    assert before is not None and after is not None
    assert after["0.5"] == pytest.approx(before["0.5"] + 10.0)


def test_recorded_rows_in_the_model_layout_report_like_served_traffic(
    served: tuple[object, pd.DataFrame],
) -> None:
    from shipyard.monitoring.drift import drift_frame

    model, live = served
    outputs = model.run(model.prepare(live))  # type: ignore[attr-defined]
    recorded = {"label": outputs["label"], "probabilities": list(outputs["probabilities"])}
    report = drift_frame(
        model.manifest.profile, live, schema=model.schema, outputs=recorded  # type: ignore[attr-defined]
    )
    served_report = report_on(model, live)
    assert report.status == served_report.status == "ok"
    for key, field in served_report.fields.items():
        assert report.fields[key].rows == field.rows
        assert report.fields[key].value == pytest.approx(field.value)
