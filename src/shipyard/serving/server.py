"""Running the online server: one process, or N workers that share nothing but the registry.

Workers are separate processes started by uvicorn's supervisor, each with its own fleet of
loaded models reading the same registry; uvicorn restarts a worker that dies. SIGTERM stops
accepting connections, lets in-flight requests finish, then closes the models.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shipyard.cpu import set_policy
from shipyard.monitoring.metrics import MULTIPROC_ENV, prepare_multiprocess
from shipyard.monitoring.monitor import Monitor
from shipyard.registry.registry import Registry
from shipyard.serving.accesslog import AccessLog
from shipyard.serving.door import LOOPBACK_HOSTS, Door, loopback
from shipyard.serving.fleet import Fleet
from shipyard.serving.online import OnlineApp, ServerLimits
from shipyard.serving.wire import OneWriteProtocol
from shipyard.settings import Settings

CONFIG_ENV = "SHIPYARD_SERVE_CONFIG"
GRACEFUL_S = 30
# Allocations between two young collections (CPython's default: 700). Every request allocates
# a few hundred tracked objects, so the default collects several times a request batch, and
# whatever the monitor holds for its flush survives each time, to be traversed again. Measured
# four servers on one core, c=64 (bench/monitoring/shared_core.py): CPU per request -2.1% at
# 2,000, -2.9% at 10,000, -1.2% at 50,000 (larger young generations outgrow the caches).
YOUNG_COLLECTION_EVERY = 10_000


def tune_collector() -> None:
    """The cyclic collector's young threshold, for a process that is a server and nothing else
    (not the demo's background server, which shares its caller's process)."""
    import gc

    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])


def build_door(settings: Settings, host: str, registry: Registry | None = None) -> Door:
    """Authentication on beyond loopback (unless explicitly off), keys from the registry,
    JWTs when configured, rate limits in process or through Redis."""
    from shipyard.security.jwt import JWTConfig, JWTVerifier
    from shipyard.security.ratelimit import LocalLimiter, RateLimiter, RedisLimiter

    required = settings.auth == "on" or (settings.auth == "auto" and not loopback(host))
    jwt = None
    if settings.jwt_issuer or settings.jwt_jwks_url or settings.jwt_jwks_file:
        jwt = JWTVerifier(JWTConfig.build(
            issuer=settings.jwt_issuer, audience=settings.jwt_audience,
            jwks_url=settings.jwt_jwks_url, jwks_file=settings.jwt_jwks_file,
        ))
    limiter: RateLimiter = LocalLimiter()
    if settings.redis_url:
        limiter = RedisLimiter.from_url(settings.redis_url, fallback=LocalLimiter())
    hosts = frozenset(h.lower() for h in settings.allowed_hosts)
    if not hosts:
        hosts = LOOPBACK_HOSTS if loopback(host) else frozenset({"*"})
    rate = None
    if settings.rate_limit_rps:
        rate = (settings.rate_limit_rps, settings.rate_limit_burst or 2 * settings.rate_limit_rps)
    keys = registry.keys() if registry is not None else None
    return Door(auth_required=required, keys=keys, jwt=jwt, allowed_hosts=hosts,
                limiter=limiter, key_rate=rate)


def build_app(
    settings: Settings, names: Sequence[str] = (), host: str = "127.0.0.1", *,
    resume_gc: bool = False,
) -> OnlineApp:
    from shipyard.security.logfilter import install

    # PII and secrets never reach a log line, and callers' values cannot forge one.
    install(["shipyard", "uvicorn.error", "uvicorn.access"])
    monitor = build_monitor(settings) if settings.monitoring else None
    fleet = Fleet(settings, names, poll_s=settings.poll_s, monitor=monitor)
    limits = ServerLimits(
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_inflight=settings.max_inflight,
    )
    return OnlineApp(
        fleet,
        limits=limits,
        access_log=AccessLog(enabled=settings.access_log),
        monitor=monitor,
        control=settings.controller,
        door=build_door(settings, host, fleet.registry),
        resume_gc=resume_gc,
    )


def build_monitor(settings: Settings) -> Monitor:
    """The process's monitor: Prometheus series (multi-process mode under --workers N) and
    prediction records written to the registry's database or Parquet files."""
    from shipyard.monitoring.metrics import ServiceMetrics
    from shipyard.monitoring.records import writer_factory

    return Monitor(ServiceMetrics.from_environ(), records=writer_factory(settings))


def app_factory() -> OnlineApp:
    """What each worker process imports: settings travel in an environment variable."""
    from shipyard.security.secrets import plain_settings

    config = json.loads(os.environ[CONFIG_ENV])
    settings = Settings.load(config["overrides"], secrets=plain_settings)
    set_policy(settings.scheduling)
    tune_collector()
    return build_app(settings, config["names"], config.get("host", "127.0.0.1"))


def _uvicorn_options(host: str, port: int) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "http": OneWriteProtocol,  # uvicorn's httptools protocol, one write per answer
        "loop": "uvloop",
        "ws": "none",  # no WebSocket routes: skips importing a WebSocket library at start
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_S,
        "log_level": "warning",
    }


def serve(
    settings: Settings,
    names: Sequence[str],
    *,
    host: str,
    port: int,
    workers: int = 1,
    overrides: dict[str, Any] | None = None,
    resume_gc: bool = False,
) -> None:
    """Serve until SIGTERM. `resume_gc`: the caller paused the cyclic collector for a faster
    start; the server turns it back on once its models are loaded."""
    import gc

    import uvicorn

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = _uvicorn_options(host, port)
    # First, on the thread that becomes the event loop: every thread started later inherits it.
    if not set_policy(settings.scheduling):
        logging.getLogger("shipyard.serving").info(
            "scheduling policy %s is not available here: the default applies", settings.scheduling
        )
    if workers <= 1:
        tune_collector()
        uvicorn.run(build_app(settings, names, host, resume_gc=resume_gc), **options)
        return
    if resume_gc:
        gc.enable()  # the supervisor loads no model; each worker starts with it on
    os.environ[CONFIG_ENV] = json.dumps(
        {"overrides": overrides or {}, "names": list(names), "host": host}, default=str
    )
    # Workers write their Prometheus samples to files in a folder of this server's own; the
    # worker that answers a scrape merges them. uvicorn spawns workers: they inherit the env.
    metrics_dir = Path(tempfile.mkdtemp(prefix="shipyard-metrics-"))
    os.environ[MULTIPROC_ENV] = str(prepare_multiprocess(metrics_dir))
    try:
        uvicorn.run(
            "shipyard.serving.server:app_factory", factory=True, workers=workers, **options
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class BackgroundServer:
    """The online server on a thread of this process (for the demo and notebooks)."""

    def __init__(
        self,
        settings: Settings,
        names: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
        self.url = f"http://{host}:{port}"
        self.app = build_app(settings, names, host)
        options = {**_uvicorn_options(host, port), "log_level": "error"}
        self._server = uvicorn.Server(uvicorn.Config(self.app, **options))
        self._thread: Any = None

    def __enter__(self) -> BackgroundServer:
        import threading
        import time

        self._thread = threading.Thread(
            target=self._server.run, name="shipyard-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 60
        while not (self._server.started and self.app.fleet.ready):
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server did not become ready; see the log above")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)
