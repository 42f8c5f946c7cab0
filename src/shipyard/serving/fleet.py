"""The deployments a server serves, following the registry without a restart.

At start every deployment's current revision is loaded and warmed. A background task polls
the registry's change token; when a deployment gets a new revision, its models are loaded and
warmed in a worker thread while the old revision keeps answering, then the new one replaces
it in a single assignment (atomic for the event loop), and the old one is closed only after
its last in-flight request has finished: not one request fails during the switch.

The models of the revision a deployment served before stay loaded ("warm"): a rollback to
it, or a redeploy of a version it had, reuses them with no download, no load and no warm-up,
so traffic is back on the old version within one registry poll.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipyard.errors import NotFoundError, ShipyardError
from shipyard.monitoring.monitor import Monitor, Served
from shipyard.registry.registry import Registry
from shipyard.routing import DeploymentSpec, Router
from shipyard.runtimes.model import Model, load_bundle
from shipyard.serving import guard
from shipyard.serving.variant import Variant
from shipyard.settings import Settings

log = logging.getLogger("shipyard.serving")


@dataclass
class Counters:
    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    model_failures: int = 0
    fallbacks: int = 0
    rejected: int = 0


@dataclass
class LiveDeployment:
    name: str
    revision: int
    spec: DeploymentSpec
    variants: dict[str, Variant]
    router: Router
    inflight: int = 0
    counters: Counters = field(default_factory=Counters)

    @property
    def champion(self) -> Variant:
        return self.variants[self.router.live[0].name]

    def close(self) -> None:
        for variant in self.variants.values():
            variant.close()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "revision": self.revision,
            "variants": [
                {
                    "name": v.name,
                    "role": v.role,
                    "model": f"{v.model.name}:{v.version}",
                    "weight": next(s.weight for s in self.spec.variants if s.name == v.name),
                    "batches": v.batcher.stats.batches,
                    "rows": v.batcher.stats.rows,
                    "queue_depth": v.batcher.queue_depth,
                }
                for v in self.variants.values()
            ],
            "serving": self.spec.serving.model_dump(mode="json"),
            "counters": vars(self.counters),
            "inflight": self.inflight,
        }


class Fleet:
    """Loads, warms, swaps and closes deployments; `deployments` is read on every request."""

    def __init__(
        self,
        settings: Settings,
        names: Sequence[str] = (),
        *,
        poll_s: float = 1.0,
        monitor: Monitor | None = None,
    ) -> None:
        self.settings = settings
        self.monitor = monitor
        self.names = list(names)
        self.poll_s = poll_s
        self.deployments: dict[str, LiveDeployment] = {}
        self.failed: dict[str, str] = {}
        self._token: int | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._registry: Registry | None = None
        # Per deployment: the loaded models of the revision it served before, by pinned ref.
        self._warm: dict[str, dict[str, Model]] = {}
        self._warm_lock = threading.Lock()  # loads and retirements run on worker threads

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.open(self.settings)
        return self._registry

    @property
    def ready(self) -> bool:
        wanted = self.names or list(self.deployments) or list(self.failed)
        return bool(wanted) and all(n in self.deployments for n in wanted) and not self.failed

    def get(self, name: str) -> LiveDeployment:
        live = self.deployments.get(name)
        if live is None:
            raise NotFoundError(
                f"No deployment {name[:64]!r} is served here.",
                hint="GET /v1/deployments lists the served deployments.",
            )
        return live

    async def start(self) -> None:
        await self.refresh()
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        for task in list(self._closing):
            await task
        for live in self.deployments.values():
            await asyncio.to_thread(live.close)
        self.deployments = {}
        await asyncio.to_thread(self.close_warm)
        if self._registry is not None:
            self._registry.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                token = await asyncio.to_thread(self.registry.change_token)
                if token != self._token:
                    await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not refresh deployments from the registry")

    async def refresh(self) -> None:
        """Load every deployment whose current revision differs from the one served."""
        self._token = await asyncio.to_thread(self.registry.change_token)
        names = self.names or [d.name for d in await asyncio.to_thread(self.registry.deployments)]
        for name in names:
            try:
                revision = await asyncio.to_thread(self.registry.current_revision, name)
            except ShipyardError as exc:
                self.failed[name] = exc.message
                continue
            live = self.deployments.get(name)
            if live is not None and live.revision == revision.number:
                continue
            try:
                new = await asyncio.to_thread(self._load, name, revision.number, revision.spec)
            except Exception as exc:  # noqa: BLE001 - a bad revision must not stop the others
                self.failed[name] = str(exc)[:500]
                log.error(
                    "deployment %s revision %s failed to load: %s", name, revision.number, exc
                )
                continue
            self.failed.pop(name, None)
            # One assignment of a new dict: a request sees the old or the new, never a mix.
            self.deployments = {**self.deployments, name: new}
            if self.monitor is not None:
                self.monitor.serving(name, revision.number)
            log.info("serving %s revision %s", name, revision.number)
            if live is not None:
                task = asyncio.create_task(self._retire(live))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def _load(self, name: str, number: int, raw_spec: dict[str, Any]) -> LiveDeployment:
        spec = DeploymentSpec.parse(raw_spec)
        variants: dict[str, Variant] = {}
        warm = self._warm.get(name, {})
        try:
            for variant_spec in spec.variants:
                key = _model_key(variant_spec.model, variant_spec.version_digest)
                with self._warm_lock:
                    model = warm.pop(key, None)
                reused = model is not None
                if model is None:
                    folder = self.registry.fetch(variant_spec.model)
                    model = load_bundle(folder, trusted_keys=self.settings.trusted_keys)
                variant = Variant(name, variant_spec.name, variant_spec.role, model, spec.serving)
                variant.guardrails = guard.build(
                    spec.guardrails, model.schema, self._violations(name, variant)
                )
                variants[variant_spec.name] = variant
                if not reused:
                    variant.warm()
        except BaseException:
            for variant in variants.values():
                variant.close()
            raise
        live = LiveDeployment(name, number, spec, variants, Router(spec, salt=name))
        if self.monitor is not None:
            self.monitor.attach(
                name,
                {
                    v.name: Served(v.role, v.model, v.batcher.stats,
                                   lambda b=v.batcher: b.queue_depth,  # type: ignore[misc]
                                   v.keep)
                    for v in variants.values()
                },
                spec.monitoring,
                inflight=lambda: live.inflight,
            )
        return live

    def _violations(self, name: str, variant: Variant) -> Callable[[str], None]:
        """Count a guardrail violation in monitoring, with the model version."""
        def count(kind: str) -> None:
            if self.monitor is not None:
                self.monitor.violation((name, variant.name, variant.version), kind)
        return count

    async def _retire(self, live: LiveDeployment) -> None:
        """Stop a replaced revision once its in-flight requests are done (at most 60 s); keep
        its models warm for a rollback, closing those of the revision before it."""
        for _ in range(6000):
            if live.inflight == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(self._keep_warm, live)

    def _keep_warm(self, live: LiveDeployment) -> None:
        serving = self.deployments.get(live.name)
        in_use = {id(v.model) for v in serving.variants.values()} if serving else set()
        kept: dict[str, Model] = {}
        for variant in live.variants.values():
            model = variant.release()
            spec = next(s for s in live.spec.variants if s.name == variant.name)
            if id(model) not in in_use:
                kept[_model_key(spec.model, spec.version_digest)] = model
        with self._warm_lock:
            stale = self._warm.pop(live.name, {})
            self._warm[live.name] = kept
        for model in stale.values():
            if id(model) not in in_use:
                model.close()

    def close_warm(self) -> None:
        with self._warm_lock:
            warm, self._warm = self._warm, {}
        for models in warm.values():
            for model in models.values():
                model.close()


def _model_key(ref: str, digest: str | None) -> str:
    return f"{ref}@{digest or ''}"
