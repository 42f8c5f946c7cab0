"""ONNX graphs, run with onnxruntime on CPU.

Output names follow skl2onnx (and onnxmltools): a classifier graph has ``label`` and
``probabilities`` (``output_label`` / ``output_probability``); anything else answers with its
first output as ``prediction``. Convert classifiers with ``options={'zipmap': False}``: a
ZipMap output (a list of dicts) is accepted but costs a Python loop per row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shipyard.errors import ManifestError, SchemaError
from shipyard.runtimes.base import Outputs, Predictor, Runtime, Saved, class_modules
from shipyard.runtimes.loading import (
    artifact,
    classes_option,
    model_dir,
    prediction,
    reading,
    relative,
    require,
    restore_classes,
)

FILE = "model.onnx"
LABEL_NAMES = ("label", "output_label")
PROBABILITY_NAMES = ("probabilities", "output_probability")
CLASS_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")
# onnxruntime's type strings -> numpy dtypes for inputs.
DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def _graph_classes(model: Any) -> list[Any] | None:
    """Class labels stored on the graph's classifier node (TreeEnsembleClassifier, ...)."""
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings" and attribute.strings:
                return [s.decode() for s in attribute.strings]
            if attribute.name in CLASS_ATTRIBUTES[1:] and attribute.ints:
                return list(attribute.ints)
    return None


class ONNXPredictor(Predictor):
    def __init__(self, session: Any, classes: np.ndarray | None, columns: list[str] | None) -> None:
        self.session = session
        self.classes: list[Any] | None = None if classes is None else classes.tolist()
        inputs = session.get_inputs()
        if columns is None or len(columns) != len(inputs):
            columns = [i.name for i in inputs]
        # (graph input, DataFrame column, dtype), resolved once rather than per request.
        self._inputs = [
            (i.name, column, DTYPES.get(i.type, np.float32))
            for i, column in zip(inputs, columns, strict=True)
        ]
        outputs = {o.name: o.type for o in session.get_outputs()}
        label = next((n for n in LABEL_NAMES if n in outputs), None)
        proba = next((n for n in PROBABILITY_NAMES if n in outputs), None)
        if label and proba:
            self._names = [label, proba]
            self._zipmap = outputs[proba].startswith("seq(map")
        else:
            # Ask onnxruntime for the one output we return, not all of them.
            self._names = [next(iter(outputs))]
            self._zipmap = False

    def _feeds(self, batch: Any) -> dict[str, np.ndarray]:
        columns = getattr(batch, "columns", None)
        if len(self._inputs) > 1 and columns is not None:
            # skl2onnx's convention for mixed-type pipelines: one [n, 1] input per column.
            missing = [column for _, column, _ in self._inputs if column not in columns]
            if missing:
                raise SchemaError(
                    f"Got a batch without column(s) {missing[:5]}. Expected one column per "
                    f"graph input: {[column for _, column, _ in self._inputs]}.",
                    hint="Send every input column the model was converted with.",
                )
            return {
                name: batch[column].to_numpy(dtype=dtype).reshape(-1, 1)
                for name, column, dtype in self._inputs
            }
        name, _, dtype = self._inputs[0]
        array = batch.to_numpy(dtype=dtype) if columns is not None else np.asarray(batch, dtype)
        return {name: array}

    def predict(self, batch: Any) -> Outputs:
        results = self.session.run(self._names, self._feeds(batch))
        if len(self._names) == 1:
            return prediction(np.asarray(results[0]))
        labels, probabilities = results
        if self._zipmap:
            keys = list(probabilities[0]) if probabilities else []
            probabilities = [[row[k] for k in keys] for row in probabilities]
        return {
            "label": np.asarray(labels),
            "probabilities": np.asarray(probabilities, dtype=np.float32),
        }


class ONNXRuntime(Runtime):
    kind = "onnx"
    extra = "onnx"
    packages: ClassVar[tuple[str, ...]] = ("onnxruntime", "numpy")

    @classmethod
    def handles(cls, model: object) -> bool:
        return type(model).__name__ == "ModelProto" and any(
            m == "onnx" or m.startswith("onnx.") for m in class_modules(model)
        )

    @classmethod
    def save(cls, model: object, folder: Path, sample: Any) -> Saved:
        onnx = require("onnx", "onnx", "onnx")
        try:
            # Fail at packaging time, not at the first request.
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise ManifestError(
                f"The ONNX graph is invalid: {str(exc).splitlines()[0]}",
                hint="Fix the conversion; `onnx.checker.check_model(model)` shows the problem.",
                field="model",
            ) from exc
        path = model_dir(folder) / FILE
        onnx.save_model(model, str(path))
        options: dict[str, Any] = {"format": "onnx"}
        # skl2onnx sanitises input names ('mean radius' -> 'mean_radius'); with one graph
        # input per column, remember the sample's own names, which serving will send.
        columns = getattr(sample, "columns", None)
        proto: Any = model
        inputs = proto.graph.input
        if columns is not None and len(inputs) > 1 and len(columns) == len(inputs):
            options["input_columns"] = [str(c) for c in columns]
        classes = _graph_classes(model)
        if classes is not None:
            options.update(classes_option(classes))
        return Saved(files=[relative(folder, path)], options=options)

    @classmethod
    def load(cls, folder: Path, options: dict[str, Any]) -> Predictor:
        ort = require("onnxruntime", "onnxruntime", "onnx")
        path = artifact(folder, FILE, cls.kind)
        settings = ort.SessionOptions()
        # One thread per session by default: a server runs several workers, and oversubscribed
        # cores make tail latency worse, not better.
        settings.intra_op_num_threads = int(options.get("threads", 1))
        settings.inter_op_num_threads = 1
        with reading(folder, path, "onnxruntime"):
            session = ort.InferenceSession(
                str(path), sess_options=settings, providers=["CPUExecutionProvider"]
            )
        return ONNXPredictor(session, restore_classes(options), options.get("input_columns"))
