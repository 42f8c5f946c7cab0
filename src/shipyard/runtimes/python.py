"""Plain Python models: any object with `predict(batch)`, the runtime of last resort.

The file that defines the object's class is copied to `code/`. If the object has
`save(folder)`, it writes its own artifact files into `model/`; at load the class is built
with no arguments and `load(folder)` reads them back. Nothing is pickled.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shipyard.errors import BundleError, ManifestError
from shipyard.runtimes.base import Outputs, Predictor, Runtime, Saved
from shipyard.runtimes.code import import_entry
from shipyard.runtimes.loading import (
    MODEL_DIR,
    copy_class_source,
    files_under,
    model_dir,
    reading,
)


class PythonPredictor(Predictor):
    """Calls the user's predict and shapes its answer into named arrays."""

    def __init__(self, model: Any) -> None:
        self.model = model
        classes = getattr(model, "classes", None)
        self.classes: list[Any] | None = (
            np.asarray(classes).tolist() if isinstance(classes, list | tuple | np.ndarray) else None
        )

    def predict(self, batch: Any) -> Outputs:
        result = self.model.predict(batch)
        if isinstance(result, dict):
            return {str(name): np.asarray(values) for name, values in result.items()}
        if isinstance(result, np.ndarray | list | tuple) or hasattr(result, "to_numpy"):
            return {"prediction": np.asarray(result)}
        raise BundleError(
            f"Got {type(result).__name__} from {type(self.model).__qualname__}.predict(). "
            "Expected an array (one value per row) or a dict of arrays.",
            hint="Return a numpy array, a list, or {'name': array, ...}.",
        )


class PythonRuntime(Runtime):
    kind = "python"
    extra = None
    packages: ClassVar[tuple[str, ...]] = ("numpy",)

    @classmethod
    def handles(cls, model: object) -> bool:
        return callable(getattr(model, "predict", None))

    @classmethod
    def save(cls, model: object, folder: Path, sample: Any) -> Saved:
        klass = type(model)
        try:
            inspect.signature(klass).bind()
        except TypeError as exc:
            # Caught now rather than at the first deployment: load builds it with no arguments.
            raise ManifestError(
                f"{klass.__qualname__}() needs constructor arguments. Expected a class that "
                "can be built with no arguments.",
                hint="Give every __init__ parameter a default, and restore state in "
                "load(folder) from files written by save(folder).",
                field="model",
            ) from exc
        except ValueError:
            pass  # no signature to inspect (a C type); load will tell
        code_file, entrypoint = copy_class_source(klass, folder)
        save = getattr(model, "save", None)
        if callable(save):
            save(model_dir(folder))
        return Saved(
            files=files_under(folder, MODEL_DIR),
            options={"entrypoint": entrypoint},
            code_files=[code_file],
        )

    @classmethod
    def load(cls, folder: Path, options: dict[str, Any]) -> Predictor:
        entrypoint = str(options.get("entrypoint", ""))
        klass = import_entry(folder, entrypoint)
        path = Path(folder) / MODEL_DIR
        with reading(folder, path, entrypoint):
            model = klass()
            load = getattr(model, "load", None)
            if callable(load):
                # load(folder) may fill the instance in, or (as a classmethod) return a new one.
                loaded = load(path)
                if loaded is not None and callable(getattr(loaded, "predict", None)):
                    model = loaded
        return PythonPredictor(model)
