"""Guardrails on the core path, for deployments whose model takes or produces text.

Text inputs are scanned for prompt injection before the model sees them; text outputs for
secrets, personal data and exfiltration (links and images to hosts off the allowlist) before
the caller does. By the deployment's policy a violation blocks (an input: 422; an output: the
offending parts are replaced) or is flagged; either way it is counted in monitoring with the
model version (`shipyard_violations_total`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shipyard.bundle.manifest import Schema
from shipyard.errors import SchemaError
from shipyard.routing import GuardrailsConfig
from shipyard.runtimes.base import Outputs

if TYPE_CHECKING:
    from shipyard.security.guardrails import Guardrails


def build(config: GuardrailsConfig, schema: Schema,
          on_violation: Callable[[str], None]) -> Guardrails | None:
    """The guardrails of one variant, or None when they are off for it."""
    texty = any(f.dtype == "string" for f in (*schema.inputs, *schema.outputs))
    enabled = texty if config.enabled is None else config.enabled
    if not enabled:
        return None
    # Imported here: its detectors cost ~10 ms at start, and only text models use them.
    from shipyard.security.guardrails import Guardrails, Policy

    return Guardrails(Policy.model_validate(config.policy), allowed_hosts=config.allowed_hosts,
                      on_violation=on_violation)


def check_inputs(guardrails: Guardrails, schema: Schema, batch: Any) -> None:
    for text in _texts(schema, batch):
        verdict = guardrails.check_input(text)
        if not verdict.allowed:
            kinds = ", ".join(sorted({v.kind for v in verdict.violations}))
            raise SchemaError(
                f"The input was blocked by a guardrail ({kinds}).",
                hint="Rephrase the request; instructions aimed at the model are refused.",
                rule="guardrail",
            )


def check_outputs(guardrails: Guardrails, schema: Schema, outputs: Outputs) -> Outputs:
    """The outputs with blocked findings replaced (flagged ones are only counted)."""
    found = dict(outputs)
    for spec in schema.outputs:
        if spec.dtype != "string" or spec.name not in found:
            continue
        values = np.asarray(found[spec.name], dtype=object)
        cleaned = values.copy()
        for index, value in np.ndenumerate(values):
            if isinstance(value, str):
                verdict = guardrails.check_output(value)
                if not verdict.allowed and verdict.text is not None:
                    cleaned[index] = verdict.text
        found[spec.name] = cleaned
    return found


def _texts(schema: Schema, batch: Any) -> Iterator[str]:
    if schema.layout == "text" or (isinstance(batch, list) and batch
                                   and isinstance(batch[0], str)):
        yield from (t for t in batch if isinstance(t, str))
        return
    if isinstance(batch, pd.DataFrame):
        for spec in schema.inputs:
            if spec.dtype == "string" and spec.name in batch:
                yield from (t for t in batch[spec.name] if isinstance(t, str))
