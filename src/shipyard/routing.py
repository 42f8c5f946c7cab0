"""Deployment specs and traffic routing: pure, no I/O, no clock.

A deployment's desired state is a `DeploymentSpec`: its variants (each a pinned model version
with a role and a traffic weight) and how they are served (`ServingConfig`). The registry
stores the spec as JSON in each revision; servers read it; rollouts write new ones.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipyard.errors import UserError

Role = Literal["champion", "challenger", "canary", "shadow", "arm", "fallback"]
PASSIVE = ("shadow", "fallback")  # roles that never answer live traffic by weight


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fallback(_Strict):
    """What to answer when the model times out or fails."""

    kind: Literal["error", "static", "variant"] = Field(
        default="error",
        description="error: answer 503; static: a fixed answer; "
        "variant: ask another variant of the same deployment.",
    )
    value: dict[str, Any] | None = Field(
        default=None, description="For kind=static: the outputs to answer for every row."
    )
    variant: str | None = Field(default=None, description="For kind=variant: its name.")

    @model_validator(mode="after")
    def _complete(self) -> Fallback:
        if self.kind == "static" and not self.value:
            raise ValueError("a static fallback needs a value, e.g. {'label': 0}")
        if self.kind == "variant" and not self.variant:
            raise ValueError("a variant fallback needs the variant's name")
        return self


class ServingConfig(_Strict):
    max_batch: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Most rows predicted together (1 turns batching off).",
    )
    max_wait_ms: float = Field(
        default=0.0, ge=0, le=1000, description="How long a batch waits for more rows (0: never)."
    )
    timeout_ms: float = Field(
        default=10_000,
        gt=0,
        le=600_000,
        description="Longest a prediction may take before the fallback.",
    )
    max_rows: int = Field(default=1024, ge=1, le=1_000_000, description="Most rows in one request.")
    max_inflight: int = Field(
        default=512, ge=1, description="Most requests in progress before answering 429."
    )
    fallback: Fallback = Field(default_factory=Fallback, description="On timeout or error.")
    rate_limit_rps: float | None = Field(
        default=None, gt=0, le=1_000_000, description="Requests per second for the whole "
        "deployment (token bucket, shared through Redis when configured); over it: 429."
    )
    rate_limit_burst: float | None = Field(
        default=None, gt=0, description="Bucket size (default: 2 s of the rate)."
    )


RedactPolicy = Literal["keep", "hash", "mask", "drop"]


class RecordsConfig(_Strict):
    """Prediction records: which predictions are kept, where, how long, how redacted."""

    sample: float = Field(
        default=1.0, ge=0, le=1, description="Share of predictions recorded (0 turns it off)."
    )
    store: Literal["database", "parquet"] = Field(
        default="database",
        description="database: the registry's database; parquet: files under SHIPYARD_HOME.",
    )
    retention_days: float = Field(
        default=30, gt=0, le=3650, description="Records (and their feedback) older are purged."
    )
    redact: dict[str, RedactPolicy] = Field(
        default_factory=dict, description="Input field -> keep, hash, mask or drop."
    )
    default_policy: RedactPolicy = Field(
        default="keep", description="Policy for input fields not named in `redact`."
    )


class CostConfig(_Strict):
    """A cost model, accumulated as Prometheus counters."""

    per_request: float = Field(default=0.0, ge=0, description="Price of one request.")
    per_cpu_second: float = Field(default=0.0, ge=0, description="Price of one CPU-second.")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")


class DriftConfig(_Strict):
    """Windows and thresholds of drift detection (docs/drift.md explains the defaults)."""

    window_s: float = Field(
        default=3600, gt=0, le=30 * 86400, description="Length of the drift window, seconds."
    )
    slide_s: float = Field(
        default=300, gt=0, description="Sliding windows move by this much; equal to "
        "window_s for tumbling windows.",
    )
    min_rows: int = Field(default=100, ge=1, description="Rows a window needs before judging.")
    psi: float = Field(default=0.2, gt=0, description="PSI effect size that counts as drift.")
    js: float = Field(default=0.1, gt=0, le=1, description="Jensen-Shannon distance (base 2).")
    ks: float = Field(default=0.1, gt=0, le=1, description="KS statistic (numeric fields).")
    cramers_v: float = Field(
        default=0.1, gt=0, le=1, description="Cramer's V of the chi-squared test (categorical)."
    )
    alpha: float = Field(
        default=0.01, gt=0, lt=1, description="Significance the effect must also reach."
    )


class AlertRule(_Strict):
    """Fire when `metric` compared to `threshold` holds for `for_s` seconds."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Rule name.")
    metric: str = Field(
        min_length=1,
        max_length=200,
        description="A figure name, e.g. error_rate, latency_p99_ms, drift.psi.FIELD, accuracy.",
    )
    op: Literal[">", ">=", "<", "<="] = Field(default=">", description="Comparison.")
    threshold: float = Field(description="The value compared against.")
    for_s: float = Field(default=0, ge=0, description="How long it must hold before firing.")
    severity: Literal["info", "warning", "critical"] = Field(default="warning")
    variant: str | None = Field(default=None, description="Only this variant (default: each).")


