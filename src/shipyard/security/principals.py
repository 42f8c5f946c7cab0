"""Who is calling: roles and principals (the door's errors, 401 and 403, are in errors.py).

Roles form a ladder, `viewer < predictor < deployer < admin`: a higher role may do whatever a
lower one may. A principal may also carry a deployment scope; `None` means every deployment.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shipyard.errors import UserError


class Role(enum.StrEnum):
    """A rung on the ladder; compare with `rank`, never with string order."""

    VIEWER = "viewer"
    PREDICTOR = "predictor"
    DEPLOYER = "deployer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def covers(self, needed: Role) -> bool:
        """True when this role may do what `needed` may."""
        return self.rank >= needed.rank

    @classmethod
    def parse(cls, value: object) -> Role:
        """The role named by `value`; a UserError that does not echo `value` otherwise."""
        if isinstance(value, Role):
            return value
        if isinstance(value, str):
            for role in cls:
                if role.value == value:
                    return role
        raise UserError(
            "Got an unknown role.",
            hint=f"Expected one of: {', '.join(r.value for r in cls)}.",
        )


_RANKS = {Role.VIEWER: 0, Role.PREDICTOR: 1, Role.DEPLOYER: 2, Role.ADMIN: 3}


class PrincipalKind(enum.StrEnum):
    KEY = "key"  # an API key from the key store
    JWT = "jwt"  # a bearer token from the configured identity provider
    ANONYMOUS = "anonymous"  # nobody, allowed in only because authentication is off
    LOCAL = "local"  # the operator at the CLI, acting on a local registry


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller as the rest of shipyard sees it: recorded in the audit log, checked by authz.

    `name` is safe to log: key names and token subjects are validated before they get here.
    """

    name: str
    kind: PrincipalKind
    role: Role
    deployments: frozenset[str] | None = None  # None: every deployment
    key_id: str | None = None  # the public id of the API key, for keys only

    def may_access(self, deployment: str) -> bool:
        """True when `deployment` is inside this principal's scope (exact name match)."""
        return self.deployments is None or deployment in self.deployments

    @classmethod
    def anonymous(cls, role: Role = Role.ADMIN) -> Principal:
        """The caller when authentication is off: everything the given role allows."""
        return cls(name="anonymous", kind=PrincipalKind.ANONYMOUS, role=role)

    @classmethod
    def local(cls, actor: str) -> Principal:
        """The operator running the CLI against a registry they can already open."""
        return cls(name=actor, kind=PrincipalKind.LOCAL, role=Role.ADMIN)
