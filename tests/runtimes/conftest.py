"""Shared fixtures for runtime tests: offline hubs, a fresh-process loader, small datasets."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

# Loads a bundle with a runtime in a new interpreter and pickles the outputs back, so a
# round trip cannot lean on classes or modules already imported by the test process.
FRESH_SCRIPT = textwrap.dedent(
    """
    import json, pickle, sys
    from pathlib import Path

    folder, kind, options, batch, out = sys.argv[1:6]
    from shipyard.runtimes.base import get_runtime

    predictor = get_runtime(kind).load(Path(folder), json.loads(Path(options).read_text()))
    outputs = predictor.predict(pickle.loads(Path(batch).read_bytes()))
    result = {"outputs": outputs, "classes": getattr(predictor, "classes", None)}
    Path(out).write_bytes(pickle.dumps(result))
    """
)


@pytest.fixture(scope="session", autouse=True)
def offline() -> Any:
    """No model hub is reachable: make any attempt fail fast instead of hanging."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _fresh_predict(kind: str, folder: Path, options: dict[str, Any], batch: Any) -> dict[str, Any]:
    """Load the bundle in `folder` in a new Python process and predict on `batch` there.

    Options travel through JSON, as they do through the manifest.
    """
    work = Path(tempfile.mkdtemp(prefix="fresh-", dir=folder.parent))
    (work / "options.json").write_text(json.dumps(options))
    (work / "batch.pkl").write_bytes(pickle.dumps(batch))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    args = [str(folder), kind, str(work / "options.json"), str(work / "batch.pkl")]
    completed = subprocess.run(
        [sys.executable, "-c", FRESH_SCRIPT, *args, str(work / "out.pkl")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=work,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, Any] = pickle.loads((work / "out.pkl").read_bytes())
    return result


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, data.target, list(data.target_names)


@pytest.fixture(scope="session")
def cancer() -> tuple[pd.DataFrame, np.ndarray]:
    """Breast cancer as a DataFrame (column names with spaces) and a 0/1 target."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    return data.data, data.target.to_numpy()


@pytest.fixture(scope="session")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True)


@pytest.fixture(scope="session")
def mixed(cancer: tuple[pd.DataFrame, np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric columns plus two string categoricals derived from the bundled data."""
    frame, target = cancer
    data = frame[["mean texture", "mean smoothness", "worst area"]].copy()
    data["size"] = pd.cut(
        frame["mean radius"], bins=[0, 12, 16, 100], labels=["small", "medium", "large"]
    ).astype(str)
    data["site"] = np.array(["north", "south", "east", "west"])[np.arange(len(frame)) % 4]
    return data, np.array(["benign", "malignant"])[1 - target]


def _write_module(folder: Path, name: str, source: str) -> Any:
    """Write `source` to folder/name.py and import it, so inspect can find its file."""
    import importlib.util

    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _import_is_light(adapter: str, *frameworks: str) -> bool:
    """Whether importing a runtime module leaves its framework(s) unimported."""
    code = f"import sys, {adapter}; print(any(f in sys.modules for f in {frameworks!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.strip() == "False"


# Helpers reach the tests as fixtures: tests/runtimes is not a package, so no relative import.
@pytest.fixture(scope="session")
def fresh_predict() -> Any:
    return _fresh_predict


@pytest.fixture(scope="session")
def write_module() -> Any:
    return _write_module


@pytest.fixture(scope="session")
def import_is_light() -> Any:
    return _import_is_light
