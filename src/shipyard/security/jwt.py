"""JWT bearer tokens from an identity provider, verified against its JWKS with PyJWT.

Only asymmetric algorithms are accepted, and only those configured: `none` and every HS*
are refused outright, since a JWKS holds public keys and an HMAC "verified" with a public key
is the classic algorithm-confusion forgery. The token's `alg` picks nothing by itself: it must
be on the allowlist and agree with the key it names (PyJWT binds a `PyJWK` to one algorithm).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipyard.errors import ConfigError, UnauthorizedError, UnavailableError
from shipyard.security.principals import Principal, PrincipalKind, Role
from shipyard.security.urls import forbidden_host

if TYPE_CHECKING:
    import jwt as pyjwt

log = logging.getLogger("shipyard.security")

ASYMMETRIC = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)
MAX_TOKEN_CHARS = 16 * 1024  # well above any real token; bounds the work a caller can cause
MAX_JWKS_BYTES = 1024 * 1024
_MAX_SUBJECT = 256
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}

_INVALID = "The bearer token is not valid."
_INVALID_HINT = "Get a fresh token from the identity provider that shipyard is configured to trust."


class JWTConfig(BaseModel):
    """How bearer tokens are checked. Exactly one of `jwks_url` and `jwks_file` is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, description="Expected `iss` claim, compared exactly.")
    audience: str = Field(min_length=1, description="Expected `aud` claim (or one of them).")
    jwks_url: str | None = Field(
        default=None,
        repr=False,  # may carry a token in its query
        description="URL of the issuer's JWKS: https, or http to a loopback address only.",
    )
    jwks_file: Path | None = Field(default=None, description="A JWKS JSON file on disk.")
    algorithms: tuple[str, ...] = Field(
        default=("RS256", "ES256", "EdDSA"),
        min_length=1,
        description=f"Accepted signature algorithms, a subset of {', '.join(ASYMMETRIC)}.",
    )
    leeway_s: float = Field(
        default=30.0, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat."
    )
    role_claim: str = Field(
        default="shipyard_role", min_length=1, description="Claim naming the role (or roles)."
    )
    deployments_claim: str = Field(
        default="shipyard_deployments",
        min_length=1,
        description="Claim listing the deployments the token may act on; absent means all.",
    )
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="JWKS fetch timeout.")
    cache_ttl_s: float = Field(default=300.0, gt=0, description="How long a JWKS is reused.")
    refresh_cooldown_s: float = Field(
        default=30.0,
        ge=0,
        description="Least time between two JWKS fetches caused by unknown key ids.",
    )

    @model_validator(mode="after")
    def _check(self) -> JWTConfig:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("set exactly one of jwks_url and jwks_file")
        refused = [a for a in self.algorithms if a not in ASYMMETRIC]
        if refused:
            raise ValueError(f"only asymmetric algorithms are allowed: {', '.join(ASYMMETRIC)}")
        if self.jwks_url is not None and not _safe_jwks_url(self.jwks_url):
            raise ValueError("jwks_url must be https, or http to a loopback address")
        return self

    @classmethod
    def build(cls, **values: Any) -> JWTConfig:
        """Validate `values` into a config, as a ConfigError rather than a pydantic error."""
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "jwt"
            raise ConfigError(
                f"JWT setting {where!r}: {first['msg']}.",
                hint="See docs/settings.md for the JWT settings and their allowed values.",
            ) from exc


Loader = Callable[[], bytes]


