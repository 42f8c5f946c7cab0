"""The door: every role against every action, deployment scopes, and authenticate()'s headers."""

from __future__ import annotations

import itertools
import json
import time
from datetime import timedelta
from pathlib import Path

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm
from test_keys_store import NOW, SQLiteKeyStore

from shipyard.errors import ForbiddenError, ShipyardError, UnauthorizedError
from shipyard.security.authz import PERMISSIONS, authenticate, authorize
from shipyard.security.jwt import JWTConfig, JWTVerifier
from shipyard.security.keys import create_key
from shipyard.security.principals import Principal, PrincipalKind, Role

ACTIONS = {
    "status.read",
    "metrics.read",
    "dashboard.read",
    "predict",
    "feedback.write",
    "deploy",
    "rollout.write",
    "rollout.read",
    "rollback",
    "keys.manage",
    "registry.write",
}
# The minimum role per action, written out independently of the table it checks.
EXPECTED = {
    "status.read": "viewer",
    "metrics.read": "viewer",
    "dashboard.read": "viewer",
    "rollout.read": "viewer",
    "predict": "predictor",
    "feedback.write": "predictor",
    "deploy": "deployer",
    "rollout.write": "deployer",
    "rollback": "admin",
    "keys.manage": "admin",
    "registry.write": "admin",
}
LADDER = ["viewer", "predictor", "deployer", "admin"]


def principal(role: str, deployments: set[str] | None = None) -> Principal:
    scope = None if deployments is None else frozenset(deployments)
    return Principal(name="t", kind=PrincipalKind.KEY, role=Role(role), deployments=scope)


# --- authorize ----------------------------------------------------------------------------


def test_the_table_names_exactly_the_documented_actions():
    assert set(PERMISSIONS) == ACTIONS
    assert {a: r.value for a, r in PERMISSIONS.items()} == EXPECTED


def test_the_table_cannot_be_changed_at_run_time():
    with pytest.raises(TypeError):
        PERMISSIONS["keys.manage"] = Role.VIEWER  # type: ignore[index]


@pytest.mark.parametrize(("role", "action"), list(itertools.product(LADDER, sorted(ACTIONS))))
def test_every_role_against_every_action(role, action):
    allowed = LADDER.index(role) >= LADDER.index(EXPECTED[action])
    if allowed:
        assert authorize(principal(role), action, "fraud") is None
        assert authorize(principal(role), action) is None
    else:
        with pytest.raises(ForbiddenError) as caught:
            authorize(principal(role), action, "fraud")
        assert caught.value.status == 403
        assert caught.value.hint


def test_management_and_prediction_are_separate_permissions():
    with pytest.raises(ForbiddenError):
        authorize(principal("predictor"), "deploy", "fraud")
    with pytest.raises(ForbiddenError):
        authorize(principal("predictor"), "keys.manage")
    with pytest.raises(ForbiddenError):
        authorize(principal("viewer"), "predict", "fraud")


def test_a_scoped_principal_acts_only_on_its_deployments():
    scoped = principal("deployer", {"fraud", "churn"})
    authorize(scoped, "predict", "fraud")
    authorize(scoped, "deploy", "churn")
    for other in [
        "fraud2",
        "frau",
        "Fraud",
        "fraud ",
        " fraud",
        "fraud\x00",
        "fr\u0430ud",
        "",
        "*",
    ]:
        with pytest.raises(ForbiddenError) as caught:
            authorize(scoped, "predict", other)
        if other.strip():
            assert other not in caught.value.message  # the caller's value is not echoed


@pytest.mark.parametrize("action", ["keys.manage", "registry.write", "dashboard.read", "deploy"])
def test_a_scoped_principal_may_not_act_without_a_deployment(action):
    with pytest.raises(ForbiddenError):
        authorize(principal("admin", {"fraud"}), action)


def test_an_empty_scope_allows_nothing():
    with pytest.raises(ForbiddenError):
        authorize(principal("admin", set()), "status.read", "fraud")


def test_scope_does_not_raise_a_role():
    with pytest.raises(ForbiddenError):
        authorize(principal("viewer", {"fraud"}), "predict", "fraud")


@pytest.mark.parametrize("action", ["predict ", "PREDICT", "keys.*", "", "admin", "predict\x00"])
def test_an_unknown_action_fails_closed(action):
    with pytest.raises(ShipyardError) as caught:
        authorize(principal("admin"), action, "fraud")
    assert not isinstance(caught.value, ForbiddenError)
    assert caught.value.status == 500


def test_the_anonymous_and_local_principals():
    assert Principal.anonymous().role is Role.ADMIN
    assert Principal.anonymous(Role.VIEWER).role is Role.VIEWER
    local = Principal.local("alice")
    assert local.kind is PrincipalKind.LOCAL and local.role is Role.ADMIN
    assert local.deployments is None


def test_errors_have_the_right_status_and_body():
    assert UnauthorizedError("x", hint="y").to_dict() == {
        "error": {"code": "unauthorized", "message": "x", "hint": "y"}
    }
    assert UnauthorizedError.status == 401 and ForbiddenError.status == 403
    assert ForbiddenError("x").to_dict()["error"]["code"] == "forbidden"


# --- authenticate -------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SQLiteKeyStore:
    return SQLiteKeyStore(tmp_path / "keys.db", clock=lambda: NOW)


@pytest.fixture
def key(store) -> str:
    plaintext, _ = create_key(store, "predictor", ["fraud"], timedelta(days=1), "ops", now=NOW)
    return plaintext


