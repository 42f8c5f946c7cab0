"""`${secret:NAME}` references in config and manifests, resolved at run time.

A secret is never written into a registry row, a bundle or a log: config holds the reference
and `resolve(value)` swaps it for the value when the process starts. A reference is looked up,
in order, in the environment variable ``SHIPYARD_SECRET_<NAME>``, then ``<NAME>``, then the
file ``<folder>/<NAME>`` for each configured folder and finally ``/run/secrets/<NAME>``
(Docker and Kubernetes mount secrets there). An empty environment variable counts as unset.

A resolved value is a `Secret`: a `str` (so a database driver takes it as it is) whose `str`,
`repr` and format are ``***``, so an f-string, a log line or a traceback shows nothing. Read
it with `.reveal()`. A string holding a reference among other text (a URL with a password)
becomes one `Secret` as a whole.

An unresolvable or malformed reference is a `ConfigError` naming the reference (never a
value) and where in the config it sits.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.errors import ConfigError

ENV_PREFIX = "SHIPYARD_SECRET_"
DEFAULT_FOLDER = Path("/run/secrets")
MAX_FILE_BYTES = 64 * 1024  # a secret, not a data set: a bigger file is a wrong mount
MASK = "***"
# NAME: a letter or digit, then letters, digits, `_`, `-` or `.`; never `/` or `..`.
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
REFERENCE = re.compile(r"\$\{secret:(" + NAME + r")\}")
# Anything that starts like a reference; used to tell a malformed one from ordinary text.
_OPENING = re.compile(r"\$\{secret:")


class Secret(str):
    """A secret string: shown as ``***`` by `str`, `repr` and `format`; `.reveal()` reads it.

    Being a `str`, it passes unchanged to libraries that want the value (`"x" + s`,
    `s.encode()`); only the ways of *showing* it are masked.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def reveal(self) -> str:
        """The plain value, for the one place that needs it."""
        return str.__str__(self)

    def __copy__(self) -> Secret:
        return self  # immutable, like str

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        # Pickling would copy the value into wherever the pickle goes; refuse instead.
        raise TypeError("A Secret cannot be pickled; pass the ${secret:NAME} reference.")


@dataclass(frozen=True)
class Resolver:
    """Where references are looked up. `environ` defaults to `os.environ` at call time."""

    environ: Mapping[str, str] | None = None
    folders: tuple[Path, ...] = ()
    default_folder: Path | None = field(default=DEFAULT_FOLDER)

    def lookup(self, name: str, where: str = "") -> Secret:
        """The value of the secret NAME; a ConfigError naming the reference when absent."""
        if not re.fullmatch(NAME, name) or ".." in name:
            raise ConfigError(
                f"Got a malformed secret reference{_at(where)}.",
                hint="Write ${secret:NAME} with NAME made of letters, digits, '_', '-', '.'.",
            )
        environ = os.environ if self.environ is None else self.environ
        for variable in (f"{ENV_PREFIX}{name}", name):
            value = environ.get(variable)
            if value:
                return Secret(value)
        folders = [*self.folders, *([self.default_folder] if self.default_folder else [])]
        for folder in folders:
            value = _read_file(folder / name, name, where)
            if value is not None:
                return Secret(value)
        searched = ", ".join(str(folder) for folder in folders) or "no folder"
        raise ConfigError(
            f"Secret reference ${{secret:{name}}}{_at(where)} could not be resolved.",
            hint=f"Set the environment variable {ENV_PREFIX}{name} (or {name}), or put the "
            f"value in a file named {name} in one of: {searched}.",
            reference=f"${{secret:{name}}}",
        )

    def resolve(self, value: Any, where: str = "") -> Any:
        """`value` with every reference replaced: dicts and lists are walked (a copy)."""
        if isinstance(value, str):
            return self._resolve_text(value, where)
        if isinstance(value, Mapping):
            return {key: self.resolve(item, _join(where, key)) for key, item in value.items()}
        if isinstance(value, list | tuple):
            resolved = [self.resolve(item, f"{where}[{i}]") for i, item in enumerate(value)]
            return tuple(resolved) if isinstance(value, tuple) else resolved
        return value

    def _resolve_text(self, text: str, where: str) -> str:
        if "${secret:" not in text:
            return text
        if len(_OPENING.findall(text)) != len(REFERENCE.findall(text)):
            raise ConfigError(
                f"Got a malformed secret reference{_at(where)}.",
                hint="Write ${secret:NAME} with NAME made of letters, digits, '_', '-', '.'.",
            )
        resolved = REFERENCE.sub(lambda m: self.lookup(m.group(1), where).reveal(), text)
        return Secret(resolved)


def resolve(
    value: Any,
    *,
    environ: Mapping[str, str] | None = None,
    folders: Iterable[Path] = (),
    default_folder: Path | None = DEFAULT_FOLDER,
) -> Any:
    """`value` with every ``${secret:NAME}`` replaced by a `Secret` (dicts, lists walked)."""
    return Resolver(environ, tuple(folders), default_folder).resolve(value)


def references(value: Any) -> list[str]:
    """The NAMEs referenced anywhere in `value`, in order, without resolving them."""
    if isinstance(value, str):
        return REFERENCE.findall(value)
    if isinstance(value, Mapping):
        return [name for item in value.values() for name in references(item)]
    if isinstance(value, list | tuple):
        return [name for item in value for name in references(item)]
    return []


def _read_file(path: Path, name: str, where: str) -> str | None:
    try:
        info = path.stat()  # follows links: Kubernetes mounts secrets as symlinks
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _unreadable(path, name, where, type(exc).__name__) from None
    if not stat.S_ISREG(info.st_mode):
        raise _unreadable(path, name, where, "not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise _unreadable(path, name, where, f"larger than {MAX_FILE_BYTES} bytes")
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _unreadable(path, name, where, "not UTF-8 text") from None
    except OSError as exc:
        raise _unreadable(path, name, where, type(exc).__name__) from None
    # Files written by `echo` or an editor end with a newline that is not part of the secret.
    return text.removesuffix("\n").removesuffix("\r") or None


def _unreadable(path: Path, name: str, where: str, why: str) -> ConfigError:
    return ConfigError(
        f"Secret reference ${{secret:{name}}}{_at(where)}: the file {path} cannot be read ({why}).",
        hint="Mount the secret as a small UTF-8 file readable by this process.",
        reference=f"${{secret:{name}}}",
    )


def _at(where: str) -> str:
    return f" at {where}" if where else ""


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def plain_settings(values: dict[str, Any], environ: Mapping[str, str] | None = None
                   ) -> dict[str, Any]:
    """Settings values with every reference resolved to its plain value (for the settings
    object, whose secret-bearing fields are never printed)."""
    return _reveal(resolve(values, environ=environ))


def _reveal(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value
