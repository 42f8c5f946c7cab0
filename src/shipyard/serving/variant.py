"""One model version served inside a deployment: the core prediction path.

validate (on the event loop, cheap) -> batch -> runtime (worker thread) -> validate outputs.
Requests' batches are merged into one model call and the outputs split back by row counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.bundle.schema import OutputTypeError, check_outputs, concat
from shipyard.errors import SchemaError
from shipyard.monitoring.monitor import KeepShare
from shipyard.routing import ServingConfig
from shipyard.runtimes.base import Outputs
from shipyard.runtimes.model import Model
from shipyard.serving.batcher import Batcher

if TYPE_CHECKING:
    from shipyard.security.guardrails import Guardrails


def rows_in(batch: Any) -> int:
    return len(batch)


def split(outputs: Outputs, sizes: Sequence[int]) -> list[Outputs]:
    if len(sizes) == 1:
        return [outputs]
    parts: list[Outputs] = [{} for _ in sizes]
    for name, values in outputs.items():
        start = 0
        for index, size in enumerate(sizes):
            parts[index][name] = values[start : start + size]
            start += size
    return parts


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        # The worker's late answer is then dropped: _resolve skips a future already done.
        future.set_exception(TimeoutError())


class ModelFailure(Exception):
    """The model (or its own code) raised: the fallback answers, or a 503."""


class InputRejected(SchemaError):
    """The model refused a schema-valid input, or answered outside its output schema: 422."""


def _broke_schema(exc: SchemaError) -> InputRejected:
    return InputRejected(
        f"The model's answer broke its output schema: {exc.message}",
        hint="The input is valid but drives the model outside its output range; "
        "check the input values.",
        **exc.details,
    )


INPUT_ERRORS = (ValueError, TypeError, ArithmeticError)


class Variant:
    """A loaded model version with its batcher."""

    def __init__(
        self, deployment: str, name: str, role: str, model: Model, config: ServingConfig
    ) -> None:
        self.deployment = deployment
        self.name = name
        self.role = role
        self.model = model
        self.version = model.version
        self.config = config
        self.outputs_spec = list(model.schema.outputs)
        self.guardrails: Guardrails | None = None  # set by the fleet for text models
        # Whose inputs and outputs the monitor gets: its share, drawn as each is answered.
        self.keep = KeepShare()
        self.timeout_s = config.timeout_ms / 1000.0
        self.batcher = Batcher(
            self._run,
            rows_of=rows_in,
            max_batch=config.max_batch,
            max_wait_s=config.max_wait_ms / 1000.0,
            name=f"{deployment}-{name}",
            on_start=model.enter_thread,
        )

    def _run(self, batches: Sequence[Any]) -> list[Outputs | Exception]:
        try:
            outputs = self._call(concat(batches))
        except InputRejected:
            if len(batches) == 1:
                raise
            # Someone in the batch sent an input the model refuses: find whom, answer the rest.
            return [self._run_alone(batch) for batch in batches]
        return self._checked(outputs, batches)

    def _run_alone(self, batch: Any) -> Outputs | Exception:
        try:
            return self._checked(self._call(batch), [batch])[0]
        except (InputRejected, ModelFailure) as exc:
            return exc

    def _call(self, batch: Any) -> Outputs:
        try:
            outputs = self.model.run(batch)
            outputs = {k: np.asarray(v) for k, v in outputs.items()}
        except INPUT_ERRORS as exc:
            # Frameworks signal inputs they cannot handle (infinities after scaling, overflow)
            # with these: the caller's input, not a broken model.
            raise InputRejected(
                f"The model refused this input: {str(exc)[:200]}",
                hint="Send values in the range the model was trained on.",
                rule="model",
            ) from exc
        except Exception as exc:
            raise ModelFailure(f"{type(exc).__name__}: {exc}") from exc
        missing = [spec.name for spec in self.outputs_spec if spec.name not in outputs]
        if missing:
            raise ModelFailure(f"the model returned no output {missing[0]!r}")
        return outputs

    def _checked(self, outputs: Outputs, batches: Sequence[Any]) -> list[Outputs | Exception]:
        sizes = [rows_in(b) for b in batches]
        try:
            # Every rule is per value: a batch that passes as a whole passes request by request.
            check_outputs(outputs, self.outputs_spec)
            return list(split(outputs, sizes))
        except OutputTypeError as exc:
            # The wrong kind of value is the model's bug, whatever the input: a fallback or a
            # 503, as when the model raises.
            raise ModelFailure(exc.message) from exc
        except SchemaError as exc:
            if len(batches) == 1:
                return [_broke_schema(exc)]
        # Checked per request: one caller's extreme input must not fail its batch-mates.
        parts: list[Outputs | Exception] = []
        for part in split(outputs, sizes):
            try:
                check_outputs(part, self.outputs_spec)
            except SchemaError as exc:
                parts.append(_broke_schema(exc))
                continue
            parts.append(part)
        return parts

    def prepare(self, data: Any) -> Any:
        return self.model.prepare(data, max_rows=self.config.max_rows)

    async def predict(self, batch: Any) -> Outputs:
        """Outputs for a prepared batch; raises ModelFailure, InputRejected or TimeoutError."""
        future = self.batcher.submit(batch)
        # A timer that cancels the future is much cheaper than asyncio.wait_for's task.
        timer = future.get_loop().call_later(self.timeout_s, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def warm(self) -> None:
        """One synthetic prediction in the calling thread, so the first caller pays nothing."""
        from shipyard.bundle.samples import example_rows

        result = self._run([self.prepare(example_rows(self.model.manifest))])[0]
        if isinstance(result, Exception):
            raise ModelFailure(f"warm-up answer was refused: {result}")

    def release(self) -> Model:
        """Stop this variant's batcher and hand its loaded model back (to keep it warm)."""
        self.batcher.close()
        return self.model

    def close(self) -> None:
        self.release().close()
