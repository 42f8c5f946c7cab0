"""Rollout plans: the strategy, its steps and the analysis rules, validated up front.

A plan comes from YAML (`RolloutPlan.from_yaml`) or from CLI flags (`RolloutPlan.from_flags`:
`--strategy canary --model M:V --steps 5,25,50,100 --interval 10m --rules rules.yaml`).
Whatever is wrong with it is refused here, with the field and what to write instead, so a
rollout never starts on a plan that could not finish: every step has a deadline and a
declared terminal action.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from shipyard.errors import BadReferenceError, ConfigError
from shipyard.registry.refs import parse_ref
from shipyard.rollout.rules import Rule

__all__ = ["ABConfig", "CompatPolicy", "RolloutPlan", "Step", "Strategy", "parse_duration"]

Strategy = Literal["direct", "shadow", "canary", "ab", "champion_challenger"]
STRATEGIES: tuple[str, ...] = ("direct", "shadow", "canary", "ab", "champion_challenger")
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION_S = 366 * 86400.0
KEY_PATTERN = re.compile(r"(header|field):[A-Za-z0-9_.-]{1,100}")
DOCS = "See docs/rollouts.md for the plan format."


def parse_duration(value: Any) -> float:
    """'90s', '10m', '1h', '2d' or a number of seconds -> seconds (0 allowed)."""
    if isinstance(value, bool):
        raise ValueError(f"got {value!r}: expected a duration such as 90s, 10m, 1h or 2d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        raw = value.strip().lower()
        try:
            seconds = float(raw[:-1]) * UNITS[raw[-1]] if raw[-1:] in UNITS else float(raw)
        except ValueError:
            seconds = math.nan
    else:
        seconds = math.nan
    if not 0 <= seconds <= MAX_DURATION_S:  # NaN fails too
        raise ValueError(f"got {str(value)[:20]!r}: expected a duration such as 90s, 10m, "
                         "1h or 2d (at most 366d)")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Step(_Strict):
    """One step of a rollout: hold at `weight` until judged, approved or out of time."""

    weight: float | None = Field(
        default=None, ge=0, le=100, allow_inf_nan=False,
        description="Percent of live traffic to the candidate (shadow and champion/"
        "challenger: 0 scores in shadow). Default: the strategy's (direct 100, shadow 0).")
    min_duration_s: Duration = Field(default=0.0, description="Shortest time at this step.")
    min_samples: int = Field(default=0, ge=0,
                             description="Requests the candidate must answer at this step.")
    wait_for_labels: int = Field(default=0, ge=0, description="Labelled predictions needed "
                                 "per arm (champion and candidate) before judging.")
    approval: bool = Field(default=False,
                           description="Hold until the deployment's owner approves.")
    deadline_s: Duration = Field(default=86400.0, gt=0,
                                 description="Longest time at this step; then on_deadline.")
    on_deadline: Literal["promote", "rollback", "abort"] = Field(
        default="rollback", description="What happens when the deadline passes undecided.")

    @model_validator(mode="after")
    def _times(self) -> Step:
        if self.deadline_s < self.min_duration_s:
            raise ValueError(f"deadline_s {self.deadline_s:g} is shorter than min_duration_s "
                             f"{self.min_duration_s:g}: the step could never be judged")
        return self


class ABConfig(_Strict):
    """A/B: sticky assignment by a request key, and each arm's share of traffic."""

    key: str = Field(description="header:NAME or field:NAME, e.g. header:X-User.")
    split: dict[str, float] = Field(description="Arm (variant name) -> percent; adds to 100.")

    @model_validator(mode="after")
    def _split(self) -> ABConfig:
        if not KEY_PATTERN.fullmatch(self.key):
            raise ValueError(f"got {self.key[:60]!r} for the sticky key: expected header:NAME "
                             "or field:NAME, e.g. header:X-User or field:user_id")
        if len(self.split) < 2:
            raise ValueError(f"an A/B split needs two arms or more, got {len(self.split)}")
        bad = {k: v for k, v in self.split.items() if not (math.isfinite(v) and 0 < v < 100)}
        if bad:
            raise ValueError(f"A/B arm shares must be between 0 and 100, got {bad}")
        total = sum(self.split.values())
        if abs(total - 100) > 1e-6:
            raise ValueError(f"the A/B split adds up to {total:g}, not 100: "
                             f"{self.split}")
        return self