class MonitoringConfig(_Strict):
    records: RecordsConfig = Field(default_factory=RecordsConfig)
    slices: list[str] = Field(
        default_factory=list, description="Input fields whose values split performance."
    )
    cost: CostConfig = Field(default_factory=CostConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    alerts: list[AlertRule] = Field(default_factory=list)
    webhook: str | None = Field(
        default=None,
        pattern=r"^(https?://|\$\{secret:[A-Za-z0-9_.-]{1,128}\}$)",
        description="URL alerts are POSTed to, or a ${secret:NAME} reference to it.",
    )


class RoutingConfig(_Strict):
    """Where a request's sticky key comes from: the same key always gets the same variant."""

    sticky_key: str | None = Field(
        default=None,
        pattern=r"^(header|field):[A-Za-z0-9_.-]{1,64}$",
        description="header:NAME or field:NAME (an input field, first row); default: the "
        "x-shipyard-key header, else the request id (not sticky).",
    )
    require_key: bool = Field(
        default=False, description="Refuse (400) a request without its sticky key (A/B tests)."
    )


class GuardrailsConfig(_Strict):
    """Language-model guardrails for deployments that take or produce text."""

    enabled: bool | None = Field(
        default=None,
        description="None: on for models with a text input or output; true/false to force.",
    )
    policy: dict[str, Literal["block", "flag"]] = Field(
        default_factory=dict,
        description="Per violation kind (prompt_injection, secret, pii, exfiltration, ...).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Hosts outputs may link to (others: exfiltration)."
    )


class VariantSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="Variant name.")
    model: str = Field(description="NAME:VERSION (pinned by the registry at deploy time).")
    version_digest: str | None = Field(default=None, description="Manifest sha256, pinned.")
    role: Role = Field(default="champion", description="What the variant is for.")
    weight: float = Field(default=100.0, ge=0, le=100, description="Share of live traffic, %.")


class DeploymentSpec(_Strict):
    variants: list[VariantSpec] = Field(min_length=1, description="Model versions served.")
    serving: ServingConfig = Field(default_factory=ServingConfig, description="How.")
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig, description="What is measured and kept."
    )
    routing: RoutingConfig = Field(
        default_factory=RoutingConfig, description="Sticky assignment of requests to variants."
    )
    guardrails: GuardrailsConfig = Field(
        default_factory=GuardrailsConfig, description="Checks on text going in and out."
    )

    @model_validator(mode="after")
    def _weights(self) -> DeploymentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        live = [v for v in self.variants if v.role not in PASSIVE]
        if not live or sum(v.weight for v in live) <= 0:
            raise ValueError("at least one non-shadow variant needs a positive weight")
        fallback = self.serving.fallback
        if fallback.kind == "variant" and fallback.variant not in names:
            raise ValueError(f"fallback variant {fallback.variant!r} is not a variant")
        return self

    @classmethod
    def parse(cls, data: Any) -> DeploymentSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            raise UserError(
                f"Deployment spec {where}: {first['msg']}.",
                hint="See docs/serving.md for the deployment spec.",
                field=where,
            ) from exc

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def bucket(key: str, salt: str = "") -> float:
    """A stable position in [0, 100) for a sticky key: same key, same bucket, everywhere."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100.0


class Router:
    """Chooses the answering variant for a request and the shadows that also see it.

    Each live variant owns a slice of [0, 100) in spec order (champion first, candidates
    after it), and a key's bucket picks the slice. Raising the last variant's weight only
    moves the boundary down: keys already on it stay on it (monotone ramping), and keys are
    never reshuffled between other variants.
    """

    def __init__(self, spec: DeploymentSpec, salt: str = "") -> None:
        self.salt = salt
        self.live = [v for v in spec.variants if v.role not in PASSIVE and v.weight > 0]
        self.shadows = [v.name for v in spec.variants if v.role == "shadow"]
        total = sum(v.weight for v in self.live)
        self._edges: list[tuple[float, str]] = []
        acc = 0.0
        for variant in self.live:
            acc += variant.weight / total * 100.0
            self._edges.append((acc, variant.name))
        self.only = self.live[0].name if len(self.live) == 1 else None

    def choose(self, key: str) -> str:
        """The variant that answers a request with sticky key `key`."""
        if self.only is not None:
            return self.only
        point = bucket(key, self.salt)
        for edge, name in self._edges:
            if point < edge:
                return name
        return self._edges[-1][1]
