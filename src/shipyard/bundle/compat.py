"""Schema compatibility between two versions of a model: what would break if `new` replaced `old`.

`compare(old, new)` lists every change between the two manifests' schemas, feature definitions
and tokenizer, each marked `breaking` or `compatible`. The two sides of a schema are judged in
opposite directions:

- **inputs** are a promise the model makes to callers: a change is compatible only when every
  request the old version accepted (`schema.to_batch`) is still accepted, with the same meaning.
  Inputs are strict (records and column mappings with an unknown field are refused), so removing
  an input field breaks callers that still send it, and every input field is required, so adding
  one breaks callers that do not send it yet, nullable or not.
- **outputs** are a promise to downstream readers: a change is compatible only when every answer
  the new version gives is one a reader of the old answers already handles. So an output that
  widens (a new class, a wider range, nulls) breaks readers, and one that narrows does not.

A manifest without a schema is compared as the empty schema, which is how the runtime serves it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shipyard.bundle.manifest import FieldSpec, Manifest, Schema
from shipyard.errors import ConfigError, ConflictError

Kind = Literal[
    "field_added",
    "field_removed",
    "type_changed",
    "shape_changed",
    "nullability_tightened",
    "nullability_relaxed",
    "range_narrowed",
    "range_widened",
    "categories_removed",
    "categories_added",
    "categories_reordered",
    "output_added",
    "output_removed",
    "output_retyped",
    "feature_definitions_changed",
    "tokenizer_changed",
    "layout_changed",
]
Severity = Literal["breaking", "compatible"]
Side = Literal["input", "output", "features"]

# Input dtype changes under which every value the old type accepted is still accepted and means
# the same. int64 -> float64 rounds only beyond 2**53; int -> float32 rounds from 2**24 (ids,
# amounts in cents), so it is not on the list.
_WIDER = {
    ("int32", "int64"),
    ("int32", "float64"),
    ("int64", "float64"),
    ("float32", "float64"),
}
_NUMERIC = {"int32", "int64", "float32", "float64"}
_BOUNDED = {*_NUMERIC, "bool"}  # to_batch checks minimum/maximum on bools too (as 0/1)
_TEXTUAL = {"string", "category"}
_SHOWN_NAME = 64
_SHOWN_VALUES = 10


@dataclass(frozen=True)
class Change:
    kind: Kind
    severity: Severity
    side: Side
    field: str | None  # the field or feature name; None for layout and tokenizer
    message: str
    old: Any = None  # JSON-ready values before and after, for `--json` and decision records
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "side": self.side,
            "field": self.field,
            "message": self.message,
            "old": self.old,
            "new": self.new,
        }


@dataclass(frozen=True)
class CompatReport:
    old: str  # "name:version"
    new: str
    changes: list[Change] = field(default_factory=list)

    @property
    def breaking(self) -> bool:
        return any(c.severity == "breaking" for c in self.changes)

    @property
    def breaking_changes(self) -> list[Change]:
        return [c for c in self.changes if c.severity == "breaking"]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (pass it to `json.dumps`)."""
        return {
            "old": self.old,
            "new": self.new,
            "breaking": self.breaking,
            "changes": [c.to_json() for c in self.changes],
        }

    def render(self) -> str:
        """A short text report: one line per change, breaking ones first."""
        if not self.changes:
            return f"{self.old} -> {self.new}: compatible, no schema changes."
        broken = len(self.breaking_changes)
        head = (
            f"{self.old} -> {self.new}: {broken} breaking, "
            f"{len(self.changes) - broken} compatible change(s)."
        )
        ordered = sorted(self.changes, key=lambda c: c.severity != "breaking")
        lines = [
            f"  {'BREAKING' if c.severity == 'breaking' else 'ok':<9} {c.kind:<28} {c.message}"
            for c in ordered
        ]
        return "\n".join([head, *lines])

    def __str__(self) -> str:
        return self.render()

    def require(self, *, allow_breaking: bool = False, reason: str = "") -> None:
        """Refuse a breaking change unless it is forced with a reason that can be recorded."""
        if allow_breaking and not reason.strip():
            raise ConfigError(
                "Got allow_breaking without a reason.",
                hint="Say why the breaking change is acceptable, e.g. reason='callers updated "
                "in release 42'; it is recorded with the rollout.",
                field="compat.reason",
            )
        if self.breaking and not allow_breaking:
            first = self.breaking_changes[0]
            raise ConflictError(
                f"{self.new} is not compatible with {self.old}: {first.message}"
                + (
                    f" ({len(self.breaking_changes) - 1} more)"
                    if len(self.breaking_changes) > 1
                    else ""
                ),
                hint="Fix the new version's schema, or force it with allow_breaking and a "
                "reason once callers and readers are ready.",
                changes=[c.to_json() for c in self.breaking_changes],
            )


