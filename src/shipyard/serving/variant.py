"""One model version served inside a deployment: the core prediction path.

validate (on the event loop, cheap) -> batch -> runtime (worker thread) -> validate outputs.
Requests' batches are merged into one model call and the outputs split back by row counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from shipyard.bundle.schema import check_outputs
from shipyard.routing import ServingConfig
from shipyard.runtimes.base import Outputs
from shipyard.runtimes.model import Model
from shipyard.serving.batcher import Batcher


def rows_in(batch: Any) -> int:
    return len(batch)


def merge(batches: Sequence[Any]) -> Any:
    """Concatenate request batches of one layout into one model batch."""
    first = batches[0]
    if len(batches) == 1:
        return first
    if isinstance(first, np.ndarray):
        return np.concatenate(batches)
    if isinstance(first, pd.DataFrame):
        return pd.concat(batches, ignore_index=True)
    merged: list[Any] = []
    for batch in batches:
        merged.extend(batch)
    return merged


def split(outputs: Outputs, sizes: Sequence[int]) -> list[Outputs]:
    if len(sizes) == 1:
        return [outputs]
    parts: list[Outputs] = [{} for _ in sizes]
    for name, values in outputs.items():
        start = 0
        for index, size in enumerate(sizes):
            parts[index][name] = values[start:start + size]
            start += size
    return parts


class ModelFailure(Exception):
    """The model (or its own code) raised, or broke its output schema."""


class Variant:
    """A loaded model version with its batcher."""

    def __init__(self, deployment: str, name: str, role: str, model: Model,
                 config: ServingConfig) -> None:
        self.deployment = deployment
        self.name = name
        self.role = role
        self.model = model
        self.version = model.version
        self.config = config
        self.outputs_spec = list(model.schema.outputs)
        self.batcher = Batcher(self._run, rows_of=rows_in, max_batch=config.max_batch,
                               max_wait_s=config.max_wait_ms / 1000.0,
                               name=f"{deployment}-{name}")

    def _run(self, batches: Sequence[Any]) -> list[Outputs]:
        try:
            outputs = self.model.run(merge(batches))
            outputs = {k: np.asarray(v) for k, v in outputs.items()}
            check_outputs(outputs, self.outputs_spec)
        except Exception as exc:
            raise ModelFailure(f"{type(exc).__name__}: {exc}") from exc
        return split(outputs, [rows_in(b) for b in batches])

    def prepare(self, data: Any) -> Any:
        return self.model.prepare(data, max_rows=self.config.max_rows)

    async def predict(self, batch: Any) -> Outputs:
        """Outputs for a prepared batch; raises ModelFailure or asyncio.TimeoutError."""
        future = self.batcher.submit(batch)
        return await asyncio.wait_for(future, self.config.timeout_ms / 1000.0)

    def warm(self) -> None:
        """One synthetic prediction in the calling thread, so the first caller pays nothing."""
        from shipyard.bundle.samples import example_rows

        self._run([self.prepare(example_rows(self.model.manifest))])

    def close(self) -> None:
        self.batcher.close()
        self.model.close()
