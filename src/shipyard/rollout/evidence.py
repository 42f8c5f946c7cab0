"""Evidence: what monitoring measured over one evaluation window, handed to the rules.

This is the contract between monitoring (which measures) and rollout (which decides). The
controller fills it from monitoring's windows; the rules and `decide` only read it. Every
figure may be None ("no data"), which the rules treat through each rule's `missing` policy,
never as zero. NaN and infinities are turned into None on the way in: a broken measurement
is absent data, not a number to compare.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from shipyard.errors import UserError

__all__ = ["ArmEvidence", "Evidence", "Outcome", "Paired"]

HINT = "Evidence is filled by the rollout controller from monitoring; this is a bug there."


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: int, what: str, owner: str) -> int:
    # bool is an int in Python; a True count is always a mistake upstream.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"Got {value!r} for {what} of {owner}. Expected a whole number >= 0.",
                        hint=HINT)
    return value


@dataclass(frozen=True)
class Outcome:
    """A product metric from feedback for one arm: count, mean and (sample) variance.

    Thumbs up/down are a proportion: mean in [0, 1] and variance mean * (1 - mean)."""

    n: int
    mean: float | None
    variance: float | None

    def __post_init__(self) -> None:
        _count(self.n, "n", "an outcome")
        object.__setattr__(self, "mean", _finite(self.mean))
        variance = _finite(self.variance)
        if variance is not None and variance < 0:
            raise UserError(f"Got variance {variance} for an outcome. Expected >= 0.", hint=HINT)
        object.__setattr__(self, "variance", variance)

    @classmethod
    def from_values(cls, values: list[float]) -> Outcome:
        """Summarise raw values (e.g. thumbs as 1/0) with the unbiased sample variance."""
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        n = len(finite)
        if n == 0:
            return cls(0, None, None)
        mean = sum(finite) / n
        variance = sum((v - mean) ** 2 for v in finite) / (n - 1) if n > 1 else 0.0
        return cls(n, mean, variance)


@dataclass(frozen=True)
class ArmEvidence:
    """One variant (a model version) over the evaluation window."""

    variant: str
    version: str
    digest: str | None = None  # the manifest's sha256
    requests: int = 0  # answered, any status
    errors: int = 0  # 5xx after fallbacks
    timeouts: int = 0
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # "p50", "p95", "p99"
    # Anything else by name: "drift.inputs", "drift.psi.KEY", "confidence.top.mean",
    # "labelled", "accuracy", "f1_macro", "rmse", "accuracy.region=north" (per slice), ...
    figures: dict[str, float | None] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # by name: "thumbs", "score"

    def __post_init__(self) -> None:
        owner = f"variant {self.variant!r}"
        for what in ("requests", "errors", "timeouts"):
            _count(getattr(self, what), what, owner)
        if self.errors > self.requests or self.timeouts > self.requests:
            raise UserError(
                f"Got {self.errors} errors and {self.timeouts} timeouts for {self.requests} "
                f"requests of {owner}. Expected each at most the number of requests.", hint=HINT)
        object.__setattr__(self, "latency_ms",
                           {k: _finite(v) for k, v in self.latency_ms.items()})
        object.__setattr__(self, "figures", {k: _finite(v) for k, v in self.figures.items()})

    def labelled(self, where: str = "") -> int:
        """How many of this arm's predictions have a label (overall, or in a slice)."""
        value = self.figures.get(f"labelled{where}")
        return int(value) if value is not None and value > 0 else 0


@dataclass(frozen=True)
class Paired:
    """Shadow or champion/challenger: both variants answered the same requests."""

    n: int  # requests both answered
    agree: int  # same predicted class (classifiers) or |diff| <= tolerance (regressors)
    confusion: dict[str, dict[str, int]] | None = None  # champion class -> challenger -> n
    diffs: dict[str, float] | None = None  # regressors: mean, std, p50, p99 of the diff
    labelled_n: int = 0  # of which have a label
    champion_only_correct: int = 0  # McNemar's discordant cells, over labelled pairs
    challenger_only_correct: int = 0

    def __post_init__(self) -> None:
        for what in ("n", "agree", "labelled_n", "champion_only_correct",
                     "challenger_only_correct"):
            _count(getattr(self, what), what, "paired evidence")
        if self.agree > self.n or self.labelled_n > self.n:
            raise UserError(f"Got agree={self.agree}, labelled_n={self.labelled_n} for "
                            f"n={self.n} pairs. Expected each at most n.", hint=HINT)
        if self.champion_only_correct + self.challenger_only_correct > self.labelled_n:
            raise UserError("Got more discordant labelled pairs than labelled pairs.", hint=HINT)
        if self.diffs is not None:
            object.__setattr__(self, "diffs", {k: v for k, v in self.diffs.items()
                                               if _finite(v) is not None})


@dataclass(frozen=True)
class Evidence:
    """Everything one evaluation sees: the champion, the candidates, paired comparisons and
    the traffic split (configured in percent, observed in requests)."""

    at: float  # end of the window, seconds since the epoch
    window_s: float
    champion: ArmEvidence
    candidates: dict[str, ArmEvidence] = field(default_factory=dict)  # by variant name
    paired: dict[str, Paired] = field(default_factory=dict)  # by candidate variant name
    configured_split: dict[str, float] = field(default_factory=dict)  # variant -> percent
    observed_split: dict[str, int] = field(default_factory=dict)  # variant -> requests

    def __post_init__(self) -> None:
        if not (math.isfinite(self.at) and math.isfinite(self.window_s) and self.window_s >= 0):
            raise UserError(f"Got at={self.at}, window_s={self.window_s} for evidence. "
                            "Expected finite numbers, window_s >= 0.", hint=HINT)
        for name, count in self.observed_split.items():
            _count(count, f"the observed requests of {name!r}", "the traffic split")
        for name, weight in self.configured_split.items():
            if not (math.isfinite(weight) and 0 <= weight <= 100):
                raise UserError(f"Got {weight} for the configured share of {name!r}. "
                                "Expected a percentage in 0..100.", hint=HINT)

    @property
    def started(self) -> float:
        """When the window began."""
        return self.at - self.window_s

    def arm(self, variant: str) -> ArmEvidence | None:
        if variant == self.champion.variant:
            return self.champion
        return self.candidates.get(variant)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (for decision records and the API)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        def arm(raw: dict[str, Any]) -> ArmEvidence:
            outcomes = {k: Outcome(**v) for k, v in (raw.get("outcomes") or {}).items()}
            return ArmEvidence(**{**raw, "outcomes": outcomes})

        return cls(
            at=data["at"], window_s=data["window_s"], champion=arm(data["champion"]),
            candidates={k: arm(v) for k, v in (data.get("candidates") or {}).items()},
            paired={k: Paired(**v) for k, v in (data.get("paired") or {}).items()},
            configured_split=dict(data.get("configured_split") or {}),
            observed_split=dict(data.get("observed_split") or {}),
        )
