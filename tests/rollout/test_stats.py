"""Rollout statistics against scipy, known values and simulations of repeated peeking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from shipyard.errors import UserError
from shipyard.rollout.stats import (
    SRM_ALPHA,
    SRM_CONCENTRATION,
    mcnemar,
    sample_ratio_mismatch,
    sequential_test,
    welch,
    wilson,
)


@given(st.integers(0, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.9, 0.95, 0.99]))
def test_wilson_matches_scipy(counts, confidence):
    successes, n = counts
    if n == 0:
        assert wilson(0, 0, confidence) == (0.0, 1.0)
        return
    low, high = wilson(successes, n, confidence)
    ci = sps.binomtest(successes, n).proportion_ci(confidence, method="wilson")
    assert low == pytest.approx(ci.low, abs=1e-9) and high == pytest.approx(ci.high, abs=1e-9)
    assert 0 <= low <= successes / n <= high <= 1


@pytest.mark.parametrize(("args", "words"), [((5, 3), "at most"), ((-1, 3), ">= 0"),
                                             ((1.5, 3), "whole"), ((True, 3), "whole")])
def test_wilson_refuses_impossible_counts(args, words):
    with pytest.raises(UserError, match=words):
        wilson(*args)


def test_mcnemar_exact_for_few_discordant_pairs_matches_the_binomial_test():
    result = mcnemar(2, 10)
    assert result.method == "exact"
    assert result.p_value == pytest.approx(sps.binomtest(2, 12, 0.5).pvalue)
    assert result.p_value == pytest.approx(0.03857, abs=1e-5)  # 2 * P(X <= 2 | 12, 0.5)


def test_mcnemar_chi_squared_with_continuity_known_value():
    # Wikipedia's example: discordant cells b=121, c=59.
    result = mcnemar(121, 59)
    assert result.method == "chi2"
    assert result.statistic == pytest.approx((62 - 1) ** 2 / 180)
    assert result.p_value == pytest.approx(sps.chi2.sf(20.6722, 1), rel=1e-4)
    assert result.p_value < 1e-4


def test_mcnemar_with_no_discordant_pairs_finds_nothing_and_is_symmetric():
    assert mcnemar(0, 0).p_value == 1.0
    assert mcnemar(7, 30).p_value == pytest.approx(mcnemar(30, 7).p_value)
    with pytest.raises(UserError):
        mcnemar(-1, 3)


def test_srm_passes_a_split_that_matches_and_flags_one_that_drifted():
    fine = sample_ratio_mismatch({"a": 5030, "b": 4970}, {"a": 50, "b": 50})
    assert fine.sufficient and not fine.mismatch and fine.p_value > 0.5
    drifted = sample_ratio_mismatch({"a": 5200, "b": 4800}, {"a": 50, "b": 50})
    expected = sps.chisquare([5200, 4800], [5000, 5000])
    assert drifted.p_value == pytest.approx(expected.pvalue)
    assert drifted.statistic == pytest.approx(16.0)
    assert drifted.mismatch and "sample-ratio mismatch" in drifted.reason
    canary = sample_ratio_mismatch({"champion": 9500, "canary": 500}, {"champion": 95,
                                                                       "canary": 5})
    assert not canary.mismatch


def test_srm_waits_for_enough_traffic_and_never_flags_then():
    few = sample_ratio_mismatch({"a": 3, "b": 0}, {"a": 99, "b": 1})
    assert not few.sufficient and not few.mismatch
    empty = sample_ratio_mismatch({}, {"a": 50, "b": 50})
    assert not empty.sufficient and not empty.mismatch


def test_srm_flags_traffic_on_a_variant_configured_for_none():
    stray = sample_ratio_mismatch({"a": 900, "b": 100}, {"a": 100, "b": 0})
    assert stray.mismatch and "configured for 0%" in stray.reason
    trickle = sample_ratio_mismatch({"a": 10_000, "b": 3}, {"a": 100, "b": 0})
    assert not trickle.mismatch  # a few requests in flight across a switch are not a bug


def test_srm_three_arms_against_scipy():
    observed, configured = {"a": 3300, "b": 3350, "c": 3600}, {"a": 33.3, "b": 33.3, "c": 33.4}
    result = sample_ratio_mismatch(observed, configured)
    n = sum(observed.values())
    weights = np.array(list(configured.values()))
    expected = sps.chisquare(list(observed.values()), n * weights / weights.sum())
    assert result.p_value == pytest.approx(expected.pvalue)


def test_welch_matches_scipy_on_raw_data():
    rng = np.random.default_rng(7)
    a, b = rng.normal(1.0, 1.0, 80), rng.normal(1.4, 2.0, 120)
    result = welch((80, a.mean(), a.var(ddof=1)), (120, b.mean(), b.var(ddof=1)))
    assert result is not None
    expected = sps.ttest_ind(b, a, equal_var=False)
    ci = expected.confidence_interval(0.95)
    assert result.t == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.df == pytest.approx(expected.df)
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high))


def test_welch_is_undefined_without_spread_or_samples():
    assert welch((1, 1.0, 0.0), (10, 1.0, 1.0)) is None
    assert welch((10, 1.0, 0.0), (10, 2.0, 0.0)) is None


def test_sequential_matches_the_normal_mixture_formula():
    # Johari et al.: V = var1/n1 + var0/n0, tau^2 mixing; Lambda as in the docstring.
    result = sequential_test((400, 0.50, 0.25), (400, 0.56, 0.2464), alpha=0.05)
    assert result is not None
    v = 0.2464 / 400 + 0.25 / 400
    tau2 = 0.1**2 * (0.25 + 0.2464) / 2
    lam = math.sqrt(v / (v + tau2)) * math.exp(tau2 * 0.06**2 / (2 * v * (v + tau2)))
    assert result.likelihood_ratio == pytest.approx(lam)
    assert result.p_value == pytest.approx(min(1, 1 / lam))
    assert result.diff == pytest.approx(0.06)
    assert result.rejected == (lam >= 20)


@given(st.floats(0.001, 0.2), st.integers(2, 10_000), st.integers(2, 10_000),
       st.floats(-5, 5), st.floats(0.01, 10))
def test_the_confidence_sequence_is_exactly_where_the_test_stops_rejecting(
        alpha, n0, n1, shift, variance):
    # Inverting the test: at the interval's ends the likelihood ratio is exactly 1/alpha.
    base = sequential_test((n0, 0.0, variance), (n1, shift, variance), alpha=alpha)
    assert base is not None and base.ci_low < base.diff < base.ci_high
    for end in (base.ci_low, base.ci_high):
        # Testing H0: diff = end is testing zero on arms shifted by `end`.
        moved = sequential_test((n0, end, variance), (n1, shift, variance), alpha=alpha)
        assert moved is not None
        assert moved.likelihood_ratio == pytest.approx(1 / alpha, rel=1e-6)
    assert base.rejected == (base.ci_low > 0 or base.ci_high < 0)


def test_sequential_refuses_bad_parameters_and_waits_for_data():
    assert sequential_test((0, 0.0, 0.0), (10, 1.0, 1.0)) is None
    assert sequential_test((10, 1.0, 0.0), (10, 1.0, 0.0)) is None
    with pytest.raises(UserError):
        sequential_test((10, 1.0, 1.0), (10, 1.0, 1.0), alpha=1.5)
    with pytest.raises(UserError):
        sequential_test((10, 1.0, 1.0), (10, 1.0, 1.0), ratio=float("nan"))


def _peek(a: np.ndarray, b: np.ndarray, looks: np.ndarray, alpha: float) -> tuple[bool, bool]:
    """One simulated A/B test looked at after each of `looks`: did the mSPRT ever reject,
    and did a naive fixed-horizon t-test ever reject?"""
    seq = naive = False
    for n in looks:
        x, y = a[:n], b[:n]
        summary = ((n, x.mean(), x.var(ddof=1)), (n, y.mean(), y.var(ddof=1)))
        test = sequential_test(*summary, alpha=alpha)
        seq = seq or bool(test and test.rejected)
        se = math.sqrt(summary[0][2] / n + summary[1][2] / n)  # a z-test: fast, n >= 50
        naive = naive or (se > 0 and math.erfc(abs(y.mean() - x.mean()) / se / math.sqrt(2))
                          < alpha)
    return seq, naive


@pytest.mark.parametrize("kind", ["normal", "bernoulli"])
def test_false_positives_stay_under_alpha_however_often_we_peek(kind):
    # A/A tests: no true difference, 60 looks each. A naive t-test checked at every look
    # "finds" a difference far more often than alpha; the sequential test does not.
    rng = np.random.default_rng(20240501)
    alpha, runs, n = 0.05, 400, 3000
    looks = np.linspace(50, n, 60).astype(int)
    seq_hits = naive_hits = 0
    for _ in range(runs):
        if kind == "normal":
            a, b = rng.normal(10, 3, n), rng.normal(10, 3, n)
        else:
            a, b = (rng.random(n) < 0.3).astype(float), (rng.random(n) < 0.3).astype(float)
        seq, naive = _peek(a, b, looks, alpha)
        seq_hits += seq
        naive_hits += naive
    assert seq_hits / runs <= alpha
    assert naive_hits / runs > 2 * alpha  # the simulation is sharp enough to see peeking


def test_the_sequential_test_finds_a_real_difference():
    rng = np.random.default_rng(3)
    found = 0
    for _ in range(50):
        a = (rng.random(5000) < 0.30).astype(float)
        b = (rng.random(5000) < 0.36).astype(float)
        seq, _ = _peek(a, b, np.linspace(100, 5000, 25).astype(int), 0.05)
        found += seq
    assert found >= 45


def _looks(rng: np.random.Generator, routed: list[float], n: int, every: int,
           method: str, alpha: float, shares: tuple[float, ...] = (0.5, 0.5)) -> bool:
    """`n` requests routed by `routed` against a split configured as `shares`, tested every
    `every` requests: did any look alarm?"""
    arms = rng.choice(len(shares), size=n, p=routed)
    names = [f"v{i}" for i in range(len(shares))]
    configured = {name: 100 * s for name, s in zip(names, shares, strict=True)}
    for end in range(every, n + 1, every):
        counts = np.bincount(arms[:end], minlength=len(shares))
        observed = dict(zip(names, map(int, counts), strict=True))
        if sample_ratio_mismatch(observed, configured, alpha=alpha, method=method).mismatch:
            return True
    return False


def test_srm_checked_at_every_look_alarms_on_a_fair_split_only_as_often_as_alpha():
    # The controller tests the split every few seconds on counts that only grow. A
    # chi-squared test read that way alarms on a perfectly fair split far more often than its
    # alpha; the anytime-valid test stays under it.
    rng = np.random.default_rng(7)
    runs, alpha = 100, 0.05
    chi2 = sum(_looks(rng, [0.5, 0.5], 1000, 20, "chi2", alpha) for _ in range(runs))
    sequential = sum(_looks(rng, [0.5, 0.5], 1000, 20, "sequential", alpha)
                     for _ in range(runs))
    assert chi2 / runs > 2 * alpha  # the peeking problem is real
    assert sequential / runs <= alpha


def test_sequential_srm_still_catches_a_routing_bug():
    rng = np.random.default_rng(11)
    caught = sum(_looks(rng, [0.6, 0.4], 3000, 50, "sequential", SRM_ALPHA) for _ in range(20))
    assert caught == 20  # a 60/40 split configured as 50/50, within 3,000 requests
    skewed = sample_ratio_mismatch({"a": 6000, "b": 4000}, {"a": 50, "b": 50},
                                   method="sequential")
    assert skewed.mismatch and "anytime-valid" in skewed.reason
    assert skewed.statistic is not None and skewed.statistic > math.log(1 / SRM_ALPHA)
    fair = sample_ratio_mismatch({"a": 5030, "b": 4970}, {"a": 50, "b": 50},
                                 method="sequential")
    assert fair.sufficient and not fair.mismatch and fair.p_value == 1.0


def test_sequential_srm_bayes_factor_against_a_direct_computation():
    # Dirichlet(k * shares)-multinomial over multinomial(shares), written out in full.
    counts, shares, k = [30, 50, 20], [0.2, 0.5, 0.3], SRM_CONCENTRATION
    alphas = [k * s for s in shares]
    mixture = (math.lgamma(k) - math.lgamma(k + 100)
               + sum(math.lgamma(a + x) - math.lgamma(a) for a, x in zip(alphas, counts)))
    null = sum(x * math.log(s) for x, s in zip(counts, shares))
    result = sample_ratio_mismatch(dict(zip("abc", counts)), dict(zip("abc", [20, 50, 30])),
                                   method="sequential")
    assert result.statistic == pytest.approx(mixture - null)
    assert result.p_value == pytest.approx(min(1.0, math.exp(null - mixture)))
