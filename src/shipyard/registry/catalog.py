"""Models, versions and aliases: the SQL that reads and writes them.

Functions here take an open connection and never commit; `Registry` decides the transaction
(and so the lock) each one runs in. Names are checked by `refs` before they arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select

from shipyard.errors import NotFoundError
from shipyard.registry.records import AliasEvent, FileRecord, ModelSummary, VersionRecord
from shipyard.registry.refs import LIST_HINT, Ref
from shipyard.registry.tables import alias_events, aliases, files, models, versions

VERSION_COLUMNS = (
    models.c.name,
    versions.c.id,
    versions.c.version,
    versions.c.digest,
    versions.c.manifest,
    versions.c.signature,
    versions.c.size,
    versions.c.created_at,
    versions.c.created_by,
)


def model_id(conn: Connection, name: str) -> int | None:
    found = conn.execute(select(models.c.id).where(models.c.name == name)).scalar()
    return int(found) if found is not None else None


def require_model(conn: Connection, name: str) -> int:
    found = model_id(conn, name)
    if found is None:
        raise NotFoundError(
            f"Got {name!r} for a model, but the registry has no model by that name.",
            hint=f"Push it first with `shipyard push BUNDLE`. {LIST_HINT}",
            model=name,
        )
    return found


def ensure_model(conn: Connection, name: str, *, actor: str, at: datetime) -> int:
    """The model's id, creating the row on its first push (inside the write lock)."""
    found = model_id(conn, name)
    if found is not None:
        return found
    insert = models.insert().values(name=name, created_at=at, created_by=actor)
    return int(conn.execute(insert.returning(models.c.id)).scalar_one())


def find_version(conn: Connection, name: str, version: str) -> VersionRecord | None:
    query = _version_query().where(models.c.name == name, versions.c.version == version)
    records = _records(conn, conn.execute(query).all())
    return records[0] if records else None


def resolve(conn: Connection, ref: Ref) -> VersionRecord:
    """The version a parsed reference points at, or `NotFoundError` saying what is missing."""
    require_model(conn, ref.name)
    query = _version_query().where(models.c.name == ref.name)
    if ref.version is not None:
        query = query.where(versions.c.version == ref.version)
    elif ref.alias is not None:
        query = query.join(aliases, aliases.c.version_id == versions.c.id).where(
            aliases.c.alias == ref.alias
        )
    else:
        # "Latest" means most recently registered: version strings have no total order.
        query = query.order_by(versions.c.id.desc()).limit(1)
    records = _records(conn, conn.execute(query).all())
    if records:
        return records[0]
    what = f"version {ref.version!r}" if ref.version else f"alias {ref.alias!r}"
    if ref.version is None and ref.alias is None:
        what = "any version"
    raise NotFoundError(
        f"Got {str(ref)!r}, but model {ref.name!r} has no {what}.",
        hint=f"Run `shipyard list {ref.name}` to see its versions and aliases.",
        ref=str(ref),
    )


def insert_version(
    conn: Connection,
    *,
    model: int,
    version: str,
    digest: str,
    manifest_yaml: str,
    entries: Sequence[FileRecord],
    signature: bytes | None,
    actor: str,
    at: datetime,
) -> int:
    version_id = conn.execute(
        versions.insert()
        .values(
            model_id=model,
            version=version,
            digest=digest,
            manifest=manifest_yaml,
            signature=signature,
            size=sum(entry.size for entry in entries),
            created_at=at,
            created_by=actor,
        )
        .returning(versions.c.id)
    ).scalar_one()
    if entries:
        conn.execute(
            files.insert(),
            [
                {"version_id": version_id, "path": e.path, "sha256": e.sha256, "size": e.size}
                for e in entries
            ],
        )
    return version_id


def list_versions(conn: Connection, name: str) -> list[VersionRecord]:
    require_model(conn, name)
    query = _version_query().where(models.c.name == name).order_by(versions.c.id)
    return _records(conn, conn.execute(query).all())


