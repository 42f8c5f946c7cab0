"""Deployments and their revisions: the desired state that servers read.

A revision is immutable. `deploy` appends revision n+1 inside the registry's write lock, so
numbers are gap-free and never collide under concurrent writers (the unique constraint on
(deployment, number) is the backstop). Every variant's model is pinned to NAME:VERSION and its
manifest digest at deploy time, so re-applying an old revision (a rollback) needs no lookup
that could have changed since.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select

from shipyard.errors import ConflictError, NotFoundError, UserError
from shipyard.registry import catalog
from shipyard.registry.audit import canonical_json
from shipyard.registry.records import Deployment, Revision
from shipyard.registry.refs import parse_ref
from shipyard.registry.tables import deployments, revisions

SPEC_EXAMPLE = '{"variants": [{"name": "champion", "model": "NAME:VERSION", "weight": 100}]}'
DEPLOYMENTS_HINT = "Run `shipyard deployments` to see the existing deployments."


def pin_spec(conn: Connection, spec: dict[str, Any]) -> dict[str, Any]:
    """Check the spec's shape and pin every variant's model to NAME:VERSION and its digest."""
    if not isinstance(spec, dict) or not isinstance(spec.get("variants"), list):
        raise _bad_spec("it has no 'variants' list")
    try:
        pinned: dict[str, Any] = json.loads(canonical_json(spec))  # a JSON-only deep copy
    except (TypeError, ValueError) as exc:
        raise _bad_spec(f"it is not plain JSON ({exc})") from exc
    if not pinned["variants"]:
        raise _bad_spec("'variants' is empty")
    names: set[str] = set()
    for index, variant in enumerate(pinned["variants"]):
        if not isinstance(variant, dict):
            raise _bad_spec(f"variant {index} is not a mapping")
        name, ref = variant.get("name"), variant.get("model")
        if not isinstance(name, str) or not name or name in names:
            raise _bad_spec(f"variant {index} has a missing or repeated 'name'")
        if not isinstance(ref, str):
            raise _bad_spec(f"variant {name!r} has no 'model' reference")
        names.add(name)
        record = catalog.resolve(conn, parse_ref(ref))
        expected = variant.get("version_digest")
        if expected is not None and expected != record.digest:
            raise ConflictError(
                f"Got version_digest {str(expected)[:12]}… for variant {name!r}, but "
                f"{record.ref} has digest {record.digest[:12]}…. Expected them to match.",
                hint=f"Re-read the version with `shipyard show {record.ref}` and deploy again.",
                variant=name,
            )
        variant["model"] = record.ref
        variant["version_digest"] = record.digest
    return pinned


def deploy(
    conn: Connection,
    name: str,
    spec: dict[str, Any],
    *,
    owner: str,
    actor: str,
    reason: str,
    at: datetime,
) -> Revision:
    """Append the next revision of deployment `name` (created on first use)."""
    row = conn.execute(select(deployments.c.id).where(deployments.c.name == name)).first()
    if row is None:
        insert = deployments.insert().values(
            name=name, owner=owner, created_at=at, created_by=actor
        )
        deployment_id = int(conn.execute(insert.returning(deployments.c.id)).scalar_one())
    else:
        deployment_id = int(row.id)
    last = conn.execute(
        select(func.max(revisions.c.number)).where(revisions.c.deployment_id == deployment_id)
    ).scalar()
    number = int(last or 0) + 1
    text = canonical_json(spec)
    revision_id = conn.execute(
        revisions.insert()
        .values(
            deployment_id=deployment_id,
            number=number,
            spec=text,
            created_at=at,
            actor=actor,
            reason=reason,
        )
        .returning(revisions.c.id)
    ).scalar_one()
    return Revision(
        id=int(revision_id),
        deployment=name,
        number=number,
        spec=json.loads(text),
        created_at=at,
        actor=actor,
        reason=reason,
    )


def list_deployments(conn: Connection) -> list[Deployment]:
    latest = (
        select(revisions.c.deployment_id, func.max(revisions.c.number).label("number"))
        .group_by(revisions.c.deployment_id)
        .subquery()
    )
    query = (
        select(deployments, latest.c.number)
        .outerjoin(latest, latest.c.deployment_id == deployments.c.id)
        .order_by(deployments.c.name)
    )
    return [
        Deployment(
            name=row.name, owner=row.owner, created_at=row.created_at, revision=int(row.number)
        )
        for row in conn.execute(query)
    ]


def current(conn: Connection, name: str) -> Revision:
    history = _revisions(conn, name, newest_only=True)
    return history[0]


def history(conn: Connection, name: str) -> list[Revision]:
    return _revisions(conn, name, newest_only=False)


def change_token(conn: Connection) -> int:
    """The highest revision id. Revisions are only ever added, under the write lock, so ids
    commit in order and the token only grows: a server reloads when it changes."""
    return int(conn.execute(select(func.coalesce(func.max(revisions.c.id), 0))).scalar_one())


def _revisions(conn: Connection, name: str, *, newest_only: bool) -> list[Revision]:
    query = (
        select(revisions, deployments.c.name.label("deployment"))
        .join(deployments, deployments.c.id == revisions.c.deployment_id)
        .where(deployments.c.name == name)
    )
    if newest_only:
        query = query.order_by(revisions.c.number.desc()).limit(1)
    else:
        query = query.order_by(revisions.c.number)
    rows = conn.execute(query).all()
    if not rows:
        raise NotFoundError(
            f"Got {name!r} for a deployment, but the registry has no deployment by that name.",
            hint=f"Create it with `shipyard deploy {name} ...`. {DEPLOYMENTS_HINT}",
            deployment=name,
        )
    return [_revision(row) for row in rows]


def _revision(row: Row[Any]) -> Revision:
    return Revision(
        id=row.id,
        deployment=row.deployment,
        number=row.number,
        spec=json.loads(row.spec),
        created_at=row.created_at,
        actor=row.actor,
        reason=row.reason,
    )


def _bad_spec(why: str) -> UserError:
    return UserError(
        f"Got a deployment spec where {why}. Expected a mapping such as {SPEC_EXAMPLE}.",
        hint="Name each variant once and point 'model' at a registered NAME:VERSION.",
    )
