"""Rate limits: token buckets per API key and per deployment.

A bucket holds at most `burst` tokens and refills at `rate_per_s`; a request takes `cost`
tokens (1 per request, or its row count). When the bucket lacks them the request is refused
with the time after which the same request would fit (HTTP 429 + `Retry-After`).

Two limiters share one protocol, `RateLimiter`:

- `LocalLimiter`: in this process; thread-safe; bounded memory (the least recently used
  buckets are forgotten, which returns them to full: size `max_buckets` above the number of
  keys that are active at once).
- `RedisLimiter`: one bucket shared by every replica. Each take is one atomic Lua script
  (refill, then take) that reads the Redis server's clock (`TIME`), so replicas with skewed
  clocks still agree; idle buckets expire once they would be full anyway. When Redis is
  unreachable it falls back to a `LocalLimiter`, logs once, and never fails the request:
  during an outage each replica enforces the full rate on its own.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from shipyard.errors import ConfigError, PayloadTooLargeError, missing_extra

if TYPE_CHECKING:
    import redis

log = logging.getLogger("shipyard.security.ratelimit")

_LONG_KEY = 200  # longer bucket keys are stored by digest: a caller cannot grow our memory


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one take: allowed or not, when to retry, and tokens left."""

    allowed: bool
    retry_after_s: float  # 0.0 when allowed
    remaining: float  # tokens left in the bucket after this take

    @property
    def retry_after_header(self) -> str:
        """`Retry-After` in whole seconds, rounded up (a client retrying then will fit)."""
        return str(max(1, math.ceil(self.retry_after_s))) if not self.allowed else "0"


class RateLimiter(Protocol):
    """Take `cost` tokens from the bucket `bucket_key` (`now`: seconds; tests inject it)."""

    def take(
        self,
        bucket_key: str,
        rate_per_s: float,
        burst: float,
        cost: float = 1.0,
        now: float | None = None,
    ) -> Decision: ...


def check_bucket(rate_per_s: float, burst: float, cost: float) -> None:
    """Refuse a bucket shape that cannot work; the messages name settings, never callers."""
    for name, value in (("rate_per_s", rate_per_s), ("burst", burst)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"Got a {type(value).__name__} for the rate limit's {name}. Expected a number.",
                hint="Set the limit to a positive number, e.g. rate_per_s=10, burst=20.",
            )
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(
                f"The rate limit's {name} must be a positive finite number.",
                hint="Set the limit to a positive number, e.g. rate_per_s=10, burst=20.",
            )
    if (
        isinstance(cost, bool)
        or not isinstance(cost, int | float)
        or not (math.isfinite(cost) and cost >= 0)
    ):
        raise ConfigError(
            "A request's rate-limit cost must be a finite number of tokens, 0 or more.",
            hint="Count one token per request or one per row.",
        )
    if cost > burst:
        # It would never fit, however long the client waited: a 413, not a 429 loop.
        raise PayloadTooLargeError(
            f"This request costs more rate-limit tokens than the bucket holds ({burst:g}).",
            hint="Send smaller batches, or raise the limit's burst.",
        )


def _refill_and_take(
    tokens: float, elapsed: float, rate_per_s: float, burst: float, cost: float
) -> tuple[float, Decision]:
    """The token-bucket rule, shared in spirit with the Lua script below."""
    tokens = min(burst, tokens + max(0.0, elapsed) * rate_per_s)  # a clock going back adds 0
    if tokens >= cost:
        tokens -= cost
        return tokens, Decision(True, 0.0, tokens)
    return tokens, Decision(False, (cost - tokens) / rate_per_s, tokens)


def _encodable(text: str) -> bool:
    # A lone surrogate cannot travel to Redis as UTF-8; such a key goes by digest instead.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storage_key(bucket_key: str) -> str:
    if not isinstance(bucket_key, str):
        raise ConfigError(
            f"Got a {type(bucket_key).__name__} for a rate-limit bucket key. Expected a str.",
            hint="Name buckets like 'key:<key id>' or 'deployment:<name>'.",
        )
    if len(bucket_key) <= _LONG_KEY and _encodable(bucket_key):
        return bucket_key
    digest = hashlib.sha256(bucket_key.encode("utf-8", "surrogatepass")).hexdigest()
    return "sha256:" + digest


