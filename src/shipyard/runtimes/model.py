"""A ready model: a verified bundle with its runtime, preprocessing and postprocessing loaded.

`load_bundle(folder)` verifies every file's sha256 (and the signature when trusted keys are
configured), scans every artifact for unsafe pickles, then loads. `Model.infer` is the one
prediction path: validate against the input schema -> preprocess -> runtime -> postprocess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.bundle import files, scan
from shipyard.bundle.manifest import Manifest, Schema
from shipyard.bundle.schema import to_batch
from shipyard.errors import BundleError, SchemaError
from shipyard.runtimes.base import Outputs, Predictor, get_runtime
from shipyard.runtimes.code import import_entry

PRIMARY = ("label", "prediction", "embedding")


class Model:
    """A loaded bundle, ready to predict."""

    def __init__(
        self,
        manifest: Manifest,
        folder: Path,
        predictor: Predictor,
        preprocess: Callable[[Any], Any] | None = None,
        postprocess: Callable[[Outputs], Outputs] | None = None,
    ) -> None:
        self.manifest = manifest
        self.folder = folder
        self.predictor = predictor
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.schema: Schema = manifest.schema_ or Schema()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def __repr__(self) -> str:
        return f"<shipyard.Model {self.name}:{self.version} runtime={self.manifest.runtime.kind}>"

    def prepare(self, data: Any, *, max_rows: int | None = None) -> Any:
        """Validate `data` against the input schema and return the batch in the model's layout."""
        if not self.schema.inputs:
            return data
        return to_batch(data, self.schema, max_rows=max_rows)

    def run(self, batch: Any) -> Outputs:
        """Predict on a batch that `prepare` returned."""
        if self.preprocess is not None:
            batch = self.preprocess(batch)
        outputs = self.predictor.predict(batch)
        if self.postprocess is not None:
            outputs = self.postprocess(outputs)
        return outputs

    def enter_thread(self) -> None:
        """This thread runs every later `run` (a variant's model thread)."""
        self.predictor.enter_thread()

    def infer(self, data: Any) -> Outputs:
        """Every output of the model on `data`, as a dict of arrays."""
        return self.run(self.prepare(data))

    def predict(self, data: Any) -> np.ndarray:
        """The primary output: labels, predictions or embeddings."""
        outputs = self.infer(data)
        for name in PRIMARY:
            if name in outputs:
                return outputs[name]
        return next(iter(outputs.values()))

    def predict_proba(self, data: Any) -> np.ndarray:
        outputs = self.infer(data)
        if "probabilities" not in outputs:
            raise SchemaError(
                f"{self.name}:{self.version} gives no probabilities.",
                hint="Use predict(); only classifiers give probabilities.",
            )
        return outputs["probabilities"]

    @property
    def classes(self) -> list[Any] | None:
        return getattr(self.predictor, "classes", None)

    def close(self) -> None:
        self.predictor.close()


def load_bundle(folder: Path, *, trusted_keys: Sequence[Path] = ()) -> Model:
    """Verify and load the bundle in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(
            f"Bundle folder {str(folder)!r} does not exist.",
            hint="Check the path, or load a registry reference NAME:VERSION.",
        )
    manifest = Manifest.read(folder)
    files.verify(folder, manifest)
    if trusted_keys:
        from shipyard.bundle import signing  # cryptography: only when signatures are checked

        signing.verify(folder, trusted_keys)
    for entry in manifest.artifacts:
        scan.check_artifact(files.resolve_inside(folder, entry.path))
    runtime = get_runtime(manifest.runtime.kind)
    predictor = runtime.load(folder, dict(manifest.runtime.options))
    pre = import_entry(folder, manifest.code.preprocess) if manifest.code.preprocess else None
    post = import_entry(folder, manifest.code.postprocess) if manifest.code.postprocess else None
    return Model(manifest, folder, predictor, pre, post)
