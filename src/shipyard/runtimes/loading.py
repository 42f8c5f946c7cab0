"""What several runtime adapters share: lazy framework imports, load-error wrapping, copying
a model class's source file into the bundle, and classifier output shaping.

Kept free of any framework import, like the adapters themselves.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from shipyard.bundle.files import resolve_inside
from shipyard.errors import BundleError, ManifestError, ShipyardError, missing_extra
from shipyard.runtimes.base import Outputs

MODEL_DIR = "model"
CODE_DIR = "code"


def require(module: str, package: str, extra: str) -> ModuleType:
    """Import an optional framework, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(package, extra) from exc


def model_dir(folder: Path) -> Path:
    """The bundle's `model/` folder, created when missing."""
    path = Path(folder) / MODEL_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact(folder: Path, name: str, kind: str) -> Path:
    """The path of `model/<name>` in a bundle, which must exist."""
    path = resolve_inside(folder, f"{MODEL_DIR}/{name}")
    if not path.exists():
        raise BundleError(
            f"The bundle has no {MODEL_DIR}/{name}, where the {kind} runtime keeps its model.",
            hint="Package the model again, or check runtime.kind in shipyard.yaml.",
            file=f"{MODEL_DIR}/{name}",
        )
    return path


def relative(folder: Path, path: Path) -> str:
    """A bundle-relative POSIX path, as the manifest lists files."""
    return path.relative_to(folder).as_posix()


def files_under(folder: Path, sub: str) -> list[str]:
    """Every file below `folder/sub`, bundle-relative and sorted."""
    root = Path(folder) / sub
    if not root.is_dir():
        return []
    return sorted(relative(folder, p) for p in root.rglob("*") if p.is_file())


@contextmanager
def reading(folder: Path, path: Path, framework: str) -> Iterator[None]:
    """Turn a framework's failure to read an artifact into a BundleError naming the file.

    Our own errors (an unsafe pickle, a missing extra) pass through unchanged.
    """
    try:
        yield
    except ShipyardError:
        raise
    except Exception as exc:
        root, real = Path(os.path.realpath(folder)), Path(os.path.realpath(path))
        name = real.relative_to(root).as_posix() if real.is_relative_to(root) else str(path)
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise BundleError(
            f"Could not load {name} with {framework}: {type(exc).__name__}"
            + (f": {reason}" if reason else "")
            + ".",
            hint="The file is corrupt, truncated or written by an incompatible "
            f"{framework} version. Rebuild the bundle, or install the {framework} version "
            "pinned in its manifest.",
            file=name,
        ) from exc


# -- user code files ---------------------------------------------------------------------


def copy_class_source(klass: type, folder: Path) -> tuple[str, str]:
    """Copy the file that defines `klass` into `code/`; return (bundle path, entrypoint).

    Only that one file travels: it may import installed packages, not sibling modules. The
    entrypoint `stem:Class` is what `shipyard.runtimes.code.import_entry` reads back.
    """
    name = f"{klass.__module__}.{klass.__qualname__}"
    if klass.__module__ == "__main__" or "." in klass.__qualname__:
        # Re-running a training script or notebook at serving time would be a disaster, and
        # a class nested in a function or another class cannot be imported by name.
        raise ManifestError(
            f"Got class {name}, defined in a script, notebook or function. Expected a class "
            "defined at the top level of an importable module file.",
            hint="Move the class into its own file (e.g. my_model.py), import it from there, "
            "and package again.",
            field="model",
        )
    try:
        source = inspect.getsourcefile(klass)
    except TypeError:
        source = None
    if source is None or not source.endswith(".py") or not Path(source).is_file():
        raise ManifestError(
            f"Could not find the Python source file of {name}.",
            hint="Define the class in a .py file on disk and import it from there.",
            field="model",
        )
    stem = Path(source).stem
    if not stem.isidentifier():
        raise ManifestError(
            f"Got source file {Path(source).name!r} for {name}. Expected a file name that is a "
            "Python identifier, so the bundle can import it.",
            hint="Rename the file, e.g. my-model.py -> my_model.py.",
            field="model",
        )
    target = Path(folder) / CODE_DIR / f"{stem}.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.read_bytes() != Path(source).read_bytes():
        raise BundleError(
            f"Two different code files are named {stem}.py.",
            hint="Rename one of the modules so each file under code/ has its own name.",
            file=relative(folder, target),
        )
    shutil.copyfile(source, target)
    return relative(folder, target), f"{stem}:{klass.__qualname__}"


# -- outputs -------------------------------------------------------------------------------


def classes_option(classes: Any) -> dict[str, Any]:
    """Record class labels in JSON with their dtype, so labels come back in the same dtype."""
    array = np.asarray(classes)
    return {"classes": array.tolist(), "classes_dtype": array.dtype.str}


def restore_classes(options: dict[str, Any]) -> np.ndarray | None:
    """The class labels recorded by `classes_option`, or None."""
    classes = options.get("classes")
    if classes is None:
        return None
    dtype = options.get("classes_dtype")
    return np.asarray(classes, dtype=np.dtype(dtype) if dtype else None)


def classify(probabilities: np.ndarray, classes: np.ndarray | None) -> Outputs:
    """Label (the most probable class) and probabilities from an [n, classes] array."""
    index = np.argmax(probabilities, axis=1)
    labels = classes[index] if classes is not None else index
    return {"label": labels, "probabilities": probabilities}


def prediction(values: np.ndarray) -> Outputs:
    """One value per row, like scikit-learn regressors: an [n, 1] output becomes [n]."""
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    return {"prediction": values}
