"""The runtime contract: load an artifact once, predict on a batch.

A runtime adapter is a subclass of `Runtime` registered under its `kind`. Adapters import
their framework only inside their own methods, so `import shipyard` stays light. Detection
looks at the model object's class hierarchy by module name, which needs no import either.

Outputs are a dict of arrays keyed by output name, each with the batch as first dimension:

- classifiers: ``label`` and, where the model has them, ``probabilities`` ([n, classes])
- regressors and everything else with one output: ``prediction``
- embedding models: ``embedding`` ([n, dim])
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shipyard.errors import ManifestError

Outputs = dict[str, np.ndarray]

# kind -> "module:Class"; imported only when the kind is used.
ADAPTERS: dict[str, str] = {
    "sklearn": "shipyard.runtimes.sklearn:SklearnRuntime",
    "xgboost": "shipyard.runtimes.xgboost:XGBoostRuntime",
    "lightgbm": "shipyard.runtimes.lightgbm:LightGBMRuntime",
    "onnx": "shipyard.runtimes.onnx:ONNXRuntime",
    "torch": "shipyard.runtimes.torch:TorchRuntime",
    "sentence-transformers": "shipyard.runtimes.sentence_transformers:SentenceTransformersRuntime",
    "python": "shipyard.runtimes.python:PythonRuntime",
}
# Detection order matters: the most specific framework first, plain Python last.
DETECTION_ORDER = [
    "sentence-transformers",
    "xgboost",
    "lightgbm",
    "torch",
    "onnx",
    "sklearn",
    "python",
]


@dataclass
class Saved:
    """What `Runtime.save` wrote: bundle-relative files and options to record in the manifest."""

    files: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    code_files: list[str] = field(default_factory=list)


class Predictor(ABC):
    """A loaded model, ready to predict. Must be safe to call from one thread at a time."""

    @abstractmethod
    def predict(self, batch: Any) -> Outputs:
        """Predict on a batch (a DataFrame or an array, as the runtime's options say)."""

    def enter_thread(self) -> None:  # noqa: B027 - optional hook
        """Called once on a thread that runs every later predict (a variant's model thread):
        per-thread framework settings go here rather than around each call."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; default does nothing."""


class Runtime(ABC):
    kind: ClassVar[str]
    extra: ClassVar[str | None] = None  # pip extra that installs the framework
    packages: ClassVar[tuple[str, ...]] = ()  # distributions pinned in the manifest

    @classmethod
    @abstractmethod
    def handles(cls, model: object) -> bool:
        """Whether this adapter can package `model` (decided without importing frameworks)."""

    @classmethod
    @abstractmethod
    def save(cls, model: object, folder: Path, sample: Any) -> Saved:
        """Write the artifact under `folder` (the bundle root being built)."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, options: dict[str, Any]) -> Predictor:
        """Load a verified bundle's artifact into a predictor."""


def class_modules(model: object) -> list[str]:
    """Module names of the model's class and its bases, e.g. ['sklearn.pipeline', ...]."""
    return [klass.__module__ for klass in type(model).__mro__]


def get_runtime(kind: str) -> type[Runtime]:
    target = ADAPTERS.get(kind)
    if target is None:
        raise ManifestError(
            f"Got runtime kind {kind!r}. Expected one of: {', '.join(sorted(ADAPTERS))}.",
            hint="Set runtime.kind in shipyard.yaml to a supported kind.",
            field="runtime.kind",
        )
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    runtime: type[Runtime] = getattr(module, class_name)
    return runtime


def detect(model: object) -> type[Runtime]:
    """The first adapter that handles `model`."""
    for kind in DETECTION_ORDER:
        runtime = get_runtime(kind)
        if runtime.handles(model):
            return runtime
    raise ManifestError(
        f"Could not tell which runtime serves a {type(model).__module__}."
        f"{type(model).__qualname__}.",
        hint="Pass runtime='python' and give the object load() and predict() methods, "
        f"or one of: {', '.join(sorted(ADAPTERS))}.",
        field="runtime",
    )
