"""Drift statistics against scipy, the effect-size decision, and every degenerate window."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from shipyard.bundle.manifest import Profile
from shipyard.bundle.profile import categorical_profile, numeric_profile
from shipyard.errors import ConflictError
from shipyard.monitoring.drift import (
    EXACT_KS_UNDER,
    _chi2_sf,
    chi_squared,
    cramers_v,
    drift_frame,
    drift_report,
    js_distance,
    ks_binned,
    ks_sf,
    merge_sparse,
    noise_bounds,
    psi,
)
from shipyard.monitoring.sketch import ReferenceBins, WindowSketch
from shipyard.routing import DriftConfig

REF = np.array([120, 340, 280, 160, 100])
LIVE = np.array([90, 300, 310, 200, 100])


# -- each statistic against scipy ---------------------------------------------------------------


def test_psi_is_the_symmetrised_kl_divergence() -> None:
    p, q = REF / REF.sum(), LIVE / LIVE.sum()
    expected = float(np.sum(rel_entr(q, p) + rel_entr(p, q)))
    assert psi(REF, LIVE, smoothing=0) == pytest.approx(expected, rel=1e-12)
    # Smoothing only matters for empty bins: it keeps PSI finite there.
    assert psi(REF, LIVE) == pytest.approx(expected, rel=0.02)
    assert math.isinf(psi([10, 0], [5, 5], smoothing=0))
    assert math.isfinite(psi([10, 0], [5, 5]))


def test_js_distance_matches_scipy_base_2() -> None:
    assert js_distance(REF, LIVE) == pytest.approx(
        jensenshannon(REF / REF.sum(), LIVE / LIVE.sum(), base=2), rel=1e-9
    )
    assert js_distance([5, 0], [0, 5]) == pytest.approx(1.0)
    assert js_distance(REF, REF * 3) == pytest.approx(0.0, abs=1e-9)


def test_binned_ks_equals_scipy_on_data_that_lives_on_the_bins() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 5, 800), rng.integers(0, 6, 1_300)  # integers: one bin each
    ref, live = np.bincount(a, minlength=6), np.bincount(b, minlength=6)
    exact = stats.ks_2samp(a, b, method="asymp")
    assert ks_binned(ref, live) == pytest.approx(exact.statistic, abs=1e-12)


def test_chi_squared_and_cramers_v_match_scipy() -> None:
    table = np.vstack([REF, LIVE])
    chi2, _p, dof, _ = stats.chi2_contingency(table, correction=False)
    assert chi_squared(REF, LIVE) == (pytest.approx(chi2, rel=1e-12), dof)
    # With equal sample sizes the equal-weight V is the textbook V.
    live = np.round(LIVE * REF.sum() / LIVE.sum()).astype(int)
    live[0] += REF.sum() - live.sum()
    textbook = stats.contingency.association(np.vstack([REF, live]), method="cramer")
    assert cramers_v(REF, live) == pytest.approx(textbook, rel=1e-9)


def test_cramers_v_does_not_depend_on_the_ratio_of_sample_sizes() -> None:
    assert cramers_v(REF, LIVE) == pytest.approx(cramers_v(REF, LIVE * 1000), rel=1e-12)


def test_noise_bound_is_the_chi2_quantile_scaled_by_both_sizes() -> None:
    bounds = noise_bounds(df=9, n=1_000, n_ref=4_000, alpha=0.01)
    crit = stats.chi2.isf(0.01, 9)
    assert bounds["psi"] == pytest.approx(crit * (1 / 1_000 + 1 / 4_000))
    assert bounds["ks"] == pytest.approx(1.6276 * math.sqrt(5_000 / 4_000_000), rel=1e-3)
    # The bound falls like 1/n (PSI) and 1/sqrt(n) (the distances): bigger windows, finer eyes.
    bigger = noise_bounds(df=9, n=100_000, n_ref=4_000_000, alpha=0.01)
    assert bigger["psi"] < bounds["psi"] / 50 and bigger["js"] < bounds["js"] / 7


@pytest.mark.parametrize("df", [1, 2, 9, 49, 400])
def test_chi2_tail_and_quantile_are_scipy_stats_own(df: int) -> None:
    # scipy.special directly, for speed: the same values as scipy.stats.chi2 gives.
    for x in (0.0, 1e-12, 0.3, 4.0, 77.0, 1e5, math.inf):
        assert _chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-12, abs=0)
    for alpha in (1e-300, 1e-9, 0.001, 0.05, 0.5):
        bound = noise_bounds(df=df, n=500, n_ref=1_000, alpha=alpha)["psi"]
        assert bound == pytest.approx(stats.chi2.isf(alpha, df) * (1 / 500 + 1 / 1_000), rel=1e-12)
    # A statistic that rounding left just below zero is no evidence, as stats.chi2.sf says;
    # NaN stays NaN; no degrees of freedom, no test.
    assert _chi2_sf(-1e-17, df) == 1.0 == stats.chi2.sf(-1e-17, df)
    assert math.isnan(_chi2_sf(math.nan, df))
    assert _chi2_sf(5.0, 0) == 1.0


def test_merge_sparse_pools_rare_bins_and_keeps_dense_ones() -> None:
    ref, live = merge_sparse(np.array([1, 2, 500, 400, 1, 0]), np.array([0, 3, 480, 420, 2, 1]))
    assert ref.sum() == 904 and live.sum() == 906
    assert ref.size == 2  # [1, 2, 500] and [400, 1, 0]: no group expects under 5 rows
    dense_ref, dense_live = merge_sparse(REF * 100, LIVE * 100)
    np.testing.assert_array_equal(dense_ref, REF * 100)
    np.testing.assert_array_equal(dense_live, LIVE * 100)
    cat_ref, _ = merge_sparse(np.array([3, 900, 1, 800, 2]), np.array([1, 950, 0, 700, 4]),
                              ordered=False)
    assert sorted(cat_ref.tolist()) == [6, 800, 900]  # the three rare categories pool


def test_merge_sparse_ignores_bins_empty_on_both_sides() -> None:
    # Empty bins change no group's sums, wherever they sit: with or without them, the same.
    ref, live = np.array([1, 2, 500, 400, 1, 3]), np.array([0, 3, 480, 420, 2, 1])
    padded_ref = np.array([0, 1, 0, 2, 500, 0, 400, 1, 3, 0])
    padded_live = np.array([0, 0, 0, 3, 480, 0, 420, 2, 1, 0])
    for ordered in (True, False):
        expected = merge_sparse(ref, live, ordered=ordered)
        got = merge_sparse(padded_ref, padded_live, ordered=ordered)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("en", [EXACT_KS_UNDER, 500, 3_000, 30_000, 150_000])
def test_ks_p_value_is_close_to_the_exact_distribution(en: int) -> None:
    for d in np.geomspace(1e-4, 0.6, 300):
        exact = float(stats.kstwo.sf(d, en))
        got = ks_sf(d, en)
        assert abs(got - exact) < 0.008
        if 1e-12 < exact < 0.05:
            assert got == pytest.approx(exact, rel=0.06)


def test_ks_p_value_of_small_samples_is_exact() -> None:
    for en in (1, 10, 120.4, EXACT_KS_UNDER - 1):
        for d in (0.01, 0.1, 0.3):
            assert ks_sf(d, en) == stats.kstwo.sf(d, max(1, round(en)))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=1, max_size=30)
)
def test_statistics_are_defined_and_in_range_for_any_counts(pairs: list[tuple[int, int]]) -> None:
    ref, live = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    assert math.isfinite(psi(ref, live)) and psi(ref, live) >= -1e-12
    assert 0.0 <= js_distance(ref, live) <= 1.0
    assert js_distance(ref, live) == pytest.approx(js_distance(live, ref))
    assert 0.0 <= ks_binned(ref, live) <= 1.0 + 1e-12
    assert 0.0 <= cramers_v(ref, live) <= 1.0
    chi2, dof = chi_squared(ref, live)
    assert math.isfinite(chi2) and chi2 >= 0 and dof >= 0
    merged_ref, merged_live = merge_sparse(ref, live)
    assert merged_ref.sum() == ref.sum() and merged_live.sum() == live.sum()


# -- reports ------------------------------------------------------------------------------------


def normal_profile(rows: int, features: int = 1, seed: int = 0) -> Profile:
    rng = np.random.default_rng(seed)
    return Profile(
        rows=rows,
        inputs={f"f{i}": numeric_profile(rng.normal(size=rows)) for i in range(features)},
    )


def test_one_million_unshifted_rows_of_30_features_raise_no_alarm() -> None:
    # Its speed is measured by bench/drift, not asserted here: a timed test is noise.
    profile = normal_profile(100_000, features=30)
    rng = np.random.default_rng(42)
    live = pd.DataFrame(rng.normal(size=(1_000_000, 30)), columns=[f"f{i}" for i in range(30)])
    report = drift_frame(profile, live)
    assert report.status == "ok" and report.drifted == []
    assert report.rows == 1_000_000 and len(report.fields) == 30
    # Statistically, nothing is even significant at the report's alpha: pure noise.
    for f in report.fields.values():
        assert f.reason.startswith("no change"), f.reason


def test_a_tenth_of_a_standard_deviation_is_significant_but_not_drift_by_default() -> None:
    profile = normal_profile(100_000)
    shifted = np.random.default_rng(1).normal(0.1, 1.0, size=1_000_000)
    report = drift_frame(profile, {"f0": shifted})
    field = report.fields["f0"]
    assert not field.drifted and report.status == "ok"
    assert field.statistics["ks"].p_value is not None and field.statistics["ks"].p_value < 1e-30
    assert field.reason.startswith("significant but small")
    # Whoever cares about 0.1 sd lowers the threshold: then it is caught on a big window ...
    strict = DriftConfig(ks=0.03, js=1.0, psi=10.0)
    assert drift_frame(profile, {"f0": shifted}, strict).fields["f0"].drifted
    # ... and still not on a small one, where 0.04 is what noise alone reaches.
    small = drift_frame(profile, {"f0": shifted[:1_000]}, strict).fields["f0"]
    assert not small.drifted
    assert (small.statistics["ks"].bound or 0) > strict.ks


@pytest.mark.parametrize("rows", [500, 5_000, 1_000_000])
def test_half_a_standard_deviation_is_drift_at_every_window_size(rows: int) -> None:
    profile = normal_profile(20_000)
    shifted = np.random.default_rng(2).normal(0.5, 1.0, size=rows)
    field = drift_frame(profile, {"f0": shifted}).fields["f0"]
    assert field.drifted, field.reason
    assert field.reason.startswith("drift:") and field.p_value is not None


def test_small_unshifted_windows_raise_no_more_alarms_than_alpha() -> None:
    profile = normal_profile(5_000, features=10)
    rng = np.random.default_rng(5)
    alarms = 0
    for _ in range(100):
        live = {f"f{i}": rng.standard_t(30, size=150) for i in range(10)}
        alarms += drift_frame(profile, live, quantiles=False).status == "drift"
    assert alarms <= 5  # alpha = 0.01 per report: about 1 expected


def test_window_under_min_rows_is_insufficient_data() -> None:
    report = drift_frame(normal_profile(1_000), {"f0": np.zeros(99)})
    assert report.status == "insufficient_data" and report.drifted == []
    assert "min_rows" in report.fields["f0"].reason


def test_empty_window_keeps_every_figure_defined() -> None:
    bins = ReferenceBins.from_profile(normal_profile(1_000))
    report = drift_report(bins, WindowSketch(bins), DriftConfig())
    assert report.status == "insufficient_data" and report.rows == 0
    field = report.fields["f0"]
    assert field.rows == 0 and field.null_share is None and field.quantiles is None
    json.dumps(report.to_json(), allow_nan=False)


def test_all_nan_live_field_is_drift_with_defined_figures() -> None:
    report = drift_frame(normal_profile(1_000), {"f0": np.full(500, np.nan)})
    field = report.fields["f0"]
    assert field.drifted and field.null_share == 1.0 and field.reference_null_share == 0.0
    assert field.statistics["ks"].value is None  # no values to compare
    assert math.isfinite(field.statistics["psi"].value or math.nan)
    json.dumps(report.to_json(), allow_nan=False)


def test_constant_and_all_nan_references() -> None:
    profile = Profile(
        rows=1_000,
        inputs={"c": numeric_profile(np.full(1_000, 7.0)),
                "n": numeric_profile(np.full(1_000, np.nan))},
    )
    same = drift_frame(profile, {"c": np.full(400, 7.0), "n": np.full(400, np.nan)})
    assert same.status == "ok"
    assert same.fields["c"].statistics["psi"].value == pytest.approx(0.0)
    assert same.fields["n"].statistics["ks"].value is None
    moved = drift_frame(profile, {"c": np.full(400, 9.0), "n": np.arange(400.0)})
    assert set(moved.drifted) == {"c", "n"}
    assert moved.fields["c"].new_share == 1.0
    json.dumps(moved.to_json(), allow_nan=False)


def test_constant_live_values_inside_a_varied_reference() -> None:
    field = drift_frame(normal_profile(5_000), {"f0": np.zeros(1_000)}).fields["f0"]
    assert field.drifted and field.effect in {"psi", "js", "ks"}


def test_categorical_drift_and_never_seen_categories() -> None:
    rng = np.random.default_rng(9)
    reference = rng.choice(["a", "b", "c"], size=5_000, p=[0.5, 0.3, 0.2])
    profile = Profile(rows=5_000, inputs={"k": categorical_profile(reference)})
    same = drift_frame(profile, {"k": rng.choice(["a", "b", "c"], 2_000, p=[0.5, 0.3, 0.2])})
    assert same.status == "ok"
    assert set(same.fields["k"].statistics) == {"psi", "js", "chi2", "cramers_v"}
    novel = rng.choice(["a", "b", "ünïcode-新"], 2_000, p=[0.4, 0.3, 0.3])
    field = drift_frame(profile, {"k": novel}).fields["k"]
    assert field.drifted and field.new_share == pytest.approx(0.3, abs=0.05)
    assert field.statistics["chi2"].p_value is not None and field.statistics["chi2"].p_value < 1e-9


def test_reference_without_rows_for_a_key_is_not_judged() -> None:
    profile = Profile(rows=0, inputs={"k": categorical_profile([])})
    field = drift_frame(profile, {"k": np.array(["a"] * 200, dtype=object)}).fields["k"]
    assert not field.drifted and "no rows" in field.reason


def test_report_json_is_plain_and_complete() -> None:
    report = drift_frame(normal_profile(2_000), {"f0": np.random.default_rng(0).normal(size=800)})
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["status"] == "ok" and data["drifted"] == []
    field = data["fields"]["f0"]
    for key in ("statistics", "p_value", "effect", "threshold", "bound", "rows", "drifted",
                "reason", "quantiles"):
        assert key in field
    assert field["statistics"]["ks"]["threshold"] == DriftConfig().ks


def test_window_of_another_reference_is_refused() -> None:
    bins = ReferenceBins.from_profile(normal_profile(100, seed=1))
    other = ReferenceBins.from_profile(normal_profile(100, seed=2))
    with pytest.raises(ConflictError):
        drift_report(bins, WindowSketch(other))


def test_confidence_keys_without_reference_are_sketched_but_not_judged() -> None:
    outputs = {"probabilities[0]": numeric_profile(np.linspace(0, 1, 100))}
    profile = Profile(rows=100, outputs=outputs)
    bins = ReferenceBins.from_profile(profile)
    assert "confidence.top" in bins.fields
    report = drift_report(bins, WindowSketch(bins))
    assert "confidence.top" not in report.fields and "probabilities[0]" in report.fields
