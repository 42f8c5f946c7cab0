"""The door: `authenticate` says who is calling, `authorize` says whether they may.

Every action names the lowest role that may perform it; higher roles inherit it. A principal
scoped to some deployments may act only on those, and never on an action that names no
deployment (keys, registry writes, the dashboard): that would reach beyond its scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from shipyard.errors import ForbiddenError, ShipyardError, UnauthorizedError
from shipyard.security.jwt import MAX_TOKEN_CHARS, JWTVerifier
from shipyard.security.keys import KeyStore, authenticate_key, looks_like_key
from shipyard.security.principals import Principal, Role

# Read-only, so nothing at run time can quietly lower a requirement.
PERMISSIONS: Mapping[str, Role] = MappingProxyType(
    {
        "status.read": Role.VIEWER,
        "metrics.read": Role.VIEWER,
        "dashboard.read": Role.VIEWER,
        "rollout.read": Role.VIEWER,
        "predict": Role.PREDICTOR,
        "feedback.write": Role.PREDICTOR,
        "deploy": Role.DEPLOYER,
        "rollout.write": Role.DEPLOYER,
        "rollback": Role.ADMIN,
        "keys.manage": Role.ADMIN,
        "registry.write": Role.ADMIN,
    }
)

_NO_CREDENTIAL_HINT = "Send `Authorization: Bearer <API key or token>` or `X-API-Key: <API key>`."


def authorize(principal: Principal, action: str, deployment: str | None = None) -> None:
    """Return when `principal` may do `action` (on `deployment`); ForbiddenError otherwise."""
    needed = PERMISSIONS.get(action)
    if needed is None:
        # A route asking about an action nobody listed is our bug; refuse rather than guess.
        raise ShipyardError(
            "An internal permission check named an unknown action.",
            hint="Report this as a bug in shipyard.",
        )
    if not principal.role.covers(needed):
        raise ForbiddenError(
            f"The role {principal.role.value!r} may not do {action!r}.",
            hint=f"Use a credential with the role {needed.value!r} or higher.",
        )
    if principal.deployments is not None and (
        deployment is None or not principal.may_access(deployment)
    ):
        # The deployment name came from the caller: it stays out of the message.
        raise ForbiddenError(
            f"This credential is limited to some deployments and may not do {action!r} here.",
            hint="Use a credential whose scope includes this deployment.",
        )


_ANONYMOUS = Principal.anonymous()  # frozen: one instance serves every anonymous request


def authenticate(
    headers: Mapping[str, str],
    *,
    keys: KeyStore | None,
    jwt: JWTVerifier | None,
    auth_required: bool,
    now: datetime | None = None,
    anonymous_role: Role = Role.ADMIN,
) -> Principal:
    """The principal behind a request's headers.

    `Authorization: Bearer <key or JWT>` or `X-API-Key: <key>`; a credential that is sent is
    always checked, even when authentication is off. With none sent: 401 when
    `auth_required`, else the anonymous principal with `anonymous_role`.
    """
    credential, from_api_key_header = _credential(headers)
    if credential is None:
        if auth_required:
            raise UnauthorizedError("This route needs a credential.", hint=_NO_CREDENTIAL_HINT)
        return _ANONYMOUS if anonymous_role is Role.ADMIN else Principal.anonymous(anonymous_role)
    if from_api_key_header and not looks_like_key(credential):
        raise _refused("The X-API-Key header carries API keys only; send tokens as Bearer.")
    if looks_like_key(credential):
        if keys is None:
            raise _refused("API keys are not accepted by this server.")
        return authenticate_key(keys, credential, now or datetime.now(UTC))
    if credential.count(".") == 2:  # the compact JWS shape: header.payload.signature
        if jwt is None:
            raise _refused("Bearer tokens are not accepted by this server.")
        return jwt.verify(credential)
    raise _refused("The credential is neither a shipyard API key nor a JWT.")


def _credential(headers: Mapping[str, str]) -> tuple[str | None, bool]:
    """The one credential in the headers (or None) and whether it came in X-API-Key.

    401 when there are several, or one that is malformed.
    """
    authorization = _values(headers, "authorization")
    api_key = _values(headers, "x-api-key")
    if len(authorization) + len(api_key) > 1:
        raise _refused("The request carries more than one credential.")
    if api_key:
        value = api_key[0].strip()
        if not value:
            raise _refused("The X-API-Key header is empty.")
        return _checked(value), True
    if not authorization:
        return None, False
    scheme, _, value = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise _refused("The Authorization header does not use the Bearer scheme.")
    value = value.strip()
    if not value:
        raise _refused("The Authorization header has no credential after `Bearer`.")
    return _checked(value), False


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of header `name`, whatever its case (plain dicts are case-sensitive).

    Header containers that keep repeated headers (Starlette's) yield each one from items().
    """
    multi = getattr(headers, "multi_items", None)
    items = multi() if callable(multi) else headers.items()
    return [value for key, value in items if key.lower() == name]


def _checked(value: str) -> str:
    # A credential is printable ASCII with no spaces; anything else cannot be one of ours.
    if len(value) > MAX_TOKEN_CHARS or not value.isascii() or not value.isprintable():
        raise _refused("The credential has characters no credential can have.")
    if " " in value:
        raise _refused("The credential has characters no credential can have.")
    return value


def _refused(message: str) -> UnauthorizedError:
    return UnauthorizedError(message, hint=_NO_CREDENTIAL_HINT)