class KeySet:
    """The issuer's public keys: cached for `ttl_s`, reloaded early on an unknown `kid`.

    Reloads caused by unknown key ids are at most one per `cooldown_s`, so a caller sending
    random ids cannot turn us into a flood against the identity provider. A failed reload
    keeps the last good keys; only when there never were any does verification answer 503.
    """

    def __init__(
        self,
        load: Loader,
        *,
        ttl_s: float = 300.0,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl_s = ttl_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[dict[str, Any]] = []
        self._built: dict[tuple[int, str], pyjwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None
        self.loads = 0  # successful loads, for tests and metrics

    @classmethod
    def from_config(cls, config: JWTConfig) -> KeySet:
        path, url, timeout_s = config.jwks_file, config.jwks_url, config.timeout_s

        def load() -> bytes:
            return _read_file(path) if path is not None else _fetch_url(str(url), timeout_s)

        return cls(load, ttl_s=config.cache_ttl_s, cooldown_s=config.refresh_cooldown_s)

    def key_for(self, kid: str | None, alg: str) -> pyjwt.PyJWK | None:
        """The key that verifies a token with this header, or None when there is none."""
        with self._lock:
            now = self._clock()
            stale = self._loaded_at is None or now - self._loaded_at >= self._ttl_s
            if stale and self._may_retry(now):
                self._try_load(now)
            if self._loaded_at is None:
                raise _unavailable()  # never loaded, and failed a moment ago: no hammering
            found = self._match(kid, alg)
            # An unknown kid may mean the issuer rotated its keys since our last load.
            if found is None and kid is not None and self._may_retry(now) and self._try_load(now):
                found = self._match(kid, alg)
            return found

    def refresh(self) -> None:
        """Load the keys now (at start-up, say); UnavailableError when that fails."""
        with self._lock:
            if not self._try_load(self._clock()):
                raise _unavailable()

    def _may_retry(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._cooldown_s

    def _try_load(self, now: float) -> bool:
        """Load and swap in the keys; on failure keep the last good ones and say False."""
        self._attempted_at = now
        try:
            keys = _parse_jwks(self._load())
        except (OSError, ValueError, RecursionError, http.client.HTTPException) as exc:
            # URLError, timeouts and refused connections are OSErrors; bad JSON a ValueError.
            log.warning("could not load the JWKS: %s", type(exc).__name__)
            return False
        self._keys, self._built = keys, {}
        self._loaded_at = now
        self.loads += 1
        return True

    def _match(self, kid: str | None, alg: str) -> pyjwt.PyJWK | None:
        if kid is None:
            # Some issuers omit kid; that is unambiguous only with a single key.
            candidates = list(enumerate(self._keys)) if len(self._keys) == 1 else []
        else:
            candidates = [(i, k) for i, k in enumerate(self._keys) if k.get("kid") == kid]
        for index, data in candidates:
            slot = (index, alg)
            if slot not in self._built:
                built = _jwk_for(data, alg)
                if built is None:
                    continue
                self._built[slot] = built
            return self._built[slot]
        return None


class JWTVerifier:
    """Turns a bearer token into a Principal, or raises UnauthorizedError (401)."""

    def __init__(self, config: JWTConfig, keyset: KeySet | None = None) -> None:
        self.config = config
        self.keyset = keyset if keyset is not None else KeySet.from_config(config)

    def verify(self, token: str) -> Principal:
        import jwt as pyjwt  # here, not at the top: a server without JWTs never imports it

        config = self.config
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise UnauthorizedError(_INVALID, hint=_INVALID_HINT)
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError as exc:
            raise _invalid("malformed header", exc) from None
        alg, kid = header.get("alg"), header.get("kid")
        # Checked before any key lookup, so junk never triggers a JWKS fetch.
        if not isinstance(alg, str) or alg not in config.algorithms:
            raise _invalid("algorithm not allowed")
        if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
            raise _invalid("bad kid")
        key = self.keyset.key_for(kid, alg)
        if key is None:
            raise _invalid("no key for this kid and alg")
        try:
            claims = pyjwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_s,
                options={
                    "require": ["exp", "iss", "aud", "sub"],  # a token must expire
                    "enforce_minimum_key_length": True,  # refuse RSA keys under 2048 bits
                },
            )
        except pyjwt.PyJWTError as exc:
            raise _invalid("rejected", exc) from None
        return Principal(
            name=_subject(claims.get("sub")),
            kind=PrincipalKind.JWT,
            role=_role(claims.get(config.role_claim)),
            deployments=_deployments(claims, config.deployments_claim),
        )


def _subject(value: object) -> str:
    # The subject lands in the audit log and in log lines: one printable line, bounded.
    if not isinstance(value, str) or not value or len(value) > _MAX_SUBJECT:
        raise _invalid("bad sub")
    if not value.isprintable():
        raise _invalid("sub with control characters")
    return value


def _role(value: object) -> Role:
    """The role claim: one name, or a list whose highest known role wins."""
    names = value if isinstance(value, list) else [value]
    roles = [r for r in Role if r.value in {n for n in names if isinstance(n, str)}]
    if not roles:
        raise _invalid("no known role")
    return max(roles, key=lambda r: r.rank)


def _deployments(claims: dict[str, Any], claim: str) -> frozenset[str] | None:
    if claim not in claims:
        return None
    value = claims[claim]
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _invalid("bad deployments claim")
    return frozenset(names)


def _jwk_for(data: dict[str, Any], alg: str) -> pyjwt.PyJWK | None:
    """The key bound to `alg`, when the JWK's own type and `alg` allow it."""
    import jwt as pyjwt

    if data.get("alg") not in (None, alg) or not _fits(data, alg):
        return None
    try:
        return pyjwt.PyJWK(data, algorithm=alg)
    except pyjwt.PyJWTError:
        return None


def _fits(data: dict[str, Any], alg: str) -> bool:
    kty = data.get("kty")
    if alg[:2] in ("RS", "PS"):
        return kty == "RSA"
    if alg in _EC_CURVES:
        return kty == "EC" and data.get("crv") == _EC_CURVES[alg]
    return alg == "EdDSA" and kty == "OKP" and data.get("crv") in ("Ed25519", "Ed448")


def _parse_jwks(raw: bytes) -> list[dict[str, Any]]:
    """The signing keys of a JWKS document; symmetric (`oct`) keys are dropped."""
    if len(raw) > MAX_JWKS_BYTES:
        raise ValueError("JWKS too large")
    document = json.loads(raw)
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError("not a JWKS")
    return [
        k
        for k in keys
        if isinstance(k, dict) and k.get("kty") != "oct" and k.get("use") in (None, "sig")
    ]


def _safe_jwks_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host or parts.username or parts.password or forbidden_host(host):
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead a key fetch to a host (or scheme) nobody configured."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _fetch_url(url: str, timeout_s: float) -> bytes:
    opener = urllib.request.build_opener(_NoRedirect())
    # The scheme is checked in JWTConfig: https, or http to loopback only.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with opener.open(request, timeout=timeout_s) as response:
        body: bytes = response.read(MAX_JWKS_BYTES + 1)
    return body


def _read_file(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_JWKS_BYTES + 1)


def _invalid(reason: str, exc: Exception | None = None) -> UnauthorizedError:
    # The reason goes to our log, never to the caller, and never with the token in it.
    log.info("bearer token refused: %s%s", reason, f" ({type(exc).__name__})" if exc else "")
    return UnauthorizedError(_INVALID, hint=_INVALID_HINT)


def _unavailable() -> UnavailableError:
    return UnavailableError(
        "Cannot verify bearer tokens: the identity provider's keys could not be loaded.",
        hint="Check the JWKS URL or file in the settings and that it is reachable; retry later.",
    )
