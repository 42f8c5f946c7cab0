"""Model references: `NAME`, `NAME:VERSION` and `NAME@ALIAS`, parsed before any lookup.

Every name that reaches the registry is checked against the manifest's patterns first, so a
name can never smuggle a path or an SQL fragment anywhere (MLflow GHSA-5cvj-7rg6-jggj).
"""

from __future__ import annotations

from dataclasses import dataclass

from shipyard.bundle.manifest import NAME_PATTERN, VERSION_PATTERN
from shipyard.errors import BadReferenceError

FORMS = "NAME, NAME:VERSION or NAME@ALIAS (e.g. iris, iris:1.0, iris@production)"
LIST_HINT = "Run `shipyard list` to see the models, versions and aliases in the registry."
# References are echoed back in errors; cap them so a huge input never floods a log line.
ECHO_LIMIT = 80


def echo(text: str) -> str:
    """A safe, bounded representation of caller input for error messages."""
    shown = text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT] + "…"
    return repr(shown)


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed reference: exactly one of `version` and `alias` is set, or neither (latest)."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_ref(text: str) -> Ref:
    """Parse `text` into a `Ref`, or raise `BadReferenceError` naming the expected forms."""
    if not isinstance(text, str):
        raise _bad(repr(type(text).__name__), "it is not text")
    if ":" in text and "@" in text:
        raise _bad(echo(text), "it has both ':' and '@'")
    name, sep, rest = text.partition(":") if ":" in text else text.partition("@")
    check_name(name, what="model name", ref=text)
    if not sep:
        return Ref(name)
    if sep == ":":
        if not VERSION_PATTERN.fullmatch(rest):
            raise _bad(echo(text), "the version is empty or has characters outside [A-Za-z0-9._+-]")
        return Ref(name, version=rest)
    check_name(rest, what="alias", ref=text)
    return Ref(name, alias=rest)


def check_name(value: str, *, what: str = "name", ref: str | None = None) -> str:
    """Refuse a model, alias or deployment name that does not match the name pattern."""
    if isinstance(value, str) and NAME_PATTERN.fullmatch(value):
        return value
    shown = echo(value) if isinstance(value, str) else repr(type(value).__name__)
    if ref is not None:
        raise _bad(echo(ref), f"the {what} {shown} does not match {NAME_PATTERN.pattern}")
    raise BadReferenceError(
        f"Got {shown} for the {what}. Expected lowercase letters, digits, '.', '_' or '-', "
        f"starting with a letter or digit, at most 64 characters ({NAME_PATTERN.pattern}).",
        hint=f"Try a name such as 'iris' or 'fraud-v2'. {LIST_HINT}",
    )


def check_version(value: str) -> str:
    """Refuse a version string that does not match the manifest's version pattern."""
    if isinstance(value, str) and VERSION_PATTERN.fullmatch(value):
        return value
    shown = echo(value) if isinstance(value, str) else repr(type(value).__name__)
    raise BadReferenceError(
        f"Got {shown} for a version. Expected 1-64 characters of letters, digits, "
        f"'.', '_', '+' or '-' ({VERSION_PATTERN.pattern}).",
        hint=f"Try a version such as '1.0.2'. {LIST_HINT}",
    )


def _bad(shown: str, why: str) -> BadReferenceError:
    return BadReferenceError(
        f"Got {shown} for a model reference, but {why}. Expected {FORMS}.",
        hint=LIST_HINT,
    )