class LocalLimiter:
    """Token buckets in this process: thread-safe, at most `max_buckets` remembered."""

    def __init__(
        self, *, max_buckets: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_buckets < 1:
            raise ConfigError(
                "max_buckets must be at least 1.", hint="Use the default (100000) or more."
            )
        self.max_buckets = max_buckets
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [tokens, last refill time]; OrderedDict order is recency (LRU at the front).
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(
        self,
        bucket_key: str,
        rate_per_s: float,
        burst: float,
        cost: float = 1.0,
        now: float | None = None,
    ) -> Decision:
        check_bucket(rate_per_s, burst, cost)
        key = _storage_key(bucket_key)
        with self._lock:
            t = self._clock() if now is None else now
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = [float(burst), t]  # a new bucket starts full
                self._buckets[key] = bucket
                if len(self._buckets) > self.max_buckets:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            tokens, decision = _refill_and_take(bucket[0], t - bucket[1], rate_per_s, burst, cost)
            bucket[0] = tokens
            bucket[1] = max(bucket[1], t)  # never move the refill point backwards
            return decision


# KEYS[1]: the bucket hash {t: tokens, ts: microseconds}. ARGV: rate, burst, cost, now_us
# ("" = read the server clock). Numbers go back as strings: Lua numbers would be truncated
# to integers on the way out. %.17g keeps a double exact through the round trip. A bucket
# expires once it would be full again (at most a week: a slower refill is forgiven then).
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[4])
end
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
local elapsed = now - last
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate / 1000000)
if last < now then last = now end
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'ts', string.format('%.17g', last))
local ttl = math.min(math.ceil((burst - tokens) / rate * 1000) + 1000, 604800000)
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return {allowed, string.format('%.17g', tokens), string.format('%.17g', retry)}
"""


class RedisLimiter:
    """Token buckets shared through Redis; falls back to `fallback` while Redis is down.

    `client` is a `redis.Redis` made at the edge; give it short socket timeouts and no
    retries (see `from_url`) so an outage costs milliseconds, not seconds. After a failure
    the limiter stays on the fallback for `retry_after_failure_s` before asking Redis again.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "shipyard:ratelimit:",
        fallback: LocalLimiter | None = None,
        retry_after_failure_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.fallback = fallback if fallback is not None else LocalLimiter()
        self.retry_after_failure_s = retry_after_failure_s
        self._clock = clock
        self._script = client.register_script(_TAKE_LUA)
        from redis.exceptions import RedisError  # a client was given: redis is installed

        self._failures: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._state_lock = threading.Lock()
        self._down_until: float | None = None  # set while Redis is considered down

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.25, **kwargs: Any) -> RedisLimiter:
        """A limiter over a new client for `url`: short timeouts and no retries.

        No retries because a take is not idempotent (a retried script whose first answer was
        lost would take twice) and because the fallback answers at once anyway.
        """
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise missing_extra("redis", "redis") from exc
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, **kwargs)

    @property
    def degraded(self) -> bool:
        """True while takes are answered by the local fallback."""
        return self._down_until is not None

    def take(
        self,
        bucket_key: str,
        rate_per_s: float,
        burst: float,
        cost: float = 1.0,
        now: float | None = None,
    ) -> Decision:
        check_bucket(rate_per_s, burst, cost)
        key = _storage_key(bucket_key)
        if self._skip_redis():
            return self.fallback.take(key, rate_per_s, burst, cost)
        now_arg = "" if now is None else repr(round(now * 1_000_000))
        try:
            allowed, remaining, retry = self._script(
                keys=[self.prefix + key],
                args=[repr(float(rate_per_s)), repr(float(burst)), repr(float(cost)), now_arg],
            )
        except self._failures as exc:  # any redis or socket failure: never a 500 for a limit
            self._mark_down(exc)
            return self.fallback.take(key, rate_per_s, burst, cost)
        self._mark_up()
        return Decision(bool(allowed), float(retry), float(remaining))

    def _skip_redis(self) -> bool:
        down_until = self._down_until
        return down_until is not None and self._clock() < down_until

    def _mark_down(self, exc: BaseException) -> None:
        with self._state_lock:
            first = self._down_until is None
            self._down_until = self._clock() + self.retry_after_failure_s
        if first:  # one line per outage, not one per request
            log.warning(
                "Redis rate limiter failed (%s); limiting in this process until Redis "
                "answers again.",
                type(exc).__name__,
            )

    def _mark_up(self) -> None:
        if self._down_until is None:
            return
        with self._state_lock:
            recovered = self._down_until is not None
            self._down_until = None
        if recovered:
            log.warning("Redis rate limiter reachable again; buckets are shared once more.")