@pytest.fixture(scope="module")
def signer() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def verifier(tmp_path: Path, signer) -> JWTVerifier:
    path = tmp_path / "jwks.json"
    jwk = {**RSAAlgorithm.to_jwk(signer.public_key(), as_dict=True), "kid": "k1"}
    path.write_text(json.dumps({"keys": [jwk]}))
    return JWTVerifier(JWTConfig.build(issuer="https://idp", audience="sy", jwks_file=path))


@pytest.fixture
def token(signer) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://idp",
        "aud": "sy",
        "sub": "bob",
        "exp": now + 60,
        "shipyard_role": "viewer",
    }
    return pyjwt.encode(claims, signer, algorithm="RS256", headers={"kid": "k1"})


def auth(headers, store=None, verifier=None, required=True, **kwargs) -> Principal:
    return authenticate(
        headers, keys=store, jwt=verifier, auth_required=required, now=NOW, **kwargs
    )


def unauthorized(headers, **kwargs) -> UnauthorizedError:
    with pytest.raises(UnauthorizedError) as caught:
        auth(headers, **kwargs)
    assert caught.value.status == 401 and caught.value.hint
    for value in headers.values():
        if len(value) >= 8:
            assert value not in str(caught.value)
    return caught.value


@pytest.mark.parametrize(
    "make",
    [
        lambda k: {"Authorization": f"Bearer {k}"},
        lambda k: {"authorization": f"bearer {k}"},
        lambda k: {"AUTHORIZATION": f"BEARER   {k}  "},
        lambda k: {"X-API-Key": k},
        lambda k: {"x-api-key": f" {k} "},
    ],
)
def test_a_key_is_accepted_in_either_header(store, key, make):
    found = auth(make(key), store=store)
    assert found.kind is PrincipalKind.KEY and found.role is Role.PREDICTOR


def test_a_jwt_is_accepted_as_a_bearer_token(verifier, token):
    found = auth({"Authorization": f"Bearer {token}"}, verifier=verifier)
    assert found.kind is PrincipalKind.JWT and found.name == "bob" and found.role is Role.VIEWER


def test_keys_and_jwts_work_side_by_side(store, key, verifier, token):
    assert auth({"X-API-Key": key}, store=store, verifier=verifier).kind is PrincipalKind.KEY
    bearer = {"Authorization": f"Bearer {token}"}
    assert auth(bearer, store=store, verifier=verifier).kind is PrincipalKind.JWT


def test_no_credential_is_401_when_required():
    error = unauthorized({})
    assert "Bearer" in error.hint


def test_no_credential_is_anonymous_when_auth_is_off():
    assert auth({}, required=False).kind is PrincipalKind.ANONYMOUS
    assert auth({}, required=False, anonymous_role=Role.VIEWER).role is Role.VIEWER


def test_a_bad_credential_is_refused_even_when_auth_is_off(store):
    unauthorized({"X-API-Key": "sy_" + "A" * 12 + "_" + "B" * 43}, store=store, required=False)


def test_a_key_with_no_key_store_is_refused(key):
    unauthorized({"X-API-Key": key})


def test_a_jwt_with_no_verifier_is_refused(token):
    unauthorized({"Authorization": f"Bearer {token}"})


def test_x_api_key_carries_api_keys_only(verifier, token):
    error = unauthorized({"X-API-Key": token}, verifier=verifier)
    assert "Bearer" in error.message


def test_two_credentials_are_refused(store, key):
    unauthorized({"Authorization": f"Bearer {key}", "X-API-Key": key}, store=store)


def test_repeated_authorization_headers_are_refused(store, key):
    class Repeated(dict):
        def multi_items(self):
            return [("authorization", f"Bearer {key}"), ("authorization", "Bearer other")]

    unauthorized(Repeated({"authorization": f"Bearer {key}"}), store=store)


@pytest.mark.parametrize(
    "value",
    [
        "Basic YWxpY2U6cGFzcw==",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Token sy_abc",
        "Bearersy_abc",
        "Bearer a b",
        "Bearer sy_abc\nX-Admin: 1",
        "Bearer \u0455y_" + "A" * 56,  # Cyrillic s in the prefix
        "Bearer " + "A" * 100_000,
        "Bearer eyJ.eyJ",  # neither a key nor the three parts of a JWT
        "",
    ],
)
def test_malformed_authorization_headers_are_refused(store, verifier, value):
    unauthorized({"Authorization": value}, store=store, verifier=verifier)


@pytest.mark.parametrize("value", ["", "   ", "sy_\x00", "sy_\u200b" + "A" * 55, "x" * 100_000])
def test_malformed_api_key_headers_are_refused(store, value):
    unauthorized({"X-API-Key": value}, store=store)


def test_a_revoked_key_stops_working_at_the_door(store, key):
    from shipyard.security.keys import parse_key_id

    store.revoke(parse_key_id(key), "ops")
    unauthorized({"X-API-Key": key}, store=store)


def test_an_authenticated_key_is_then_authorized_by_scope(store, key):
    found = auth({"X-API-Key": key}, store=store)
    authorize(found, "predict", "fraud")
    with pytest.raises(ForbiddenError):
        authorize(found, "predict", "churn")
    with pytest.raises(ForbiddenError):
        authorize(found, "deploy", "fraud")


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(["Authorization", "authorization", "X-API-Key", "x-api-key", "Cookie"]),
        st.text(max_size=300),
        max_size=3,
    )
)
def test_arbitrary_headers_give_a_principal_or_a_401_and_nothing_else(store, verifier, headers):
    try:
        found = auth(headers, store=store, verifier=verifier)
    except UnauthorizedError:
        return
    # Only an absent credential can get through with random text, and auth is required.
    raise AssertionError(f"authenticated {found!r}")
