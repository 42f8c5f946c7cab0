"""The statistics behind rollout decisions: pure functions of counts and summaries.

- `wilson`: a confidence interval for a proportion that behaves at 0, 1 and small n.
- `mcnemar`: paired classifiers (shadow, champion/challenger) compared on the same labelled
  requests through their discordant pairs; exact binomial for few discordant pairs,
  chi-squared with continuity correction otherwise.
- `sample_ratio_mismatch`: a test of the observed traffic split against the configured one
  (p < 0.001 by default), which catches routing that silently drifted. Fixed-horizon
  chi-squared for a report read once; for a controller that looks every few seconds, the
  anytime-valid Dirichlet-multinomial test of Lindon and Malek, "Anytime-valid inference for
  multinomial count data" (2022), whose false-alarm rate stays under alpha however often
  it is checked (a chi-squared test checked every second on growing counts alarms by chance
  within minutes on a perfectly split rollout).
- `sequential_test`: a peeking-safe comparison of two arms' means (or proportions): the
  mixture sequential probability ratio test (mSPRT) with a normal mixture, after Johari,
  Pekelis and Walsh, "Always valid inference" (2017). Its confidence sequence and p-value
  stay valid however often the controller looks, so an A/B test may be judged at every
  evaluation without inflating false positives.
- `welch`: Welch's unequal-variance t-test, the fixed-horizon report shown beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scipy import special as spf
from scipy import stats as sps

from shipyard.errors import UserError

__all__ = [
    "McNemar",
    "Sequential",
    "Srm",
    "Welch",
    "mcnemar",
    "sample_ratio_mismatch",
    "sequential_test",
    "welch",
    "wilson",
]

EXACT_BELOW = 25  # discordant pairs under which McNemar uses the exact binomial test
SRM_ALPHA = 0.001  # a mismatch this unlikely is a routing bug, not bad luck
SRM_MIN_EXPECTED = 5.0  # the chi-squared approximation needs ~5 expected per cell
SRM_CONCENTRATION = 100.0  # the sequential test's Dirichlet prior: k x the configured shares
EFFECT = 0.1  # the mSPRT's mixing scale, in standard deviations of one observation


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise UserError(f"Got alpha {alpha!r}. Expected a number between 0 and 1.",
                        hint="Use e.g. 0.05 (5% false positives).")


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"Got {value!r} for {name}. Expected a whole number >= 0.",
                            hint="Counts come from monitoring; check the evidence.")


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for `successes` out of `n` ((0, 1) when n is 0)."""
    _check_counts(successes=successes, n=n)
    _check_alpha(1 - confidence)
    if successes > n:
        raise UserError(f"Got {successes} successes out of {n}. Expected at most n.",
                        hint="Check the counts.")
    if n == 0:
        return (0.0, 1.0)
    z = float(sps.norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 or n successes the bound is exactly 0 or 1; rounding must not move it.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


@dataclass(frozen=True)
class McNemar:
    champion_only: int  # discordant pairs the champion got right and the challenger wrong
    challenger_only: int
    statistic: float | None  # chi-squared statistic (None for the exact test)
    p_value: float
    method: str  # "exact" or "chi2"

    @property
    def discordant(self) -> int:
        return self.champion_only + self.challenger_only

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar(champion_only: int, challenger_only: int, *,
            exact_below: int = EXACT_BELOW) -> McNemar:
    """McNemar's test on the discordant cells of paired, labelled predictions (two-sided).

    Concordant pairs carry no information about which model is better, so only the pairs
    where exactly one model was right enter the test."""
    _check_counts(champion_only=champion_only, challenger_only=challenger_only)
    b, c = champion_only, challenger_only
    if b + c == 0:
        return McNemar(b, c, None, 1.0, "exact")
    if b + c < exact_below:
        p = float(sps.binomtest(min(b, c), b + c, 0.5).pvalue)
        return McNemar(b, c, None, min(1.0, p), "exact")
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return McNemar(b, c, statistic, float(sps.chi2.sf(statistic, 1)), "chi2")


@dataclass(frozen=True)
class Srm:
    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float | None
    p_value: float | None
    mismatch: bool
    sufficient: bool  # False: too little traffic to judge (never a mismatch then)
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sample_ratio_mismatch(observed: Mapping[str, int], configured: Mapping[str, float], *,
                          alpha: float = SRM_ALPHA,
                          method: Literal["chi2", "sequential"] = "chi2") -> Srm:
    """Tests `observed` requests against the `configured` percentages.

    `method="chi2"`: Pearson's goodness of fit, valid for one look at the counts.
    `method="sequential"`: the anytime-valid Bayes factor of a Dirichlet(k x configured)
    mixture against the configured split; its p-value (1 / Bayes factor) may be checked after
    every request and still alarms on a fair split with probability at most `alpha` over the
    whole run (Ville's inequality). `statistic` is then the Bayes factor's natural log.

    Variants configured at 0% take no part in the test, except that one receiving a
    noticeable share of traffic (>= 10 requests and >= 1%) is itself a mismatch: traffic
    reaches a variant that should get none."""
    _check_alpha(alpha)
    _check_counts(**{f"observed[{k!r}]": v for k, v in observed.items()})
    live = {k: float(w) for k, w in configured.items() if w > 0}
    total = sum(observed.values())
    shown_obs = {k: int(observed.get(k, 0)) for k in sorted(set(live) | set(observed))}
    stray = {k: v for k, v in observed.items() if k not in live and v > 0}
    for name, count in sorted(stray.items()):
        if count >= 10 and count >= 0.01 * total:
            return Srm(shown_obs, {k: total * w / 100 for k, w in live.items()}, None, 0.0,
                       True, True, f"{name} answered {count} of {total} requests but is "
                       "configured for 0% of traffic")
    if len(live) < 2:
        return Srm(shown_obs, {k: float(total) for k in live}, None, None, False, True,
                   "one live variant: nothing to split")
    weight_sum = sum(live.values())
    counts = [int(observed.get(k, 0)) for k in live]
    n = sum(counts)
    shares = [w / weight_sum for w in live.values()]
    expected = [n * share for share in shares]
    expected_by_name = dict(zip(live, expected, strict=True))
    if n == 0 or min(expected) < SRM_MIN_EXPECTED:
        return Srm(shown_obs, expected_by_name, None, None, False, False,
                   f"{n} requests: too few to test the split (need about "
                   f"{SRM_MIN_EXPECTED:g} expected per variant)")
    if method == "sequential":
        statistic = _log_bayes_factor(counts, shares, SRM_CONCENTRATION)
        p = math.exp(-statistic) if statistic > 0 else 1.0
        test = "anytime-valid"
    else:
        result = sps.chisquare(counts, expected)
        statistic, p, test = float(result.statistic), float(result.pvalue), "chi-squared"
    mismatch = p < alpha
    shown = ", ".join(f"{k} {100 * c / n:.1f}% (configured {100 * share:g}%)"
                      for k, c, share in zip(live, counts, shares, strict=True))
    reason = (f"sample-ratio mismatch: observed {shown} over {n} requests, {test} "
              f"p={p:.2g} < {alpha:g}" if mismatch
              else f"split as configured: {shown}, {test} p={p:.2g}")
    return Srm(shown_obs, expected_by_name, statistic, p, mismatch, True, reason)


def _log_bayes_factor(counts: list[int], shares: list[float], k: float) -> float:
    """log of the Dirichlet-multinomial marginal likelihood over the multinomial one at
    `shares` (Lindon and Malek 2022, eq. 5); the multinomial coefficient cancels."""
    prior = [k * s for s in shares]
    n = sum(counts)
    log_mixture = (spf.gammaln(k) - spf.gammaln(k + n)
                   + sum(spf.gammaln(a + x) - spf.gammaln(a)
                         for a, x in zip(prior, counts, strict=True)))
    log_null = sum(x * math.log(s) for x, s in zip(counts, shares, strict=True))
    return float(log_mixture - log_null)


@dataclass(frozen=True)
class Welch:
    diff: float  # candidate mean minus champion mean
    t: float
    df: float
    p_value: float
    ci_low: float
    ci_high: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def welch(champion: tuple[int, float, float], candidate: tuple[int, float, float], *,
          alpha: float = 0.05) -> Welch | None:
    """Welch's t-test from (n, mean, variance) summaries; None when either arm has < 2
    observations or both variances are 0 (no test is defined)."""
    _check_alpha(alpha)
    (n0, m0, v0), (n1, m1, v1) = champion, candidate
    if n0 < 2 or n1 < 2:
        return None
    se2 = v0 / n0 + v1 / n1
    if se2 <= 0:
        return None
    result = sps.ttest_ind_from_stats(m1, math.sqrt(v1), n1, m0, math.sqrt(v0), n0,
                                      equal_var=False)
    df = se2 ** 2 / ((v0 / n0) ** 2 / (n0 - 1) + (v1 / n1) ** 2 / (n1 - 1))
    half = float(sps.t.ppf(1 - alpha / 2, df)) * math.sqrt(se2)
    diff = m1 - m0
    return Welch(diff, float(result.statistic), df, float(result.pvalue),
                 diff - half, diff + half)


@dataclass(frozen=True)
class Sequential:
    """One look of the mSPRT at H0: candidate mean - ratio * champion mean = 0."""

    diff: float  # the estimate of candidate mean - ratio * champion mean
    ci_low: float  # the always-valid (1 - alpha) confidence sequence at this look
    ci_high: float
    p_value: float  # always valid: min(1, 1 / likelihood ratio); keep a running minimum
    likelihood_ratio: float
    rejected: bool  # likelihood ratio >= 1 / alpha: the arms differ
    n: int  # the smaller arm's sample size

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sequential_test(champion: tuple[int, float, float], candidate: tuple[int, float, float],
                    *, alpha: float = 0.05, ratio: float = 1.0,
                    effect: float = EFFECT) -> Sequential | None:
    """The normal-mixture mSPRT for a difference of means from (n, mean, variance) summaries.

    With V the variance of the estimate (var1/n1 + ratio^2 var0/n0) and a mixing
    distribution N(0, tau^2) over the true difference, the mixture likelihood ratio is

        L = sqrt(V / (V + tau^2)) * exp(tau^2 * diff^2 / (2 V (V + tau^2)))

    and H0 is rejected once L >= 1/alpha. Inverting it gives the confidence sequence
    diff +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V))).
    `effect` sets tau = effect * (the arms' pooled standard deviation): the test is most
    powerful for differences near that size. Variances are estimated from the data, so
    the guarantee is asymptotic: let each arm gather a few dozen observations first
    (the rule's min_samples). None when either arm is empty or has no variance at all."""
    _check_alpha(alpha)
    if not (math.isfinite(ratio) and ratio > 0 and math.isfinite(effect) and effect > 0):
        raise UserError(f"Got ratio {ratio!r}, effect {effect!r}. Expected positive numbers.",
                        hint="ratio 1 compares the means as they are.")
    (n0, m0, v0), (n1, m1, v1) = champion, candidate
    if n0 < 1 or n1 < 1:
        return None
    variance = v1 / n1 + ratio * ratio * v0 / n0
    if not variance > 0:
        return None
    tau2 = effect * effect * (v0 + v1) / 2
    if not tau2 > 0:
        return None
    diff = m1 - ratio * m0
    log_lr = 0.5 * math.log(variance / (variance + tau2)) + (
        tau2 * diff * diff / (2 * variance * (variance + tau2)))
    log_bound = math.log(1 / alpha)
    likelihood_ratio = math.exp(min(log_lr, 700.0))  # beyond e^700 a float overflows
    half = math.sqrt(variance * (variance + tau2) / tau2
                     * (2 * log_bound + math.log((variance + tau2) / variance)))
    return Sequential(diff, diff - half, diff + half, min(1.0, math.exp(-log_lr)),
                      likelihood_ratio, log_lr >= log_bound, min(n0, n1))