def list_models(conn: Connection) -> list[ModelSummary]:
    counts = (
        select(
            versions.c.model_id,
            func.count().label("n"),
            func.max(versions.c.id).label("last_id"),
            func.max(versions.c.created_at).label("updated_at"),
        )
        .group_by(versions.c.model_id)
        .subquery()
    )
    latest = versions.alias("latest")
    query = (
        select(models, counts.c.n, counts.c.updated_at, latest.c.version.label("latest"))
        .outerjoin(counts, counts.c.model_id == models.c.id)
        .outerjoin(latest, latest.c.id == counts.c.last_id)
        .order_by(models.c.name)
    )
    alias_rows = conn.execute(
        select(aliases.c.model_id, aliases.c.alias, versions.c.version).join(
            versions, versions.c.id == aliases.c.version_id
        )
    ).all()
    by_model: dict[int, dict[str, str]] = {}
    for row in alias_rows:
        by_model.setdefault(row.model_id, {})[row.alias] = row.version
    return [
        ModelSummary(
            name=row.name,
            versions=int(row.n or 0),
            latest=row.latest,
            aliases=dict(sorted(by_model.get(row.id, {}).items())),
            created_at=row.created_at,
            updated_at=row.updated_at or row.created_at,
        )
        for row in conn.execute(query)
    ]


def alias_map(conn: Connection, name: str) -> dict[str, str]:
    model = require_model(conn, name)
    rows = conn.execute(
        select(aliases.c.alias, versions.c.version)
        .join(versions, versions.c.id == aliases.c.version_id)
        .where(aliases.c.model_id == model)
        .order_by(aliases.c.alias)
    ).all()
    return {row.alias: row.version for row in rows}


def move_alias(
    conn: Connection, record: VersionRecord, alias: str, *, actor: str, at: datetime
) -> AliasEvent | None:
    """Point `alias` at `record`; None when it already points there (nothing to record)."""
    model = require_model(conn, record.name)
    current = conn.execute(
        select(aliases.c.version_id, versions.c.version)
        .join(versions, versions.c.id == aliases.c.version_id)
        .where(aliases.c.model_id == model, aliases.c.alias == alias)
    ).first()
    target_id = conn.execute(
        select(versions.c.id).where(
            versions.c.model_id == model, versions.c.version == record.version
        )
    ).scalar_one()
    if current is not None and current.version_id == target_id:
        return None
    values = {"version_id": target_id, "updated_at": at, "updated_by": actor}
    if current is None:
        conn.execute(aliases.insert().values(model_id=model, alias=alias, **values))
    else:
        conn.execute(
            aliases.update()
            .where(aliases.c.model_id == model, aliases.c.alias == alias)
            .values(**values)
        )
    event = AliasEvent(
        name=record.name,
        alias=alias,
        from_version=current.version if current is not None else None,
        to_version=record.version,
        actor=actor,
        at=at,
    )
    conn.execute(
        alias_events.insert().values(
            model_id=model,
            alias=alias,
            from_version=event.from_version,
            to_version=event.to_version,
            actor=actor,
            at=at,
        )
    )
    return event


def alias_history(conn: Connection, name: str, alias: str | None) -> list[AliasEvent]:
    model = require_model(conn, name)
    query = select(alias_events).where(alias_events.c.model_id == model)
    if alias is not None:
        query = query.where(alias_events.c.alias == alias)
    return [
        AliasEvent(
            name=name,
            alias=row.alias,
            from_version=row.from_version,
            to_version=row.to_version,
            actor=row.actor,
            at=row.at,
        )
        for row in conn.execute(query.order_by(alias_events.c.id))
    ]


def _version_query() -> Any:
    return select(*VERSION_COLUMNS).join(models, models.c.id == versions.c.model_id)


def _records(conn: Connection, rows: Sequence[Row[Any]]) -> list[VersionRecord]:
    """Turn version rows into records, loading all their files in one query."""
    if not rows:
        return []
    by_version: dict[int, list[FileRecord]] = {row.id: [] for row in rows}
    file_rows = conn.execute(
        select(files).where(files.c.version_id.in_(by_version)).order_by(files.c.path)
    )
    for f in file_rows:
        by_version[f.version_id].append(FileRecord(path=f.path, sha256=f.sha256, size=f.size))
    return [
        VersionRecord(
            name=row.name,
            version=row.version,
            digest=row.digest,
            manifest_yaml=row.manifest,
            files=tuple(by_version[row.id]),
            size=int(row.size),
            created_at=row.created_at,
            created_by=row.created_by,
            signature=bytes(row.signature) if row.signature is not None else None,
        )
        for row in rows
    ]