def compare(old: Manifest, new: Manifest) -> CompatReport:
    """Every change between `old` (serving now) and `new` (about to take its traffic)."""
    before, after = old.schema_ or Schema(), new.schema_ or Schema()
    changes: list[Change] = []
    if before.layout != after.layout:
        text = f"Inputs change layout from {before.layout} to {after.layout}: callers must send "
        text += "another kind of batch."
        changes.append(
            Change("layout_changed", "breaking", "input", None, text, before.layout, after.layout)
        )
    changes += _fields(before.inputs, after.inputs, "input")
    changes += _fields(before.outputs, after.outputs, "output")
    changes += _definitions(old, new)
    changes += _tokenizer(old, new, after.layout)
    return CompatReport(f"{old.name}:{old.version}", f"{new.name}:{new.version}", changes)


# -- fields ------------------------------------------------------------------------------------


def _name(name: str) -> str:
    # Names come from manifests anyone can write: keep one line of the report one line.
    return repr(name if len(name) <= _SHOWN_NAME else name[:_SHOWN_NAME] + "…")


def _values(values: Sequence[Any]) -> str:
    more = f" and {len(values) - _SHOWN_VALUES} more" if len(values) > _SHOWN_VALUES else ""
    return ", ".join(repr(v) for v in values[:_SHOWN_VALUES]) + more


def _fields(old: list[FieldSpec], new: list[FieldSpec], side: Side) -> list[Change]:
    before = {f.name: f for f in old}
    after = {f.name: f for f in new}
    changes = [_removed(spec, side) for name, spec in before.items() if name not in after]
    for name, spec in after.items():
        changes += _field(before[name], spec, side) if name in before else [_added(spec, side)]
    return changes


def _removed(spec: FieldSpec, side: Side) -> Change:
    if side == "input":
        text = "is removed: requests that still send it are refused (unknown field)."
        return Change(
            "field_removed", "breaking", side, spec.name, _say(side, spec, text), spec.dtype
        )
    text = "is removed: readers of it get nothing."
    return Change("output_removed", "breaking", side, spec.name, _say(side, spec, text), spec.dtype)


def _added(spec: FieldSpec, side: Side) -> Change:
    if side == "input":
        text = f"({spec.dtype}) is added: every input is required, so requests without it fail."
        return Change(
            "field_added", "breaking", side, spec.name, _say(side, spec, text), None, spec.dtype
        )
    text = f"({spec.dtype}) is added."
    return Change(
        "output_added", "compatible", side, spec.name, _say(side, spec, text), None, spec.dtype
    )


def _say(side: Side, spec: FieldSpec, text: str) -> str:
    return f"{'Input' if side == 'input' else 'Output'} {_name(spec.name)} {text}"


def _judged(
    kind: Kind, side: Side, spec: FieldSpec, text: str, grew: bool, shrank: bool, old: Any, new: Any
) -> Change:
    """The one rule: inputs may only accept more, outputs may only give less."""
    breaking = shrank if side == "input" else grew
    why = ""
    if breaking:
        why = (
            ": some requests that were accepted are refused now"
            if side == "input"
            else ": readers get answers they have not seen before"
        )
    message = _say(side, spec, f"{text}{why}.")
    return Change(
        kind, "breaking" if breaking else "compatible", side, spec.name, message, old, new
    )


def _field(old: FieldSpec, new: FieldSpec, side: Side) -> list[Change]:
    changes = [*_shape(old, new, side), *_nullability(old, new, side)]
    if old.dtype != new.dtype:
        changes.insert(0, _retyped(old, new, side))
    # Bounds and categories are enforced only on these types; across a type change they are
    # still compared, so int64 [0, 10] -> float64 [0, 5] is caught as a narrowed range.
    if old.dtype in _BOUNDED and new.dtype in _BOUNDED:
        changes += _range(old, new, side)
    # Callers are held to categories only on text fields; an output's categories are its
    # classes (an int64 label has them too), a promise to readers whatever the type.
    if side == "output" or (old.dtype in _TEXTUAL and new.dtype in _TEXTUAL):
        changes += _categories(old, new, side)
    return changes


