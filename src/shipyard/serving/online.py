"""The online server: one ASGI app speaking native JSON and the Open Inference Protocol V2.

Per request: limits (body size, in-flight) -> decode -> input schema -> route -> batcher ->
runtime -> output schema -> response with `x-request-id`, `x-model-version`, `x-variant` ->
access log entry (queued). Every error, at any step, becomes the one JSON error body with its
4xx/5xx status; nothing a caller sends can produce a bare 500.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from shipyard import __version__
from shipyard.errors import (
    MethodNotAllowedError,
    ModelFailureError,
    NotFoundError,
    OverloadedError,
    ShipyardError,
    UnavailableError,
    UnsupportedMediaTypeError,
    UserError,
)
from shipyard.monitoring.monitor import Monitor
from shipyard.monitoring.snapshot import snapshot
from shipyard.runtimes.base import Outputs
from shipyard.security.pii import redact_value
from shipyard.serving import guard, native, openapi, ui, v2
from shipyard.serving.accesslog import FIELDS, AccessLog
from shipyard.serving.door import Door, limit
from shipyard.serving.fleet import Fleet, LiveDeployment
from shipyard.serving.http import (
    JSON,
    Receive,
    Scope,
    Send,
    header,
    media_type,
    parse_json,
    query_float,
    read_body,
    respond,
)
from shipyard.serving.variant import ModelFailure, Variant

if TYPE_CHECKING:
    from shipyard.rollout.controller import Controller

log = logging.getLogger("shipyard.serving")
REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
HEX_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")  # keeps the order
_IDS = random.Random()  # noqa: S311 - request ids label requests; they guard nothing
OCTET = b"application/octet-stream"
MONITOR_ROUTES = ("monitor", "drift", "alerts", "feedback")
# Where an access log entry holds what the monitor reads (entries follow FIELDS).
_STATUS, _LATENCY_MS = FIELDS.index("status"), FIELDS.index("latency_ms")
CONTROL_S = 1.0
MANAGE_ROUTES = ("rollout", "rollback", "history")
ROLLOUT_ACTS = ("pause", "resume", "approve", "promote", "abort")


@dataclass(frozen=True)
class ServerLimits:
    max_body_bytes: int = 8 * 1024 * 1024
    body_timeout_s: float = 10.0
    max_inflight: int = 2048


class OnlineApp:
    """The ASGI application. `fleet` holds the served deployments."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        limits: ServerLimits | None = None,
        access_log: AccessLog | None = None,
        monitor: Monitor | None = None,
        control: bool = False,
        door: Door | None = None,
        resume_gc: bool = False,
    ) -> None:
        self.fleet = fleet
        self.resume_gc = resume_gc
        self.door = door or Door(auth_required=False, allowed_hosts=frozenset({"*"}))
        self.monitor = monitor
        self.control = control and monitor is not None
        self._controller: asyncio.Task[None] | None = None
        self.limits = limits or ServerLimits()
        self.access_log = access_log or AccessLog(enabled=False)
        if monitor is not None:
            # The access log's queue is the one hand-off of a finished request: its thread
            # hands them to the monitor in bulk, and a monitor's flush drains it first.
            self.access_log.observe(self._finished)
            monitor.upstream = self.access_log.drain
        self.inflight = 0
        self.draining = False
        self._shadows: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.fleet.start()
                    if self.monitor is not None:
                        self.monitor.start()
                    if self.control:
                        self._controller = asyncio.create_task(self._control())
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                # Everything loaded so far (frameworks, models) lives as long as the server:
                # moving it out of the collector's reach removes multi-millisecond pauses. No
                # collection first: at this point it frees a handful of objects in ~60 ms.
                gc.freeze()
                if self.resume_gc:
                    gc.enable()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.draining = True
                if self._controller is not None:
                    self._controller.cancel()
                await self.fleet.stop()
                if self.monitor is not None:
                    # Drains the last second's observations into sketches and records.
                    await asyncio.to_thread(self.monitor.close)
                self.access_log.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _control(self) -> None:
        """Evaluate this server's deployments' rollouts about once a second."""
        controller = None
        while True:
            await asyncio.sleep(CONTROL_S)
            try:
                if controller is None:
                    # Imported off the event loop, after start: ~20 ms out of the cold start.
                    controller = await asyncio.to_thread(self._new_controller)
                await asyncio.to_thread(controller.tick, list(self.fleet.deployments))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the rollout controller failed a tick")

    def _new_controller(self) -> Controller:
        from shipyard.rollout.controller import Controller

        assert self.monitor is not None
        return Controller(self.fleet.registry, self.monitor)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        given = header(scope, b"x-request-id")
        request_id = (
            given.decode() if given and REQUEST_ID.match(given) else new_request_id(time.time())
        )
        context: dict[str, Any] = {}
        headers = [(b"x-request-id", request_id.encode())]
        status = 200
        self.inflight += 1
        try:
            if self.inflight > self.limits.max_inflight:
                raise UnavailableError(
                    "The server is at its in-flight request limit.", hint="Retry after a moment."
                )
            parts = scope["path"].strip("/").split("/")
            context["principal"], _ = self.door.admit(scope, parts)
            status, body, content_type, extra = await self._route(
                scope, receive, request_id, context, parts
            )
            headers.extend(extra)
        except ShipyardError as exc:
            # An error can quote a field name or value the caller sent: never PII back out.
            status, content_type = exc.status, JSON
            body = orjson.dumps(redact_value(_error_body(scope, exc)))
            if exc.status in (429, 503):
                wait = str(exc.details.get("retry_after", 1)).encode()
                headers.append((b"retry-after", wait))
            elif exc.status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="shipyard"'))
            context["error"] = exc.code
        except Exception:
            log.exception("unexpected error serving %s", scope.get("path", "")[:200])
            status, content_type = 500, JSON
            body = orjson.dumps(
                {
                    "error": {
                        "code": "internal",
                        "message": "Internal error.",
                        "hint": "Report it with the x-request-id.",
                    }
                }
            )
            context["error"] = "internal"
        finally:
            self.inflight -= 1
        if "version" in context:
            headers.append((b"x-model-version", context["version"].encode()))
            headers.append((b"x-variant", context["variant"].encode()))
        await respond(send, status, body, headers, content_type)
        if "shadow" in context:
            # After the response: a shadow never delays the caller and never reaches them.
            task = asyncio.create_task(self._shadow(request_id, context))
            self._shadows.add(task)
            task.add_done_callback(self._shadows.discard)
        client = scope.get("client")
        self.access_log.record(
            request_id,
            scope["method"],
            scope["path"],
            status,
            round((time.perf_counter() - started) * 1000, 3),
            context.get("deployment"),
            context.get("variant"),
            context.get("version"),
            context.get("rows"),
            client[0] if client else None,
            context.get("error"),
            self._handed(context, status) if self.monitor is not None else None,
        )

    @staticmethod
    def _handed(context: dict[str, Any], status: int) -> Any:
        """What the monitor gets of a finished request: its context where `_predict` kept its
        values (or it failed), else only its variant's key, to count it (Monitor.finished)."""
        return context if status >= 400 or "outputs" in context else context.get("key")

    def _finished(self, entries: list[tuple[Any, ...]]) -> None:
        """Access log entries (FIELDS, then what `_handed` chose) to the monitor, on the log's
        thread; the monitor skips a request no variant of its own answered."""
        assert self.monitor is not None
        self.monitor.finished(
            (e[0], e[1], e[_STATUS], e[_LATENCY_MS] / 1000.0, e[-1]) for e in entries
            if e[-1] is not None
        )

    # -- routing ----------------------------------------------------------------------------

    async def _route(
        self,
        scope: Scope,
        receive: Receive,
        request_id: str,
        context: dict[str, Any],
        parts: list[str],
    ) -> tuple[int, bytes, bytes, list[Any]]:
        path: str = scope["path"]
        method: str = scope["method"]
        if parts[0] == "v1" and len(parts) >= 2 and parts[1] == "deployments":
            if len(parts) == 4 and parts[3] == "predict":
                _allow(method, "POST")
                return await self._predict_native(scope, receive, parts[2], request_id, context)
            if len(parts) == 2:
                _allow(method, "GET")
                return self._json([d.describe() for d in self.fleet.deployments.values()])
            if len(parts) == 3:
                _allow(method, "GET")
                return self._json(self.fleet.get(parts[2]).describe())
            if len(parts) == 4 and parts[3] in MONITOR_ROUTES:
                return await self._monitoring(scope, receive, parts[2], parts[3], method, context)
            if len(parts) >= 4 and parts[3] in MANAGE_ROUTES:
                return await self._manage(scope, receive, parts[2], parts[3:], method, context)
        elif parts[0] == "v2":
            return await self._v2(scope, receive, parts[1:], method, request_id, context)
        elif path in ("/livez", "/readyz"):
            _allow(method, "GET")
            return self._health(path == "/readyz")
        elif path == "/openapi.json":
            _allow(method, "GET")
            return self._json(openapi.document(self.fleet))
        elif path == "/docs":
            _allow(method, "GET")
            return 200, openapi.DOCS_HTML, b"text/html; charset=utf-8", []
        elif path == "/metrics":
            _allow(method, "GET")
            # The flush before rendering and the rendering itself can take milliseconds: off
            # the event loop.
            body, kind = await asyncio.to_thread(
                self._monitor().render_metrics,
                (header(scope, b"accept") or b"").decode("latin-1"),
            )
            return 200, body, kind.encode(), []
        elif path in ("/ui", "/ui/"):
            _allow(method, "GET")
            return 200, ui.page(), b"text/html; charset=utf-8", []
        raise NotFoundError(
            f"No route {path[:100]!r}.", hint="See /openapi.json for the routes this server offers."
        )

    def _json(self, data: Any, status: int = 200) -> tuple[int, bytes, bytes, list[Any]]:
        return status, orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), JSON, []

    def _health(self, readiness: bool) -> tuple[int, bytes, bytes, list[Any]]:
        if not readiness:
            return self._json({"live": not self.draining})
        ready = self.fleet.ready and not self.draining
        return self._json({"ready": ready, "failed": self.fleet.failed}, 200 if ready else 503)

    # -- monitoring -------------------------------------------------------------------------

    def _monitor(self) -> Monitor:
        if self.monitor is None:
            raise NotFoundError(
                "Monitoring is off on this server.",
                hint="Start the server without --no-monitoring (SHIPYARD_MONITORING=true).",
            )
        return self.monitor

    async def _monitoring(
        self,
        scope: Scope,
        receive: Receive,
        name: str,
        route: str,
        method: str,
        context: dict[str, Any],
    ) -> tuple[int, bytes, bytes, list[Any]]:
        live = self.fleet.get(name)
        monitor = self._monitor()
        if route == "feedback":
            _allow(method, "POST")
            context["deployment"] = name
            if media_type(scope) != JSON:
                raise UnsupportedMediaTypeError(
                    "The feedback route takes application/json.",
                    hint="Send the header Content-Type: application/json.",
                )
            body = await read_body(
                scope, receive, limit=self.limits.max_body_bytes,
                timeout_s=self.limits.body_timeout_s,
            )
            answer = await asyncio.to_thread(monitor.feedback, name, parse_json(body))
            return self._json(answer, 201)
        _allow(method, "GET")
        if route == "monitor":
            return self._json(snapshot(monitor, live.describe(), time.time()))
        if route == "alerts":
            return self._json(monitor.alerts_of(name))
        window = query_float(scope, "window", default=None, low=1.0, high=30 * 86400.0)
        return self._json(await asyncio.to_thread(monitor.drift_of, name, window))

    # -- management: rollouts and rollback (always authenticated, audited as the caller) ----

    async def _manage(
        self,
        scope: Scope,
        receive: Receive,
        name: str,
        rest: list[str],
        method: str,
        context: dict[str, Any],
    ) -> tuple[int, bytes, bytes, list[Any]]:
        from shipyard.rollout import manage
        from shipyard.rollout.plan import RolloutPlan

        registry = self.fleet.registry
        principal = context["principal"]
        # The credential, not only its free-text name: two keys may share a name, and a
        # JWT's subject may equal a key's.
        actor = f"{principal.name} ({principal.kind.value}:{principal.key_id or principal.name})"
        body: dict[str, Any] = {}
        if method == "POST":
            raw = await read_body(scope, receive, limit=1024 * 1024,
                                  timeout_s=self.limits.body_timeout_s)
            if raw:
                if media_type(scope) != JSON:
                    raise UnsupportedMediaTypeError(
                        "Management routes take application/json.",
                        hint="Send the header Content-Type: application/json.",
                    )
                parsed = parse_json(raw)
                if not isinstance(parsed, dict):
                    raise UserError("Send a JSON object.", hint='e.g. {"reason": "..."}')
                body = parsed
        reason = str(body.get("reason", ""))[:2000]

        def run() -> Any:
            if rest == ["history"]:
                _allow(method, "GET")
                return [r.to_dict() for r in registry.revisions(name)]
            if rest == ["rollback"]:
                _allow(method, "POST")
                to = body.get("to")
                if to is not None and (isinstance(to, bool) or not isinstance(to, int)):
                    raise UserError("`to` must be a revision number.", hint='{"to": 3}')
                return manage.rollback(registry, name, to=to, actor=actor, reason=reason,
                                       force=body.get("force") is True).to_dict()
            if rest == ["rollout"] and method == "GET":
                return manage.status(registry, name)
            if rest == ["rollout"]:
                _allow(method, "POST")
                plan = RolloutPlan.parse(
                    body.get("plan") or {k: v for k, v in body.items() if k != "reason"}
                )
                return manage.start(registry, name, plan, actor=actor, reason=reason).to_dict()
            if len(rest) == 2 and rest[0] == "rollout" and rest[1] in ROLLOUT_ACTS:
                _allow(method, "POST")
                act = getattr(manage, rest[1])
                return act(registry, name, actor=actor, reason=reason).to_dict()
            if len(rest) == 2 and rest == ["rollout", "explain"]:
                _allow(method, "GET")
                return {"explanation": manage.why(registry, name)}
            raise NotFoundError("No such management route.",
                                hint="See docs/rollouts.md for the rollout API.")

        return self._json(await asyncio.to_thread(run))

    # -- native -----------------------------------------------------------------------------

    async def _predict_native(
        self,
        scope: Scope,
        receive: Receive,
        name: str,
        request_id: str,
        context: dict[str, Any],
    ) -> tuple[int, bytes, bytes, list[Any]]:
        live = self.fleet.get(name)
        context["deployment"] = name
        if media_type(scope) != JSON:
            raise UnsupportedMediaTypeError(
                "The predict route takes application/json.",
                hint="Send the header Content-Type: application/json.",
            )
        body = await read_body(
            scope, receive, limit=self.limits.max_body_bytes, timeout_s=self.limits.body_timeout_s
        )
        inputs = native.decode(parse_json(body), body)
        # Again after the body: a revision fetched before it may have been replaced, and the
        # replaced one's batchers closed, while the body was arriving.
        live = self.fleet.get(name)
        outputs = await self._serve(
            live, inputs, sticky_key(live, scope, inputs, request_id), context
        )
        return (
            200,
            native.encode(
                outputs,
                model_version=context["version"],
                variant=context["variant"],
                request_id=request_id,
            ),
            JSON,
            [],
        )

    async def _serve(
        self,
        live: LiveDeployment,
        data: Any,
        key: str,
        context: dict[str, Any],
        version: str | None = None,
    ) -> Outputs:
        """The shared core path: limit, route, validate, predict, fall back."""
        if live.inflight >= live.spec.serving.max_inflight:
            live.counters.rejected += 1
            raise OverloadedError(
                f"Deployment {live.name!r} has "
                f"{live.spec.serving.max_inflight} requests in flight.",
                hint="Retry after a moment, or raise serving.max_inflight.",
            )
        serving = live.spec.serving
        if serving.rate_limit_rps is not None:
            limit(self.door.limiter, f"deployment:{live.name}", serving.rate_limit_rps,
                  serving.rate_limit_burst or 2 * serving.rate_limit_rps)
        variant = live.variants[live.router.choose(key)]
        if version is not None and variant.version != version:
            matching = [v for v in live.variants.values() if v.version == version]
            if not matching:
                raise NotFoundError(
                    f"Deployment {live.name!r} serves no version {version[:64]!r}.",
                    hint="GET /v2/models/NAME lists the versions served.",
                )
            variant = matching[0]
        live.inflight += 1
        live.counters.requests += 1
        try:
            context["key"] = (live.name, variant.name, variant.version)
            batch = variant.prepare(data)
            if variant.guardrails is not None:
                guard.check_inputs(variant.guardrails, variant.model.schema, batch)
            context["rows"] = len(batch)
            context["variant"], context["version"] = variant.name, variant.version
            try:
                outputs = await variant.predict(batch)
            except (ModelFailure, TimeoutError) as exc:
                outputs = await self._fallback(live, variant, data, exc, context)
            if variant.guardrails is not None:
                outputs = guard.check_outputs(variant.guardrails, variant.model.schema, outputs)
            if "timeout" in context or variant.keep.draw():
                # For the monitor's flush (a sample under load, every one while records are
                # on); a request not kept frees its values here and now, where their memory
                # is reused hot: freed a second later on another thread, they cost the event
                # loop more than the monitor's own work does.
                context["batch"], context["outputs"] = batch, outputs
            if live.router.shadows and not context.get("fallback"):
                context["shadow"] = (live, data, variant, outputs)
            return outputs
        except ShipyardError:
            live.counters.errors += 1
            raise
        finally:
            live.inflight -= 1

    async def _fallback(
        self,
        live: LiveDeployment,
        failed: Variant,
        data: Any,
        exc: BaseException,
        context: dict[str, Any],
    ) -> Outputs:
        timed_out = isinstance(exc, TimeoutError)
        context["timeout"] = timed_out
        if timed_out:
            live.counters.timeouts += 1
        else:
            live.counters.model_failures += 1
            # The exception's text can quote the caller's input (PII): log its type only.
            cause = type(exc.__cause__).__name__ if exc.__cause__ else type(exc).__name__
            log.warning("model %s:%s failed: %s (deployment %s)", failed.model.name,
                        failed.version, cause, live.name)
        fallback = live.spec.serving.fallback
        rows = context.get("rows", 1)
        if fallback.kind == "static" and fallback.value:
            live.counters.fallbacks += 1
            context["variant"] = "fallback"
            context["fallback"], context["answered_by"] = True, ("fallback", failed.version)
            return {k: np.asarray([v] * rows) for k, v in fallback.value.items()}
        if fallback.kind == "variant" and fallback.variant and fallback.variant != failed.name:
            other = live.variants[fallback.variant]
            live.counters.fallbacks += 1
            context["variant"], context["version"] = other.name, other.version
            context["fallback"], context["answered_by"] = True, (other.name, other.version)
            try:
                return await other.predict(other.prepare(data))
            except (ModelFailure, TimeoutError):
                pass
        what = "timed out" if timed_out else "failed"
        raise ModelFailureError(
            f"The model {failed.model.name}:{failed.version} {what}.",
            hint="Retry later; the deployment's owner can configure a fallback.",
        )

    async def _shadow(self, request_id: str, context: dict[str, Any]) -> None:
        """Ask each shadow variant the same question; the monitor compares the answers."""
        live, data, primary, answered = context["shadow"]
        live.inflight += 1  # a retiring revision waits for its shadows too
        try:
            for name in live.router.shadows:
                shadow = live.variants[name]
                started = time.perf_counter()
                try:
                    batch = shadow.prepare(data)
                    outputs = await shadow.predict(batch)
                except (ShipyardError, ModelFailure, TimeoutError) as exc:
                    if self.monitor is not None:
                        self.monitor.shadow_failed(live.name, shadow.name, shadow.version, exc)
                    continue
                if self.monitor is not None:
                    self.monitor.shadow_done(
                        live.name, (primary.name, primary.version), (shadow.name, shadow.version),
                        request_id, answered, outputs, batch,
                        time.perf_counter() - started,
                    )
        except Exception:
            log.exception("shadow prediction failed for deployment %s", live.name)
        finally:
            live.inflight -= 1

    # -- Open Inference Protocol V2 ---------------------------------------------------------

    async def _v2(
        self,
        scope: Scope,
        receive: Receive,
        parts: list[str],
        method: str,
        request_id: str,
        context: dict[str, Any],
    ) -> tuple[int, bytes, bytes, list[Any]]:
        if parts == [""] or not parts:
            _allow(method, "GET")
            return self._json(v2.server_metadata(__version__))
        if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            _allow(method, "GET")
            return self._health(parts[1] == "ready")
        if parts[0] != "models" or len(parts) < 2:
            raise NotFoundError(
                f"No V2 route /v2/{'/'.join(parts)[:80]}.",
                hint="See the Open Inference Protocol routes in /openapi.json.",
            )
        live = self.fleet.get(parts[1])
        rest = parts[2:]
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version = rest[1]
            rest = rest[2:]
        if not rest:
            _allow(method, "GET")
            return self._json(self._model_metadata(live, version))
        if rest == ["ready"]:
            _allow(method, "GET")
            self._model_metadata(live, version)
            return self._json({"name": live.name, "ready": True})
        if rest == ["infer"]:
            _allow(method, "POST")
            return await self._infer(scope, receive, live, version, request_id, context)
        raise NotFoundError(
            f"No V2 route /v2/{'/'.join(parts)[:80]}.",
            hint="Use /v2/models/NAME[/versions/V]/infer.",
        )

    def _model_metadata(self, live: LiveDeployment, version: str | None) -> dict[str, Any]:
        versions = sorted({v.version for v in live.variants.values()})
        if version is not None and version not in versions:
            raise NotFoundError(
                f"Deployment {live.name!r} serves no version {version[:64]!r}.",
                hint=f"Served versions: {', '.join(versions)}.",
            )
        champion = live.champion
        return v2.model_metadata(
            live.name, versions, champion.model.manifest.runtime.kind, champion.model.schema
        )

    async def _infer(
        self,
        scope: Scope,
        receive: Receive,
        live: LiveDeployment,
        version: str | None,
        request_id: str,
        context: dict[str, Any],
    ) -> tuple[int, bytes, bytes, list[Any]]:
        context["deployment"] = live.name
        kind = media_type(scope)
        length = header(scope, b"inference-header-content-length")
        if kind not in (JSON, OCTET, b"") or (kind == OCTET and length is None):
            raise UnsupportedMediaTypeError(
                "The infer route takes application/json, or application/octet-stream with "
                "an Inference-Header-Content-Length header.",
                hint="Send Content-Type: application/json.",
            )
        body = await read_body(
            scope, receive, limit=self.limits.max_body_bytes, timeout_s=self.limits.body_timeout_s
        )
        header_length = None
        if length is not None:
            try:
                header_length = int(length)
            except ValueError:
                raise UnsupportedMediaTypeError(
                    "Inference-Header-Content-Length is not a number.",
                    hint="Send the JSON header's length in bytes.",
                ) from None
        request = v2.decode_request(body, header_length)
        live = self.fleet.get(live.name)  # the current revision, as in _predict_native
        schema = live.champion.model.schema
        data = v2.to_columns(request, schema)
        outputs = await self._serve(
            live, data, sticky_key(live, scope, data, request.id or request_id), context, version
        )
        payload, extra = v2.encode_response(
            model_name=live.name,
            model_version=context["version"],
            request_id=request.id or request_id,
            outputs=outputs,
            request=request,
        )
        content_type = extra.pop("Content-Type", extra.pop("content-type", "application/json"))
        return (
            200,
            payload,
            content_type.encode(),
            [(k.lower().encode(), v.encode()) for k, v in extra.items()],
        )


