"""The one settings object, built at the edge and passed down.

Weights, rising: defaults < config file (`$SHIPYARD_HOME/config.yaml`) < `SHIPYARD_*`
environment variables < explicit overrides (CLI flags). Nothing here runs at import time.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipyard.cpu import Policy
from shipyard.errors import ConfigError


def _default_home() -> Path:
    return Path("~/.shipyard").expanduser()


class Settings(BaseModel):
    """Every setting shipyard reads. Each field is documented in docs/settings.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(
        default_factory=_default_home,
        description="Folder for the default SQLite registry, artifact store and cache.",
    )
    database_url: str | None = Field(
        default=None,
        repr=False,  # may hold a password
        description="SQLAlchemy URL of the registry database; default SQLite under `home`.",
    )
    store_url: str | None = Field(
        default=None,
        repr=False,  # may hold credentials
        description="Artifact store: a local folder or an fsspec URL; default `home/store`.",
    )
    actor: str | None = Field(
        default=None,
        description="Who is recorded in the audit log; default the operating-system user.",
    )
    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="ed25519 public keys (PEM); when set, every load requires a valid signature.",
    )
    db_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds to wait for a locked or slow registry database before failing.",
    )

    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="Largest request body the server reads; larger ones answer 413.",
    )
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client may take to send a request body before a 408.",
    )
    max_inflight: int = Field(
        default=2048,
        gt=0,
        description="Requests in progress per server process before answering 503.",
    )
    poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a server checks the registry for new deployment revisions.",
    )
    scheduling: Policy = Field(
        default="batch",
        description="Linux scheduling policy of the server's threads: batch (no wakeup "
        "preemption between the event loop and the model threads; docs/serving.md) or normal.",
    )
    access_log: bool = Field(
        default=True,
        description="Write one JSON line per request (request id, deployment, version, "
        "status, latency) to stderr.",
    )

    monitoring: bool = Field(
        default=True,
        description="Measure service and model health in the server: Prometheus metrics, "
        "sketches, drift, prediction records, alerts, the /ui dashboard.",
    )

    controller: bool = Field(
        default=True,
        description="Run the rollout controller in the server: evaluate rollouts of the "
        "deployments it serves and move their traffic (needs monitoring).",
    )

    auth: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Authentication of HTTP callers: auto turns it on whenever the server "
        "listens beyond loopback; off there needs `shipyard serve --insecure-no-auth`.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values the server answers to (DNS-rebinding guard); default: "
        "loopback names on a loopback listener, any otherwise.",
    )
    jwt_issuer: str | None = Field(default=None, description="Accepted JWT issuer (iss).")
    jwt_audience: str | None = Field(default=None, description="Accepted JWT audience (aud).")
    jwt_jwks_url: str | None = Field(
        default=None, repr=False, description="JWKS URL (https, or http on loopback)."
    )
    jwt_jwks_file: Path | None = Field(default=None, description="JWKS file instead of a URL.")
    rate_limit_rps: float | None = Field(
        default=None, gt=0, description="Requests per second per API key (token bucket)."
    )
    rate_limit_burst: float | None = Field(
        default=None, gt=0, description="Bucket size per API key (default: 2 s of the rate)."
    )
    redis_url: str | None = Field(
        default=None,
        repr=False,
        description="Redis that replicas share rate-limit buckets through (default: per "
        "process).",
    )

    audit_database: Path | None = Field(
        default=None,
        description="An OSV vulnerability database (PyPI.zip or a folder of OSV JSON) that "
        "`shipyard check` and `shipyard audit BUNDLE` read; works offline.",
    )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or str(self.home / "store")

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def resolved_actor(self) -> str:
        if self.actor:
            return self.actor
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return user

    @property
    def origin(self) -> str:
        """Where a write comes from, for the audit log."""
        return f"{socket.gethostname()} pid={os.getpid()}"

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        secrets: Callable[[dict[str, Any], Mapping[str, str]], dict[str, Any]] | None = None,
    ) -> Settings:
        """Build settings from the config file, the environment and explicit overrides;
        `secrets` (the edge passes `security.secrets.plain_settings`) resolves references."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        home = Path(env.get("SHIPYARD_HOME", "~/.shipyard")).expanduser()
        if overrides and overrides.get("home"):
            home = Path(str(overrides["home"])).expanduser()
        config_file = home / "config.yaml"
        if config_file.is_file():
            try:
                loaded = yaml.safe_load(config_file.read_text()) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(
                    f"Could not parse {config_file}: {exc}.", hint="Fix the YAML syntax."
                ) from exc
            if not isinstance(loaded, dict):
                raise ConfigError(
                    f"Got {type(loaded).__name__} in {config_file}. Expected a mapping.",
                    hint="Write settings as `key: value` lines.",
                )
            values.update(loaded)
        for name in cls.model_fields:
            key = f"SHIPYARD_{name.upper()}"
            if key in env:
                raw: Any = env[key]
                if name == "trusted_keys":
                    raw = [p for p in raw.split(os.pathsep) if p]
                elif name == "allowed_hosts":
                    raw = [h.strip() for h in raw.split(",") if h.strip()]
                values[name] = raw
        values["home"] = home
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = value
        if secrets is not None:
            # ${secret:NAME} references are resolved here, at the edge, from the environment
            # or secret files: the config file itself never holds the value.
            values = secrets(values, env)
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"Setting {field!r}: {first['msg']}.",
                hint="See docs/settings.md for every setting and its allowed values.",
            ) from exc

