"""The server's door: who is calling, may they, under their rate, from where.

Per request, before any body is read: the Host header must name this server (a browser
DNS-rebinding attack arrives with a foreign Host); a state-changing request a browser marks
`Sec-Fetch-Site: cross-site` is refused; the caller is authenticated (API key or JWT) and the
route's action authorized for their role and deployment scope; token buckets per key and per
deployment hold the rate. Health probes are the only routes open to anyone. Management
routes (rollouts, rollback) always need a credential, even where authentication is off for
predictions on a loopback listener: no anonymous caller ever changes traffic.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shipyard.errors import ForbiddenError, OverloadedError, UnauthorizedError, UserError
from shipyard.security.authz import authenticate, authorize
from shipyard.security.jwt import JWTVerifier
from shipyard.security.keys import KeyRecord, KeyStore
from shipyard.security.principals import Principal, PrincipalKind
from shipyard.security.ratelimit import LocalLimiter, RateLimiter
from shipyard.serving.http import Scope

PUBLIC = None  # the action of routes anyone may call (health probes)
MANAGEMENT = frozenset({"rollout.write", "rollback", "keys.manage", "registry.write"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
KEY_CACHE_S = 5.0  # a revoked key stops working within this long
ANONYMOUS = Principal.anonymous()


def action_of(method: str, parts: list[str]) -> tuple[str | None, str | None]:
    """(action, deployment) of a route, from its path parts; unknown routes read status."""
    if parts in (["livez"], ["readyz"]) or parts[:2] == ["v2", "health"]:
        return PUBLIC, None
    if parts == ["metrics"]:
        return "metrics.read", None
    if parts and parts[0] == "ui":
        return "dashboard.read", None
    if parts[:2] == ["v1", "deployments"] and len(parts) >= 3:
        name, rest = parts[2], parts[3:]
        if rest == ["predict"]:
            return "predict", name
        if rest == ["feedback"]:
            return "feedback.write", name
        if rest == ["rollback"]:
            return "rollback", name
        if rest[:1] == ["rollout"] and method == "POST":
            return "rollout.write", name
        if rest[:1] in (["rollout"], ["history"]):
            return "rollout.read", name
        return "status.read", name
    if parts[:2] == ["v2", "models"] and len(parts) >= 3:
        return ("predict" if parts[-1] == "infer" else "status.read"), parts[2]
    return "status.read", None


@dataclass
class Door:
    auth_required: bool
    keys: KeyStore | None = None
    jwt: JWTVerifier | None = None
    allowed_hosts: frozenset[str] = LOOPBACK_HOSTS
    limiter: RateLimiter = field(default_factory=LocalLimiter)
    key_rate: tuple[float, float] | None = None  # (per second, burst) per caller

    def __post_init__(self) -> None:
        if self.keys is not None:
            self.keys = CachedKeys(self.keys)

    def admit(self, scope: Scope, parts: list[str]) -> tuple[Principal, str | None]:
        """The caller's principal and the route's deployment; raises 4xx otherwise."""
        # One pass over the headers for everything the door reads (the first Host and
        # Sec-Fetch-Site count; every credential header is kept, to refuse two).
        host = site = None
        sent: list[tuple[bytes, bytes]] = []
        for key, value in scope["headers"]:
            if key == b"host":
                host = value if host is None else host
            elif key == b"sec-fetch-site":
                site = value if site is None else site
            elif key == b"authorization" or key == b"x-api-key":
                sent.append((key, value))
        self._check_host(None if host is None else bytes(host).decode("latin-1"))
        method = scope["method"]
        action, deployment = action_of(method, parts)
        if method == "POST" and site == b"cross-site":
            raise ForbiddenError("Cross-site requests may not change anything here.",
                                 hint="Call the API from your own code, not from a web page.")
        if action is PUBLIC:
            return ANONYMOUS, None
        if len(sent) > 1:
            # A dict would keep only the last: a garbage first header must not hide a second.
            raise UnauthorizedError("The request carries more than one credential.",
                                    hint="Send one Authorization: Bearer header.")
        required = self.auth_required or action in MANAGEMENT
        if not sent and not required:
            principal = ANONYMOUS  # what authenticate gives for no credential, without a clock
        else:
            principal = authenticate(
                {k.decode("latin-1"): v.decode("latin-1") for k, v in sent},
                keys=self.keys, jwt=self.jwt, auth_required=required, now=datetime.now(UTC),
            )
        if action in MANAGEMENT and principal.kind is PrincipalKind.ANONYMOUS:
            raise UnauthorizedError("Changing traffic needs a credential.",
                                    hint="Create a key: shipyard keys create --role deployer")
        authorize(principal, action, deployment)
        if self.key_rate is not None and principal.key_id is not None:
            rate, burst = self.key_rate
            limit(self.limiter, f"key:{principal.key_id}", rate, burst)
        return principal, deployment

    def _check_host(self, host: str | None) -> None:
        if host is None or "*" in self.allowed_hosts:
            return
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower() not in self.allowed_hosts:
            raise UserError(
                "The Host header does not name this server.",
                hint="Call the server by a name in its allowed_hosts setting.",
            )


def limit(limiter: RateLimiter, bucket: str, rate: float, burst: float) -> None:
    decision = limiter.take(bucket, rate, burst)
    if not decision.allowed:
        raise OverloadedError(
            "Too many requests: over the rate limit.",
            hint=f"Retry after {decision.retry_after_header} s.",
            retry_after=decision.retry_after_header,
        )


class CachedKeys:
    """A KeyStore read through a short cache: one database read per key per KEY_CACHE_S."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._lock = threading.Lock()

    def get(self, key_id: str) -> KeyRecord | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < KEY_CACHE_S:
            return hit[1]
        record = self.store.get(key_id)
        with self._lock:
            if len(self._cache) > 10_000:  # unknown ids from a scanner must not grow it forever
                self._cache.clear()
            self._cache[key_id] = (now, record)
        return record

    def add(self, record: KeyRecord) -> None:
        self.store.add(record)

    def revoke(self, key_id: str, actor: str) -> KeyRecord:
        with self._lock:
            self._cache.pop(key_id, None)
        return self.store.revoke(key_id, actor)

    def list(self) -> list[KeyRecord]:
        return self.store.list()


def loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")

