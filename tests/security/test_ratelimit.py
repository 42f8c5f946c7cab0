"""The in-process token bucket: the rule, its edges, its memory bound, its threads."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.errors import ConfigError, PayloadTooLargeError
from shipyard.security.ratelimit import Decision, LocalLimiter, RateLimiter


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_local_limiter_is_a_rate_limiter() -> None:
    limiter: RateLimiter = LocalLimiter()
    assert limiter.take("k", 1, 1).allowed


def test_a_new_bucket_allows_its_burst_then_refuses_with_the_exact_wait() -> None:
    limiter = LocalLimiter()
    decisions = [limiter.take("key:a", 2.0, 3, now=0.0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert refused.retry_after_s == pytest.approx(0.5)  # one token at 2/s
    assert refused.retry_after_header == "1"
    assert not limiter.take("key:a", 2.0, 3, now=0.49).allowed
    assert limiter.take("key:a", 2.0, 3, now=0.5).allowed


def test_refill_never_exceeds_the_burst() -> None:
    limiter = LocalLimiter()
    limiter.take("k", 10, 5, cost=5, now=0)
    after_a_day = limiter.take("k", 10, 5, cost=0, now=86_400)
    assert after_a_day.remaining == 5


def test_a_refused_take_costs_nothing() -> None:
    limiter = LocalLimiter()
    limiter.take("k", 1, 4, cost=3, now=0)
    refused = limiter.take("k", 1, 4, cost=2, now=0)
    assert not refused.allowed and refused.remaining == 1
    assert refused.retry_after_s == pytest.approx(1.0)
    assert limiter.take("k", 1, 4, cost=1, now=0).allowed  # the token was still there


def test_row_costs_and_zero_cost() -> None:
    limiter = LocalLimiter()
    assert limiter.take("k", 1, 10, cost=7.5, now=0).remaining == 2.5
    assert limiter.take("k", 1, 10, cost=0, now=0).allowed
    refused = limiter.take("k", 1, 10, cost=5, now=0)
    assert refused.retry_after_s == pytest.approx(2.5)
    assert refused.retry_after_header == "3"  # rounded up: retrying then fits


def test_a_cost_over_the_burst_is_413_not_an_endless_429() -> None:
    limiter = LocalLimiter()
    with pytest.raises(PayloadTooLargeError) as info:
        limiter.take("k", 100, 50, cost=51)
    assert info.value.status == 413
    assert "51" not in info.value.message  # the caller's figure is not echoed
    assert info.value.hint


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, -math.inf, True, "10", None])
def test_a_broken_rate_or_burst_is_a_config_error(bad: object) -> None:
    limiter = LocalLimiter()
    with pytest.raises(ConfigError) as info:
        limiter.take("k", bad, 10)  # type: ignore[arg-type]
    assert info.value.hint
    with pytest.raises(ConfigError):
        limiter.take("k", 10, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, True, "1"])
def test_a_broken_cost_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError):
        LocalLimiter().take("k", 1, 10, cost=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [b"k", None, 42, ("k",)])
def test_a_bucket_key_must_be_text(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        LocalLimiter().take(bad, 1, 1)  # type: ignore[arg-type]
    assert "Expected a str" in info.value.message


@pytest.mark.parametrize(
    "key",
    ["", "deployment:ünïcødé", "key:\x00\n\r\x1b[2J", "key:\u202eevil", "key:\ud800", "🔑" * 50],
)
def test_odd_keys_are_just_names(key: str) -> None:
    limiter = LocalLimiter()
    assert limiter.take(key, 1, 1, now=0).allowed
    assert not limiter.take(key, 1, 1, now=0).allowed


def test_near_miss_keys_are_separate_buckets() -> None:
    limiter = LocalLimiter()
    for key in ["key:a", "key:a ", "key:A", "key:\u0061\u0301", "key:\u00e1"]:
        assert limiter.take(key, 1, 1, now=0).allowed, key


def test_huge_keys_are_stored_by_digest_and_stay_distinct() -> None:
    limiter = LocalLimiter()
    one, two = "x" * 1_000_000, "x" * 999_999 + "y"
    assert limiter.take(one, 1, 1, now=0).allowed
    assert limiter.take(two, 1, 1, now=0).allowed
    assert not limiter.take(one, 1, 1, now=0).allowed
    assert all(len(k) < 100 for k in limiter._buckets)


def test_memory_is_bounded_and_the_least_recently_used_bucket_goes() -> None:
    limiter = LocalLimiter(max_buckets=2)
    limiter.take("old", 1, 1, now=0)
    limiter.take("busy", 1, 1, now=0)
    limiter.take("old", 1, 1, now=0)  # touched again: now "busy" is the oldest
    limiter.take("new", 1, 1, now=0)
    assert len(limiter) == 2
    assert not limiter.take("old", 1, 1, now=0).allowed  # remembered: still empty
    assert limiter.take("busy", 1, 1, now=0).allowed  # forgotten: back to full


def test_many_keys_never_grow_past_the_bound() -> None:
    limiter = LocalLimiter(max_buckets=100)
    for i in range(10_000):
        limiter.take(f"ip:{i}", 1, 1)
    assert len(limiter) == 100


def test_max_buckets_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        LocalLimiter(max_buckets=0)


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    clock = FakeClock(100.0)
    limiter = LocalLimiter(clock=clock)
    limiter.take("k", 1, 2, cost=2)
    clock.t = 50.0
    assert not limiter.take("k", 1, 2).allowed
    clock.t = 100.5
    assert not limiter.take("k", 1, 2).allowed  # the refill point never moved back
    clock.t = 101.0
    assert limiter.take("k", 1, 2).allowed


def test_the_default_clock_is_used_without_now() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(clock=clock)
    assert limiter.take("k", 1, 1).allowed
    assert not limiter.take("k", 1, 1).allowed
    clock.t += 1
    assert limiter.take("k", 1, 1).allowed


def test_threads_never_take_more_than_the_burst() -> None:
    limiter = LocalLimiter(clock=FakeClock())  # a frozen clock: no refill during the race
    allowed = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        allowed.append(sum(limiter.take("shared", 0.001, 100).allowed for _ in range(200)))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100


def test_decision_header_when_allowed_and_for_tiny_waits() -> None:
    assert Decision(True, 0.0, 3).retry_after_header == "0"
    assert Decision(False, 0.001, 0).retry_after_header == "1"  # never "0" on a refusal


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 100),
    burst=st.floats(1, 50),
    steps=st.lists(st.tuples(st.floats(0, 5), st.floats(0, 1)), min_size=1, max_size=60),
)
def test_allowed_cost_never_exceeds_burst_plus_refill(
    rate: float, burst: float, steps: list[tuple[float, float]]
) -> None:
    limiter = LocalLimiter()
    t, taken = 0.0, 0.0
    for dt, share in steps:
        t += dt
        cost = share * burst
        decision = limiter.take("k", rate, burst, cost=cost, now=t)
        if decision.allowed:
            taken += cost
        else:
            # Waiting exactly the advertised time is enough, and the bucket is unchanged.
            assert decision.retry_after_s > 0
            assert decision.remaining + decision.retry_after_s * rate == pytest.approx(cost)
        assert 0 <= decision.remaining <= burst
    assert taken <= burst + rate * t + 1e-6