def new_request_id(now: float) -> str:
    """24 letters: the millisecond `now` falls in, then 52 random bits, hex digits as a-p.

    Time-ordered, so a server's prediction records append at the end of their unique index:
    random ids scattered the inserts across it (8 us a record in SQLite, against 3). Letters
    only, so the access log's PII check passes over an id of ours at no cost. Not from
    os.urandom: that syscall drops the GIL, and under load getting it back from the model
    thread costs more than the whole request (an id is a label, not a secret).
    """
    return f"{int(now * 1000):011x}{_IDS.getrandbits(52):013x}".translate(HEX_LETTERS)


def _error_body(scope: Scope, exc: ShipyardError) -> dict[str, Any]:
    """The one error shape, except on V2 routes, whose protocol fixes `error` as a string."""
    body = exc.to_dict()
    if scope["path"].startswith("/v2"):
        inner = body["error"]
        return {"error": str(exc), **{k: v for k, v in inner.items() if k != "message"}}
    return body


def sticky_key(live: LiveDeployment, scope: Scope, data: Any, default: str) -> str:
    """The request's sticky key, from where the deployment's routing config says."""
    source = live.spec.routing.sticky_key
    found: Any = None
    if source is None:
        raw = header(scope, b"x-shipyard-key")
        found = raw.decode("latin-1") if raw else None
    elif source.startswith("header:"):
        raw = header(scope, source[len("header:"):].lower().encode())
        found = raw.decode("latin-1") if raw else None
    else:
        name = source[len("field:"):]
        if isinstance(data, dict):
            column = data.get(name)
            found = column[0] if isinstance(column, list) and column else column
        elif isinstance(data, list) and data and isinstance(data[0], dict):
            found = data[0].get(name)
    if found is None or found == "":
        if live.spec.routing.require_key:
            where = source or "header:x-shipyard-key"
            raise UserError(
                f"Deployment {live.name!r} assigns requests by a sticky key ({where}), and "
                "this request has none.",
                hint=f"Send it as {where.replace(':', ' ')}.",
                field=where,
            )
        return default
    return str(found)[:256]


def _allow(method: str, expected: str) -> None:
    if method != expected and not (expected == "GET" and method == "HEAD"):
        raise MethodNotAllowedError(
            f"This route takes {expected}, not {method[:10]}.", hint=f"Send a {expected} request."
        )
