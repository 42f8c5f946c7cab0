"""Fixtures shared by every test package: settings in a temp home, PostgreSQL, tiny bundles."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shipyard.bundle.files import entry_for
from shipyard.bundle.manifest import MANIFEST_NAME, Manifest, Owner, RuntimeSpec
from shipyard.settings import Settings

pytest_plugins = ["model_fixtures"]

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

MakeBundle = Callable[..., Path]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a fresh home under tmp_path, ignoring the real environment."""
    return Settings.load(overrides={"home": tmp_path / "home"}, environ={})


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the test PostgreSQL server; skips locally (fails in CI) when unreachable."""
    url = os.environ.get("SHIPYARD_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    shown = make_url(url).render_as_string(hide_password=True)
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver or network failure means "no server here"
        message = (
            f"PostgreSQL at {shown} is unreachable ({type(exc).__name__}). Start it, or set "
            "SHIPYARD_TEST_POSTGRES_URL to a reachable server."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)  # deliberate: a clear skip off CI, a failure under CI=true
    finally:
        engine.dispose()
    return url


@contextmanager
def _schema(postgres_url: str) -> Iterator[str]:
    """A brand-new schema, dropped on exit; yields a URL whose connections use it."""
    schema = f"shipyard_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL on a schema of this test's own: for tests that race migrations or drop triggers."""
    with _schema(postgres_url) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_session_url(postgres_url: str) -> Iterator[str]:
    """A URL on one schema shared by the whole test session; packages empty it per test."""
    with _schema(postgres_url) as url:
        yield url


@pytest.fixture
def make_bundle(tmp_path: Path) -> MakeBundle:
    """Write a small valid bundle folder; returns its path.

    `make_bundle(name="iris", version="1.0", content=b"...", files={"code/x.py": b"..."})`:
    `content` is the artifact `model/weights.bin`; `files` adds more declared artifacts.
    """
    counter = iter(range(1_000_000))

    def make(
        name: str = "iris",
        version: str = "1.0",
        content: bytes = b"weights v1",
        files: dict[str, bytes] | None = None,
        description: str = "",
    ) -> Path:
        root = tmp_path / "bundles" / f"{name}-{version}-{next(counter)}"
        everything = {"model/weights.bin": content, **(files or {})}
        for relative, data in everything.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        manifest = Manifest(
            name=name,
            version=version,
            owner=Owner(name="Ana Lima", contact="ana@example.com"),
            description=description,
            runtime=RuntimeSpec(kind="python"),
            artifacts=[entry_for(root, relative) for relative in sorted(everything)],
        )
        (root / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
        return root

    return make