def _retyped(old: FieldSpec, new: FieldSpec, side: Side) -> Change:
    text = f"changes type from {old.dtype} to {new.dtype}"
    if side == "output":
        # Readers keep answers in typed columns (Parquet, tables, client structs): any change.
        message = _say(side, new, f"{text}: readers of the old type may fail.")
        return Change("output_retyped", "breaking", side, new.name, message, old.dtype, new.dtype)
    wider = (
        (old.dtype, new.dtype) in _WIDER
        # Any string is accepted where the old categories were all strings.
        or (
            (old.dtype, new.dtype) == ("category", "string")
            and old.categories is not None
            and all(isinstance(c, str) for c in old.categories)
        )
        # A category field takes any type of value; its list is judged by _categories.
        or (old.dtype, new.dtype) == ("string", "category")
    )
    return _judged("type_changed", side, new, text, False, not wider, old.dtype, new.dtype)


def _covers(wide: list[int], narrow: list[int]) -> bool:
    # -1 accepts any length along its axis.
    return len(wide) == len(narrow) and all(w in (-1, n) for w, n in zip(wide, narrow, strict=True))


def _shape(old: FieldSpec, new: FieldSpec, side: Side) -> list[Change]:
    if old.shape == new.shape:
        return []
    grew, shrank = not _covers(old.shape, new.shape), not _covers(new.shape, old.shape)
    text = f"changes shape from {old.shape} to {new.shape}"
    return [_judged("shape_changed", side, new, text, grew, shrank, old.shape, new.shape)]


def _nullability(old: FieldSpec, new: FieldSpec, side: Side) -> list[Change]:
    if old.nullable == new.nullable:
        return []
    kind: Kind = "nullability_relaxed" if new.nullable else "nullability_tightened"
    text = "may be null now" if new.nullable else "may not be null now"
    return [_judged(kind, side, new, text, new.nullable, old.nullable, old.nullable, new.nullable)]


def _bound(value: float | None) -> float | None:
    # NaN bounds compare false and infinite ones bound nothing: both enforce no limit.
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return value


def _range(old: FieldSpec, new: FieldSpec, side: Side) -> list[Change]:
    was = [_bound(old.minimum), _bound(old.maximum)]
    now = [_bound(new.minimum), _bound(new.maximum)]
    if was == now:
        return []
    # One end may narrow while the other widens: each direction is judged on its own.
    shrank = (now[0] is not None and (was[0] is None or now[0] > was[0])) or (
        now[1] is not None and (was[1] is None or now[1] < was[1])
    )
    grew = (was[0] is not None and (now[0] is None or now[0] < was[0])) or (
        was[1] is not None and (now[1] is None or now[1] > was[1])
    )
    breaking_kind: Kind = "range_narrowed" if side == "input" else "range_widened"
    kind: Kind = (
        breaking_kind
        if (shrank if side == "input" else grew)
        else ("range_widened" if grew else "range_narrowed")
    )
    text = (
        f"range changes from [{_end(was[0])}, {_end(was[1])}] to [{_end(now[0])}, {_end(now[1])}]"
    )
    return [_judged(kind, side, new, text, grew, shrank, was, now)]


def _end(value: float | None) -> str:
    return "any" if value is None else f"{value:g}"


def _key(value: str | int | bool) -> tuple[str, str | int | bool]:
    # 1 == True in Python sets; callers and readers in JSON tell them apart, so do we.
    return (type(value).__name__, value)


