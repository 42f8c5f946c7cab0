"""PyTorch modules: TorchScript archives, or a plain `nn.Module` as weights plus its source.

A scripted or traced module is self-contained (`model/model.pt`). A plain module is stored as
a `state_dict` (`model/state_dict.pt`, loaded with `weights_only=True`, so no pickle code
runs) and the file that defines its class is copied to `code/`; load imports the class from
there and builds it with the recorded `init_kwargs`.

A module opts into metadata by attributes: `shipyard_init_kwargs` (constructor arguments),
`shipyard_task` ("classification" or "regression") and `shipyard_classes` (class labels).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shipyard.bundle import scan
from shipyard.errors import BundleError, ManifestError
from shipyard.runtimes.base import Outputs, Predictor, Runtime, Saved, class_modules
from shipyard.runtimes.code import import_entry
from shipyard.runtimes.loading import (
    artifact,
    classes_option,
    classify,
    copy_class_source,
    model_dir,
    prediction,
    reading,
    relative,
    require,
    restore_classes,
)

SCRIPT_FILE = "model.pt"
STATE_FILE = "state_dict.pt"
TASKS = ("classification", "regression")


def _torch() -> Any:
    return require("torch", "torch", "torch")


class TorchPredictor(Predictor):
    def __init__(self, module: Any, task: str, classes: np.ndarray | None, dtype: str) -> None:
        self.module = module
        self.task = task
        self._classes = classes
        self.classes: list[Any] | None = None if classes is None else classes.tolist()
        self._dtype = np.dtype(dtype)
        self._torch = _torch()

    def predict(self, batch: Any) -> Outputs:
        torch = self._torch
        if hasattr(batch, "to_numpy"):
            array = batch.to_numpy(dtype=self._dtype)
        else:
            array = np.asarray(batch, dtype=self._dtype)
        if not array.flags.writeable:
            array = array.copy()  # torch.from_numpy warns about read-only arrays
        with torch.inference_mode():
            output = self.module(torch.from_numpy(array))
            if not isinstance(output, torch.Tensor):
                raise BundleError(
                    f"Got {type(output).__name__} from the module's forward(). Expected a "
                    "tensor with the batch as first dimension.",
                    hint="Return a single tensor, or wrap the model with runtime='python'.",
                )
            if self.task != "classification":
                return prediction(output.numpy())
            if output.ndim == 1 or output.shape[1] == 1:
                # One logit per row: a binary classifier.
                p = torch.sigmoid(output.reshape(-1))
                probabilities = torch.stack([1 - p, p], dim=1)
            else:
                probabilities = torch.softmax(output, dim=1)
            return classify(probabilities.numpy(), self._classes)


class TorchRuntime(Runtime):
    kind = "torch"
    extra = "torch"
    packages: ClassVar[tuple[str, ...]] = ("torch", "numpy")

    @classmethod
    def handles(cls, model: object) -> bool:
        return any(m.startswith("torch.") for m in class_modules(model))

    @classmethod
    def save(cls, model: object, folder: Path, sample: Any) -> Saved:
        torch = _torch()
        if not isinstance(model, torch.nn.Module):
            raise ManifestError(
                f"Got a {type(model).__qualname__}. Expected a torch.nn.Module or a "
                "TorchScript module.",
                hint="Pass the model itself, not its state_dict or a tensor.",
                field="model",
            )
        options = cls._metadata(model, sample)
        target = model_dir(folder)
        if isinstance(model, torch.jit.ScriptModule):
            path = target / SCRIPT_FILE
            torch.jit.save(model, str(path))
            options["format"] = "torchscript"
            return Saved(files=[relative(folder, path)], options=options)
        code_file, entrypoint = copy_class_source(type(model), folder)
        path = target / STATE_FILE
        torch.save(model.state_dict(), str(path))
        options.update(format="state_dict", entrypoint=entrypoint)
        return Saved(files=[relative(folder, path)], options=options, code_files=[code_file])

    @staticmethod
    def _metadata(model: Any, sample: Any) -> dict[str, Any]:
        task = getattr(model, "shipyard_task", "regression")
        if task not in TASKS:
            raise ManifestError(
                f"Got shipyard_task {task!r}. Expected one of: {', '.join(TASKS)}.",
                hint="Set model.shipyard_task = 'classification' or 'regression'.",
                field="model.shipyard_task",
            )
        init_kwargs = dict(getattr(model, "shipyard_init_kwargs", None) or {})
        try:
            json.dumps(init_kwargs)
        except TypeError as exc:
            raise ManifestError(
                f"model.shipyard_init_kwargs is not JSON-serialisable: {exc}.",
                hint="Keep constructor arguments to numbers, strings, lists and dicts.",
                field="model.shipyard_init_kwargs",
            ) from exc
        # Integer samples (token ids, category codes) stay integers; everything else is fed
        # as float32, the dtype of torch's default parameters.
        kind = getattr(getattr(sample, "dtype", None), "kind", "f")
        options: dict[str, Any] = {
            "task": task,
            "init_kwargs": init_kwargs,
            "input_dtype": "int64" if kind in "iu" else "float32",
        }
        classes = getattr(model, "shipyard_classes", None)
        if classes is not None:
            options.update(classes_option(classes))
        return options

    @staticmethod
    def _build(folder: Path, options: dict[str, Any]) -> Any:
        """Import the module's class from code/ and construct it with the recorded kwargs."""
        entrypoint = str(options.get("entrypoint", ""))
        klass = import_entry(folder, entrypoint)
        try:
            return klass(**options.get("init_kwargs", {}))
        except Exception as exc:
            raise BundleError(
                f"Could not build {entrypoint}(**init_kwargs): {type(exc).__name__}: {exc}",
                hint="Check runtime.options.init_kwargs against the class's __init__, or set "
                "model.shipyard_init_kwargs before packaging.",
                field="runtime.options.init_kwargs",
            ) from exc

    @classmethod
    def load(cls, folder: Path, options: dict[str, Any]) -> Predictor:
        torch = _torch()
        if options.get("threads"):
            # Process-wide in torch: the last loaded model's setting wins.
            torch.set_num_threads(int(options["threads"]))
        if options.get("format") == "torchscript":
            path = artifact(folder, SCRIPT_FILE, cls.kind)
            scan.check_artifact(path)
            with reading(folder, path, "torch"):
                module = torch.jit.load(str(path), map_location="cpu")
        else:
            path = artifact(folder, STATE_FILE, cls.kind)
            module = cls._build(folder, options)
            scan.check_artifact(path)
            with reading(folder, path, "torch"):
                state = torch.load(str(path), weights_only=True, map_location="cpu")
                module.load_state_dict(state)
        module.eval()
        return TorchPredictor(
            module,
            options.get("task", "regression"),
            restore_classes(options),
            options.get("input_dtype", "float32"),
        )