class CompatPolicy(_Strict):
    allow_breaking: bool = Field(default=False, description="Go ahead despite breaking "
                                 "schema changes (recorded with the reason).")
    reason: str = Field(default="", max_length=500, description="Why breaking is accepted.")

    @model_validator(mode="after")
    def _reason(self) -> CompatPolicy:
        if self.allow_breaking and not self.reason.strip():
            raise ValueError("allow_breaking needs a reason, recorded with the rollout")
        return self


class RolloutPlan(_Strict):
    """What to roll out, how, and what decides it (docs/rollouts.md)."""

    strategy: Strategy = Field(description="direct, shadow, canary, ab or "
                               "champion_challenger.")
    model: str | list[str] = Field(description="The candidate NAME:VERSION (for "
                                   "champion_challenger: a list of challengers).")
    steps: list[Step] = Field(default_factory=list, description="The steps, in order.")
    interval_s: Duration = Field(default=60.0, gt=0, description="Evaluation cadence.")
    rules: list[Rule] = Field(default_factory=list, description="Analysis rules.")
    ab: ABConfig | None = Field(default=None, description="A/B key and split (ab only).")
    compat: CompatPolicy = Field(default_factory=CompatPolicy,
                                 description="Schema-compatibility policy.")

    @model_validator(mode="before")
    @classmethod
    def _strategy_first(cls, data: Any) -> Any:
        # An unknown strategy would otherwise surface as a confusing literal error.
        if isinstance(data, dict) and "strategy" in data and data["strategy"] not in STRATEGIES:
            raise ValueError(f"unknown strategy {str(data['strategy'])[:40]!r}: expected one "
                             f"of {', '.join(STRATEGIES)}")
        return data

    @model_validator(mode="after")
    def _check(self) -> RolloutPlan:
        self._check_models()
        self.steps = _default_steps(self.strategy, self.steps)
        _check_weights(self.strategy, self.steps, len(self.candidates))
        names = [r.name for r in self.rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique, repeated: {', '.join(twice)}")
        if self.strategy == "ab" and self.ab is None:
            raise ValueError("an A/B plan needs ab.key (header:NAME or field:NAME) and "
                             "ab.split, e.g. {key: 'header:X-User', split: {a: 50, b: 50}}")
        if self.strategy != "ab" and self.ab is not None:
            raise ValueError(f"ab is only for the ab strategy, not {self.strategy}")
        if self.ab is not None and len(self.ab.split) != 1 + len(self.candidates):
            raise ValueError(f"the A/B split has {len(self.ab.split)} arms; expected the "
                             f"champion plus {len(self.candidates)} candidate(s)")
        if self.strategy == "champion_challenger" and not any(
                r.relative is not None and r.op in ("<", ">") and not r.dry_run
                for r in self.rules):
            raise ValueError("champion_challenger promotes a challenger that beats the "
                             "champion: declare at least one rule with a strict op relative "
                             "to the champion, e.g. 'accuracy > champion'")
        for i, step in enumerate(self.steps):
            if self.strategy == "champion_challenger" and step.on_deadline == "promote":
                raise ValueError(f"step {i}: champion_challenger promotes only a challenger "
                                 "that beats the champion, so on_deadline must be rollback "
                                 "or abort")
            if self.interval_s > step.deadline_s:
                raise ValueError(f"interval_s {self.interval_s:g} is longer than step {i}'s "
                                 f"deadline_s {step.deadline_s:g}")
        return self

    def _check_models(self) -> None:
        models = [self.model] if isinstance(self.model, str) else list(self.model)
        if not models:
            raise ValueError("model is empty: name the candidate as NAME:VERSION")
        if self.strategy != "champion_challenger" and len(models) != 1:
            raise ValueError(f"{self.strategy} rolls out one model, got {len(models)}; "
                             "several challengers are for champion_challenger")
        for text in models:
            try:
                parse_ref(text)
            except BadReferenceError as exc:
                raise ValueError(str(exc)) from None
        if len(set(models)) != len(models):
            raise ValueError(f"model names a version twice: {models}")
        self.model = models if self.strategy == "champion_challenger" else models[0]

    @property
    def candidates(self) -> list[str]:
        """The candidate model references, as a list whatever the strategy."""
        return [self.model] if isinstance(self.model, str) else list(self.model)

    @classmethod
    def parse(cls, data: Any) -> RolloutPlan:
        """Validate a plan given as plain data; ConfigError names the field at fault."""
        if not isinstance(data, dict):
            raise ConfigError(f"Got {type(data).__name__} for a rollout plan. Expected a "
                              "mapping with strategy, model, steps and rules.", hint=DOCS)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ").rstrip(".")
            raise ConfigError(f"Rollout plan{f' {where}' if where else ''}: {message}.",
                              hint=DOCS, field=where or "plan") from None

    @classmethod
    def from_yaml(cls, text: str) -> RolloutPlan:
        return cls.parse(_load_yaml(text, "rollout plan"))

    @classmethod
    def from_flags(cls, *, strategy: str, model: str | Sequence[str],
                   steps: str | None = None, interval: str | None = None,
                   rules: str | None = None, ab_key: str | None = None,
                   ab_split: str | None = None, step_duration: str | None = None,
                   deadline: str | None = None, on_deadline: str | None = None,
                   min_samples: int | None = None, wait_for_labels: int | None = None,
                   approval: bool = False, allow_breaking: bool = False,
                   reason: str = "") -> RolloutPlan:
        """Build a plan from CLI flags; `rules` is the text of the rules file (the CLI reads
        it), either a list of rules or a mapping with a `rules` list."""
        data: dict[str, Any] = {"strategy": strategy}
        if isinstance(model, str):
            parts = [m.strip() for m in model.split(",") if m.strip()]
            data["model"] = parts if strategy == "champion_challenger" else model.strip()
        else:
            data["model"] = list(model)
        step: dict[str, Any] = {}
        for key, value in (("min_duration_s", step_duration), ("deadline_s", deadline),
                           ("on_deadline", on_deadline), ("min_samples", min_samples),
                           ("wait_for_labels", wait_for_labels)):
            if value is not None:
                step[key] = value
        if approval:
            step["approval"] = True
        if steps:
            data["steps"] = [{**step, "weight": w} for w in _weights(steps)]
        elif step:
            data["steps"] = [step]
        if interval is not None:
            data["interval_s"] = interval
        if rules:
            loaded = _load_yaml(rules, "rules file")
            data["rules"] = loaded.get("rules") if isinstance(loaded, dict) else loaded
        if ab_key is not None or ab_split is not None:
            data["ab"] = {"key": ab_key, "split": _split(ab_split or "")}
        if allow_breaking or reason:
            data["compat"] = {"allow_breaking": allow_breaking, "reason": reason}
        return cls.parse(data)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _load_yaml(text: str, what: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"The {what} is not valid YAML{where}.", hint=DOCS) from None


def _weights(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"Got {text[:60]!r} for --steps. Expected percentages separated "
                          "by commas.", hint="e.g. --steps 5,25,50,100") from None


def _split(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in (p for p in text.split(",") if p.strip()):
        name, sep, share = part.partition("=")
        try:
            out[name.strip()] = float(share)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"Got {part[:40]!r} in --ab-split. Expected ARM=PERCENT.",
                              hint="e.g. --ab-split champion=50,candidate=50")
    return out


def _default_steps(strategy: str, steps: list[Step]) -> list[Step]:
    default = {"direct": 100.0, "shadow": 0.0, "champion_challenger": 0.0}.get(strategy)
    if not steps:
        if strategy == "canary":
            raise ValueError("a canary needs steps, e.g. steps: [{weight: 5}, {weight: 25}, "
                             "{weight: 100}] or --steps 5,25,100")
        steps = [Step()]
    if default is None:
        return steps
    return [s if s.weight is not None else s.model_copy(update={"weight": default})
            for s in steps]


def _check_weights(strategy: str, steps: list[Step], candidates: int) -> None:
    weights = [s.weight for s in steps]
    if strategy == "direct" and weights != [100.0]:
        raise ValueError(f"direct has one step at weight 100, got {weights}")
    if strategy == "shadow" and any(w != 0 for w in weights):
        raise ValueError(f"shadow steps take no live traffic (weight 0), got {weights}")
    if strategy == "ab" and any(w is not None for w in weights):
        raise ValueError("A/B traffic follows ab.split: leave the steps' weight out")
    if strategy == "canary":
        if any(w is None for w in weights):
            raise ValueError("every canary step needs a weight (percent of traffic)")
        shown = ", ".join(f"{w:g}" for w in weights if w is not None)
        if (weights[0] or 0) <= 0:
            raise ValueError(f"canary weights must start above 0, got {shown}")
        if any(b <= a for a, b in itertools.pairwise(weights)
               if a is not None and b is not None):
            raise ValueError(f"canary weights must increase step by step, got {shown}")
    if strategy == "champion_challenger" and any((w or 0) * candidates > 100 for w in weights):
        raise ValueError(f"{candidates} challengers at {max(w or 0 for w in weights):g}% "
                         "each take more than all the traffic")
