from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import UserError
from shipyard.routing import DeploymentSpec, Router, bucket


def spec(**weights: float) -> DeploymentSpec:
    return DeploymentSpec.parse(
        {
            "variants": [
                {
                    "name": name,
                    "model": f"m:{i}",
                    "weight": weight,
                    "role": "champion" if i == 0 else "canary",
                }
                for i, (name, weight) in enumerate(weights.items())
            ]
        }
    )


def test_single_variant_takes_everything():
    router = Router(spec(a=100))
    assert {router.choose(str(i)) for i in range(100)} == {"a"}


def test_weights_split_traffic_in_proportion():
    router = Router(spec(a=90, b=10), salt="dep")
    counts = Counter(router.choose(f"user-{i}") for i in range(20_000))
    assert 0.08 < counts["b"] / 20_000 < 0.12


@given(st.text(min_size=1, max_size=40), st.floats(min_value=1, max_value=99))
def test_same_key_same_variant_on_every_router(key, weight):
    first = Router(spec(a=100 - weight, b=weight), salt="dep").choose(key)
    again = Router(spec(a=100 - weight, b=weight), salt="dep").choose(key)
    assert first == again


@given(st.text(max_size=40))
def test_bucket_is_in_range_and_stable(key):
    assert 0 <= bucket(key, "s") < 100
    assert bucket(key, "s") == bucket(key, "s")


def test_shadow_and_fallback_never_answer_by_weight():
    parsed = DeploymentSpec.parse(
        {
            "variants": [
                {"name": "a", "model": "m:1"},
                {"name": "s", "model": "m:2", "role": "shadow", "weight": 100},
                {"name": "f", "model": "m:3", "role": "fallback", "weight": 0},
            ]
        }
    )
    router = Router(parsed)
    assert {router.choose(str(i)) for i in range(200)} == {"a"}
    assert router.shadows == ["s"]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"variants": []}, "variants"),
        ({"variants": [{"name": "a", "model": "m:1"}, {"name": "a", "model": "m:2"}]}, "unique"),
        ({"variants": [{"name": "a", "model": "m:1", "role": "shadow"}]}, "non-shadow"),
        ({"variants": [{"name": "a", "model": "m:1", "weight": 120}]}, "weight"),
        ({"variants": [{"name": "a", "model": "m:1"}], "serving": {"max_batch": 0}}, "max_batch"),
        (
            {
                "variants": [{"name": "a", "model": "m:1"}],
                "serving": {"fallback": {"kind": "static"}},
            },
            "static",
        ),
        (
            {
                "variants": [{"name": "a", "model": "m:1"}],
                "serving": {"fallback": {"kind": "variant", "variant": "zz"}},
            },
            "zz",
        ),
        ({"variants": [{"name": "a", "model": "m:1", "extra": 1}]}, "extra"),
    ],
)
def test_bad_specs_are_refused_with_the_field(data, needle):
    with pytest.raises(UserError) as info:
        DeploymentSpec.parse(data)
    assert needle in str(info.value)


def test_ramping_a_canary_only_moves_new_keys_onto_it() -> None:
    from shipyard.routing import DeploymentSpec, Router

    def router(weight: float) -> Router:
        spec = DeploymentSpec.parse({"variants": [
            {"name": "champion", "model": "m:1", "weight": 100 - weight},
            {"name": "canary", "model": "m:2", "role": "canary", "weight": weight},
        ]})
        return Router(spec, salt="fraud")

    keys = [f"user-{i}" for i in range(20_000)]
    previous: set[str] = set()
    for weight in (1, 5, 25, 50, 100):
        on_canary = {k for k in keys if router(weight).choose(k) == "canary"}
        assert previous <= on_canary  # nobody already on the canary is moved off it
        assert abs(len(on_canary) / len(keys) - weight / 100) < 0.02
        previous = on_canary
