"""The door's one pass over the headers: what it reads, and that no shortcut skips a check."""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.errors import ForbiddenError, UnauthorizedError, UserError
from shipyard.security.principals import PrincipalKind
from shipyard.serving.door import ANONYMOUS, Door

PREDICT = ["v1", "deployments", "bench", "predict"]


def scope(*headers: tuple[bytes, bytes], method: str = "POST") -> dict[str, Any]:
    return {"method": method, "headers": [(b"host", b"127.0.0.1:8000"), *headers]}


def test_no_credential_with_auth_off_is_the_anonymous_principal() -> None:
    principal, deployment = Door(auth_required=False).admit(scope(), PREDICT)
    assert principal is ANONYMOUS and deployment == "bench"


def test_no_credential_with_auth_on_is_401() -> None:
    with pytest.raises(UnauthorizedError):
        Door(auth_required=True).admit(scope(), PREDICT)


def test_management_needs_a_credential_even_with_auth_off() -> None:
    with pytest.raises(UnauthorizedError):
        Door(auth_required=False).admit(scope(), ["v1", "deployments", "bench", "rollback"])


def test_a_credential_sent_is_checked_even_with_auth_off() -> None:
    with pytest.raises(UnauthorizedError):
        Door(auth_required=False).admit(scope((b"x-api-key", b"not-a-key")), PREDICT)


def test_two_credential_headers_are_refused() -> None:
    twice = scope((b"authorization", b"Bearer x"), (b"x-api-key", b"y"))
    with pytest.raises(UnauthorizedError, match="more than one"):
        Door(auth_required=False).admit(twice, PREDICT)


def test_the_first_host_header_decides() -> None:
    door = Door(auth_required=False)
    evil, good = (b"host", b"evil.example"), (b"host", b"localhost")
    evil_first = {"method": "POST", "headers": [evil, good]}
    with pytest.raises(UserError, match="Host"):
        door.admit(evil_first, PREDICT)
    good_first = {"method": "POST", "headers": [good, evil]}
    assert door.admit(good_first, PREDICT)[0].kind is PrincipalKind.ANONYMOUS


def test_a_cross_site_post_is_refused_before_anything_else() -> None:
    with pytest.raises(ForbiddenError):
        Door(auth_required=False).admit(scope((b"sec-fetch-site", b"cross-site")), PREDICT)
    # Reading is allowed: a page may look at the health of a server.
    get = scope((b"sec-fetch-site", b"cross-site"), method="GET")
    assert Door(auth_required=False).admit(get, ["livez"])[0] is ANONYMOUS
