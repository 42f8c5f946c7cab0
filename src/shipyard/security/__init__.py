"""Security: who may do what, at what rate, and what never leaves the server.

A leaf beside routing: it imports only `shipyard.errors`, `shipyard.settings` and third-party
libraries, and reads API keys through the `KeyStore` protocol that the registry implements.
Names are imported lazily so that `import shipyard.security.pii` (say) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.errors import ForbiddenError, UnauthorizedError
    from shipyard.security.authz import PERMISSIONS, authenticate, authorize
    from shipyard.security.jwt import JWTConfig, JWTVerifier, KeySet
    from shipyard.security.keys import KeyRecord, KeyStore, authenticate_key, create_key
    from shipyard.security.principals import Principal, PrincipalKind, Role

_EXPORTS = {
    "PERMISSIONS": "shipyard.security.authz",
    "authenticate": "shipyard.security.authz",
    "authorize": "shipyard.security.authz",
    "JWTConfig": "shipyard.security.jwt",
    "JWTVerifier": "shipyard.security.jwt",
    "KeySet": "shipyard.security.jwt",
    "KeyRecord": "shipyard.security.keys",
    "KeyStore": "shipyard.security.keys",
    "authenticate_key": "shipyard.security.keys",
    "create_key": "shipyard.security.keys",
    "ForbiddenError": "shipyard.errors",
    "Principal": "shipyard.security.principals",
    "PrincipalKind": "shipyard.security.principals",
    "Role": "shipyard.security.principals",
    "UnauthorizedError": "shipyard.errors",
}

__all__ = [
    "PERMISSIONS",
    "ForbiddenError",
    "JWTConfig",
    "JWTVerifier",
    "KeyRecord",
    "KeySet",
    "KeyStore",
    "Principal",
    "PrincipalKind",
    "Role",
    "UnauthorizedError",
    "authenticate",
    "authenticate_key",
    "authorize",
    "create_key",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard.security' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
