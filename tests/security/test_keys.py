"""API keys: the format, hashing, and one 401 for every bad key that never echoes the key."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_keys_store import NOW, SQLiteKeyStore

from shipyard.errors import UnauthorizedError, UserError
from shipyard.security.keys import (
    ALPHABET,
    KeyRecord,
    authenticate_key,
    create_key,
    hash_key,
    parse_key_id,
)
from shipyard.security.principals import PrincipalKind, Role

KEY_SHAPE = re.compile(r"sy_[0-9A-Za-z]{12}_[0-9A-Za-z]{43}")


@pytest.fixture
def store(tmp_path: Path) -> SQLiteKeyStore:
    return SQLiteKeyStore(tmp_path / "keys.db", clock=lambda: NOW)


@pytest.fixture
def issued(store):
    """A predictor key scoped to one deployment, expiring in a day."""
    return create_key(store, "predictor", ["fraud"], timedelta(days=1), "alice", now=NOW)


def _refused(store, presented: str, now: datetime = NOW) -> UnauthorizedError:
    with pytest.raises(UnauthorizedError) as caught:
        authenticate_key(store, presented, now)
    error = caught.value
    assert error.status == 401
    assert error.message == "The API key is not valid."  # the same words for every failure
    if len(presented) >= 8:  # shorter strings occur in any English sentence
        assert presented not in str(error)
        assert presented not in repr(error.to_dict())
    return error


def test_a_new_key_has_the_documented_shape(issued):
    plaintext, record = issued
    assert KEY_SHAPE.fullmatch(plaintext)
    assert plaintext.split("_")[1] == record.id
    assert parse_key_id(plaintext) == record.id


def test_keys_are_random(store):
    made = {create_key(store, Role.VIEWER, None, None, "alice", now=NOW)[0] for _ in range(50)}
    assert len(made) == 50
    secrets = "".join(k.rsplit("_", 1)[1] for k in made)
    assert set(secrets) <= set(ALPHABET)
    assert len(set(secrets)) > 50  # uses (nearly) the whole alphabet


def test_the_record_keeps_a_hash_and_never_the_secret(issued):
    plaintext, record = issued
    secret = plaintext.rsplit("_", 1)[1]
    assert record.hash == hash_key(plaintext)
    assert record.hash.startswith("sha256:") and len(record.hash) == len("sha256:") + 64
    for text in (repr(record), str(record.to_row())):
        assert secret not in text
    assert "hash=" not in repr(record)  # hidden from repr as well


def test_a_good_key_authenticates_as_its_record(issued, store):
    plaintext, record = issued
    principal = authenticate_key(store, plaintext, NOW + timedelta(hours=1))
    assert principal.kind is PrincipalKind.KEY
    assert principal.role is Role.PREDICTOR
    assert principal.deployments == frozenset({"fraud"})
    assert principal.key_id == record.id
    assert principal.name == record.name


def test_an_unknown_key_of_the_right_shape_is_refused(store):
    _refused(store, "sy_" + "A" * 12 + "_" + "b" * 43)


def test_a_revoked_key_is_refused_with_the_same_message(issued, store):
    plaintext, record = issued
    store.revoke(record.id, "bob")
    _refused(store, plaintext, NOW + timedelta(minutes=1))


def test_an_expired_key_is_refused_from_the_expiry_instant(issued, store):
    plaintext, record = issued
    assert authenticate_key(store, plaintext, record.expires_at - timedelta(microseconds=1))
    _refused(store, plaintext, record.expires_at)
    _refused(store, plaintext, record.expires_at + timedelta(days=365))


def test_a_key_without_expiry_lives_until_revoked(store):
    plaintext, _ = create_key(store, Role.ADMIN, None, None, "alice", now=NOW)
    principal = authenticate_key(store, plaintext, NOW + timedelta(days=3650))
    assert principal.role is Role.ADMIN and principal.deployments is None


def _near_misses(plaintext: str) -> list[str]:
    key_id, secret = plaintext[3:15], plaintext[16:]
    flipped = "a" if secret[-1] != "a" else "b"
    return [
        plaintext[:-1],  # truncated
        plaintext + "x",  # one extra character
        plaintext[:-1] + flipped,  # last character changed
        plaintext + "\n",  # a trailing newline must not slip past `$`
        " " + plaintext,
        plaintext.upper(),
        plaintext.replace("sy_", "SY_", 1),
        plaintext.replace("sy_", "sk_", 1),
        f"sy_{key_id}-{secret}",
        f"sy_{key_id}_{secret[:-1]}\u0410",  # a Cyrillic A for the last character
        f"sy_{key_id}_{secret[:-1]}\uff41",  # fullwidth a
        f"sy_{key_id}_{secret[:-1]}\u0661",  # Arabic-Indic digit one
        f"sy_{key_id}_{secret[:-1]}\x00",
        f"sy_{key_id}_{secret}\u200b",  # zero-width space
        f"sy_{key_id}_",
        f"sy_{key_id}",
        f"sy__{secret}",
        "sy_",
        "",
        plaintext * 1000,
        "sy_" + "A" * 1_000_000,
    ]


def test_near_misses_of_a_real_key_are_all_refused(issued, store):
    plaintext, _ = issued
    for presented in _near_misses(plaintext):
        _refused(store, presented)


def test_a_secret_moved_under_another_id_is_refused(store):
    a, _ = create_key(store, Role.ADMIN, None, None, "alice", now=NOW)
    b, _ = create_key(store, Role.VIEWER, None, None, "alice", now=NOW)
    # The hash covers the id, so a's secret under b's id matches nothing.
    _refused(store, b[:16] + a[16:])


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200) | st.from_regex(r"sy_[0-9A-Za-z_]{0,70}", fullmatch=True))
def test_arbitrary_text_is_refused_and_never_crashes(store, presented):
    _refused(store, presented)


def test_a_naive_now_is_a_user_error(issued, store):
    plaintext, _ = issued
    with pytest.raises(UserError):
        authenticate_key(store, plaintext, datetime(2030, 1, 2))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"role": "root"}, "role"),
        ({"role": "Admin"}, "role"),
        ({"role": "admin\n"}, "role"),
        ({"deployments": []}, "empty deployment scope"),
        ({"deployments": ["Fraud"]}, "deployment name"),
        ({"deployments": ["../etc"]}, "deployment name"),
        ({"deployments": ["a" * 65]}, "deployment name"),
        ({"deployments": ["fraud\n"]}, "deployment name"),
        ({"expires": timedelta(seconds=-1)}, "already past"),
        ({"expires": datetime(2000, 1, 1, tzinfo=UTC)}, "already past"),
        ({"expires": datetime(2099, 1, 1)}, "time zone"),
        ({"actor": ""}, "actor"),
        ({"actor": "eve\nINFO forged log line"}, "actor"),
        ({"actor": "x" * 1000}, "actor"),
        ({"name": "ok\u202etxt.exe"}, "key name"),  # a bidi override
    ],
)
def test_create_key_refuses_bad_input_without_echoing_it(store, kwargs, needle):
    args = {"role": "viewer", "deployments": None, "expires": None, "actor": "alice"}
    args.update(kwargs)
    name = args.pop("name", None)
    with pytest.raises(UserError) as caught:
        create_key(store, **args, name=name, now=NOW)
    assert needle in caught.value.message
    assert caught.value.hint
    for value in kwargs.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(caught.value)
    assert store.list() == []  # nothing stored on failure


def test_a_lone_deployment_name_is_not_split_into_letters(store):
    _, record = create_key(store, Role.PREDICTOR, "fraud", None, "alice", now=NOW)
    assert record.deployments == frozenset({"fraud"})


def test_an_absolute_expiry_is_kept_in_utc(store):
    from datetime import timezone

    tokyo = timezone(timedelta(hours=9))
    _, record = create_key(
        store, Role.VIEWER, None, datetime(2031, 1, 1, 9, tzinfo=tokyo), "alice", now=NOW
    )
    assert record.expires_at == datetime(2031, 1, 1, tzinfo=UTC)
    assert record.expires_at.tzinfo == UTC


def test_from_row_reads_naive_database_times_as_utc(issued):
    _, record = issued
    row = record.to_row()
    row["created_at"] = record.created_at.replace(tzinfo=None)
    assert KeyRecord.from_row(row) == record


def test_is_active_honours_revocation_and_expiry(issued):
    _, record = issued
    assert record.is_active(NOW)
    revoked = record.revoked("bob", NOW + timedelta(minutes=5))
    assert revoked.is_active(NOW)  # before the revocation instant
    assert not revoked.is_active(NOW + timedelta(minutes=5))
    assert revoked.revoked("carol", NOW + timedelta(hours=1)) == revoked