def _categories(old: FieldSpec, new: FieldSpec, side: Side) -> list[Change]:
    if old.categories is None and new.categories is None:
        return []
    if old.categories is None or new.categories is None:
        # No list means any value: losing the list widens, gaining one narrows.
        if new.categories is None:
            text = "accepts any value now, not only the listed categories"
            return [_judged("categories_added", side, new, text, True, False, old.categories, None)]
        text = f"is restricted to the categories {_values(new.categories)}"
        return [_judged("categories_removed", side, new, text, False, True, None, new.categories)]
    old_keys = {_key(c) for c in old.categories}
    new_keys = {_key(c) for c in new.categories}
    removed = [c for c in old.categories if _key(c) not in new_keys]
    added = [c for c in new.categories if _key(c) not in old_keys]
    changes = []
    if removed:
        text = f"loses the categories {_values(removed)}"
        changes.append(_judged("categories_removed", side, new, text, False, True, removed, None))
    if added:
        text = f"gains the categories {_values(added)}"
        changes.append(_judged("categories_added", side, new, text, True, False, None, added))
    kept_old = [_key(c) for c in old.categories if _key(c) in new_keys]
    kept_new = [_key(c) for c in new.categories if _key(c) in old_keys]
    if side == "output" and kept_old != kept_new:
        # The classes' order is the probabilities' order: position i means another class now.
        text = "lists its categories in another order: readers that index by position read the"
        changes.append(
            _judged(
                "categories_reordered",
                side,
                new,
                f"{text} wrong class",
                True,
                False,
                old.categories,
                new.categories,
            )
        )
    return changes


# -- features ----------------------------------------------------------------------------------


def _definitions(old: Manifest, new: Manifest) -> list[Change]:
    before = old.features.definitions if old.features else []
    after = new.features.definitions if new.features else []
    if _canonical(before) == _canonical(after):
        return []
    by_old, by_new = _named(before), _named(after)
    if by_old is None or by_new is None:
        # Without unique names nothing can be matched: any difference may change a meaning.
        return [
            Change(
                "feature_definitions_changed",
                "breaking",
                "features",
                None,
                "Feature definitions change (they are not uniquely named, so they are "
                "compared as a whole): whoever computes the features must change in step.",
                _jsonable(before),
                _jsonable(after),
            )
        ]
    changes: list[Change] = []
    for name in sorted(by_old.keys() | by_new.keys()):
        was, now = by_old.get(name), by_new.get(name)
        if _canonical(was) == _canonical(now):
            continue
        if was is not None and now is not None:
            severity: Severity = "breaking"
            text = (
                "changes definition: the same name now carries another value; whoever "
                "computes it must change in step."
            )
        else:
            # Inputs that appear or disappear with a definition are reported as fields.
            severity = "compatible"
            text = "is defined now." if was is None else "is no longer defined."
        changes.append(
            Change(
                "feature_definitions_changed",
                severity,
                "features",
                name,
                f"Feature {_name(name)} {text}",
                _jsonable(was),
                _jsonable(now),
            )
        )
    return changes


def _named(definitions: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    names = [d.get("name") for d in definitions]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        return None
    return {str(d["name"]): d for d in definitions}


def _canonical(value: Any) -> str:
    return json.dumps(_jsonable(value), sort_keys=True)


def _jsonable(value: Any) -> Any:
    """Strict JSON (PostgreSQL's json refuses NaN; YAML gives dates): anything else as text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


def _tokenizer(old: Manifest, new: Manifest, layout: str) -> list[Change]:
    before, after = _tokenizer_files(old), _tokenizer_files(new)
    if before == after:
        return []
    # A text model tokenizes inside the bundle; any other layout means callers send what the
    # tokenizer produced (token ids), and those ids mean other tokens now.
    breaking = layout != "text"
    was = old.features.tokenizer if old.features and before is not None else None
    now = new.features.tokenizer if new.features and after is not None else None
    if was is None or now is None:
        what = f"is added ({now})" if was is None else f"is removed ({was})"
    else:
        what = f"files change ({was} -> {now})" if was != now else f"files change ({now})"
    return [
        Change(
            "tokenizer_changed",
            "breaking" if breaking else "compatible",
            "features",
            None,
            f"The tokenizer {what}"
            + (
                ": callers that send token ids must re-tokenize."
                if breaking
                else "; the bundle tokenizes text itself."
            ),
            was,
            now,
        )
    ]


def _tokenizer_files(manifest: Manifest) -> dict[str, str] | None:
    """The tokenizer's files relative to its folder, with their sha256: its identity."""
    folder = manifest.features.tokenizer if manifest.features else None
    if not folder:
        return None
    prefix = folder.rstrip("/") + "/"
    files = {
        (f.path[len(prefix) :] if f.path.startswith(prefix) else ""): f.sha256
        for f in manifest.all_files()
        if f.path.startswith(prefix) or f.path == folder.rstrip("/")
    }
    # A hand-written manifest may name a folder with no hashed files: the path is all we have.
    return files or {"": f"path:{folder.rstrip('/')}"}
