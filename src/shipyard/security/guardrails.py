"""Guardrails for language-model deployments: inputs, outputs, tool calls, retrieved chunks.

`Guardrails(...)` holds the configuration; each check returns a `Verdict` (allow, flag or
block, with its `Violation`s) and calls `on_violation(kind)` once per violation (the server
wires it to the monitoring counter, labelled with the model version):

- `check_input(text)`: prompt-injection heuristics (`shipyard.security.injection`).
- `check_output(text)`: secrets and personal data (`shipyard.security.pii`) and exfiltration:
  markdown images and links (inline and reference-style), HTML ``src``/``href``, bare and
  protocol-relative URLs to hosts not on `allowed_hosts`, ``javascript:`` URLs, and data
  carried in a URL's query string even to an allowed host (EchoLeak used an allowed host).
  `Verdict.text` is the output with each finding replaced, for callers that serve it instead.
- `check_tool_call(name, arguments)`: the tool must be on the allowlist, its arguments (a
  mapping, or the JSON text a model emits) must fit the tool's JSON Schema, carry no secret
  and no URL to a host off the allowlist; then, for tools that need it, the approval hook
  answers approve, deny or pending (a human decides later).
- `check_retrieval(chunks)`: each `Chunk` keeps its `Provenance` (source, uri, fetched_at,
  sha256 digest); chunks from sources off `trusted_sources`, with a digest that does not match
  their text, or that read like an injection are dropped (block) or kept with flags (flag).
  `Verdict.chunks` is what may reach the model.

Each violation's action comes from the `Policy` (block or flag per kind); a human's "deny"
and "pending" always block. Details name what was found and where, never the found text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from shipyard.errors import ConfigError
from shipyard.security import injection

log = logging.getLogger("shipyard.security.guardrails")

Action = Literal["allow", "flag", "block"]
Mode = Literal["block", "flag"]
Approval = Literal["approve", "deny", "pending"]
_RANK = {"allow": 0, "flag": 1, "block": 2}
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_ARGUMENT_CHARS = 1_000_000


class Policy(BaseModel):
    """Block or flag, per kind of violation."""

    model_config = ConfigDict(extra="forbid")

    prompt_injection: Mode = Field(
        default="flag", description="An input that reads like an injection."
    )
    retrieval_injection: Mode = Field(
        default="block",
        description="A retrieved chunk that reads like an injection (block drops it).",
    )
    secret: Mode = Field(
        default="block", description="A secret (key, token, password) in an output."
    )
    pii: Mode = Field(
        default="flag", description="Personal data (email, phone, card...) in an output."
    )
    exfiltration: Mode = Field(
        default="block", description="An output or tool argument that could carry data off-site."
    )
    tool_not_allowed: Mode = Field(
        default="block", description="A call to a tool off the allowlist."
    )
    tool_arguments: Mode = Field(
        default="block", description="Tool arguments that break the schema."
    )
    untrusted_source: Mode = Field(
        default="block", description="A retrieved chunk from a source off the allowlist."
    )
    provenance: Mode = Field(
        default="block",
        description="A retrieved chunk whose provenance is missing or does not match.",
    )
    injection_threshold: float = Field(
        default=injection.DEFAULT_THRESHOLD,
        gt=0,
        le=1,
        description="Score from which text is flagged.",
    )
    max_query_chars: int = Field(
        default=256, ge=0, description="A URL query longer than this is treated as carrying data."
    )


@dataclass(frozen=True)
class Violation:
    kind: str  # a fixed vocabulary: safe as a metric label
    detail: str  # what and where, never the text that was found
    action: Mode


@dataclass(frozen=True)
class Provenance:
    """Where a retrieved chunk came from; `digest` is ``sha256:<hex>`` of its text."""

    source: str
    uri: str
    fetched_at: datetime
    digest: str


@dataclass(frozen=True)
class Chunk:
    text: str
    provenance: Provenance
    flags: tuple[str, ...] = ()

    @classmethod
    def make(cls, text: str, *, source: str, uri: str, fetched_at: datetime) -> Chunk:
        """A chunk with its provenance and the digest of its text, at retrieval time."""
        return cls(text, Provenance(source, uri, fetched_at, digest(text)))


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Verdict:
    action: Action
    violations: tuple[Violation, ...] = ()
    text: str | None = None  # check_output: the output with every finding replaced
    chunks: tuple[Chunk, ...] = ()  # check_retrieval: the chunks that may reach the model

    @property
    def allowed(self) -> bool:
        return self.action != "block"

    @property
    def pending(self) -> bool:
        """A tool call waiting for a human: ask again later, do not run it now."""
        return any(v.kind == "tool_approval_pending" for v in self.violations)


@dataclass(frozen=True)
class Tool:
    """A tool the model may call: its JSON Schema for arguments, and whether a human approves."""

    name: str
    parameters: Mapping[str, Any] | None = None  # JSON Schema of the arguments object
    requires_approval: bool = False
    urls_allowed: bool = False  # a fetch tool takes URLs by design: do not judge their hosts
    _names: frozenset[str] = field(default=frozenset(), repr=False, compare=False)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any]


ApprovalHook = Callable[[ToolCall], Approval]


# --- tool argument schemas -------------------------------------------------------------------

# The built-in checker's keywords; a schema using others needs the jsonschema library.
_ANNOTATIONS = {"$schema", "$id", "title", "description", "default", "examples", "$comment"}
_KEYWORDS = _ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "minItems",
    "maxItems",
}
_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list | tuple),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (
        isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
    ),
}


def _jsonschema() -> Any:
    try:
        import jsonschema
    except ImportError:
        return None
    return jsonschema


def check_schema(schema: Mapping[str, Any], tool: str) -> None:
    """Refuse a broken tool schema at start-up rather than on the first call."""
    bad = ConfigError(
        f"The argument schema of the tool {tool!r} is not a valid JSON Schema (or uses "
        "keywords the built-in checker does not know).",
        hint="Fix the schema, or install the full checker: pip install jsonschema",
    )
    library = _jsonschema()
    if library is not None:
        cls = library.validators.validator_for(schema, default=library.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except library.SchemaError as exc:
            raise bad from exc
        return
    for node in _schema_nodes(schema):
        if not isinstance(node, Mapping) or set(node) - _KEYWORDS:
            raise bad
        types = node.get("type", [])
        if any(t not in _TYPES for t in ([types] if isinstance(types, str) else types)):
            raise bad


def _schema_nodes(schema: Any) -> Iterator[Any]:
    yield schema
    if isinstance(schema, Mapping):
        for sub in dict(schema.get("properties") or {}).values():
            yield from _schema_nodes(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), Mapping):
                yield from _schema_nodes(schema[key])


def property_names(schema: Any) -> frozenset[str]:
    """Every property name the schema declares: the only keys an error may name."""
    names: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            properties = node.get("properties")
            if isinstance(properties, Mapping):
                names.update(k for k in properties if isinstance(k, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return frozenset(names)


def _path(parts: Iterable[Any], names: frozenset[str]) -> str:
    # Keys named in the schema are ours; any other key came from the model and is not shown.
    return "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" if p in names else ".*" for p in parts
    )


def argument_errors(
    schema: Mapping[str, Any] | None, value: Any, names: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """(path, failed keyword) for each way `value` breaks `schema`: no values in them."""
    if schema is None:
        return []
    library = _jsonschema()
    if library is not None:
        cls = library.validators.validator_for(schema, default=library.Draft202012Validator)
        errors = cls(schema).iter_errors(value)
        return sorted({(_path(e.absolute_path, names), str(e.validator)) for e in errors})
    found: list[tuple[str, str]] = []
    _check(schema, value, (), found)
    return sorted({(_path(p, names), k) for p, k in found})


def _check(schema: Mapping[str, Any], value: Any, at: tuple[Any, ...], out: list[Any]) -> None:
    """The built-in subset of JSON Schema (draft 2020-12 semantics for what it knows)."""
    types = schema.get("type")
    if types is not None:
        wanted = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in wanted):
            out.append((at, "type"))
            return
    if "enum" in schema and not any(_same(value, v) for v in schema["enum"]):
        out.append((at, "enum"))
    if "const" in schema and not _same(value, schema["const"]):
        out.append((at, "const"))
    if _TYPES["number"](value):
        bounds: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
            ("minimum", operator.lt),
            ("maximum", operator.gt),
            ("exclusiveMinimum", operator.le),
            ("exclusiveMaximum", operator.ge),
        )
        for key, fails in bounds:
            if key in schema and fails(value, schema[key]):
                out.append((at, key))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append((at, "minLength"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append((at, "maxLength"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append((at, "pattern"))
    if isinstance(value, list | tuple):
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append((at, "minItems"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append((at, "maxItems"))
        if isinstance(schema.get("items"), Mapping):
            for index, item in enumerate(value):
                _check(schema["items"], item, (*at, index), out)
    if isinstance(value, Mapping):
        properties = schema.get("properties") or {}
        for name in schema.get("required", []):
            if name not in value:
                out.append((at, "required"))
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                _check(properties[key], item, (*at, key), out)
            elif extra is False:
                out.append((at, "additionalProperties"))
            elif isinstance(extra, Mapping):
                _check(extra, item, (*at, key), out)


def _same(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1, and 1 equals 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


# --- URLs -------------------------------------------------------------------------------------

_STOP = r"\s<>\"'`\\()\[\]{}|^"
_URL = re.compile(
    rf"(?i)\b(?:https?|ftp|wss?)://[^{_STOP}]{{1,8192}}"
    rf"|(?<=[(=\"'\s])//[a-z0-9-]{{1,63}}\.[^{_STOP}]{{1,8192}}"
    rf"|(?<![\w./@-])www\.[a-z0-9-]{{1,63}}\.[^{_STOP}]{{1,8192}}"
    r"|\b(?:javascript|vbscript):[^\s<>\"'`]{0,8192}"
)
_REFERENCE_DEF = re.compile(r" {0,3}\[([^\[\]\n]{1,200})\]:\s{0,5}<?")
_TRAILING = ".,;:!?*_~"  # prose punctuation after a URL is not part of it
_OPAQUE = re.compile(r"[A-Za-z0-9+/=_%-]{32,}")


def _normal_host(host: str) -> str | None:
    host = host.strip().rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None


class HostList:
    """Hosts a URL may point at: ``example.com`` exactly, ``*.example.com`` its subdomains."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.suffixes: list[str] = []
        for entry in entries:
            wildcard = entry.startswith("*.")
            host = _normal_host(entry[2:] if wildcard else entry)
            if not host or "/" in host or ":" in host:
                raise ConfigError(
                    "An allowed host must be a host name such as 'docs.example.com' or "
                    "'*.example.com'.",
                    hint="Remove the scheme, port and path from the allowed_hosts entries.",
                )
            if wildcard:
                self.suffixes.append("." + host)
            else:
                self.exact.add(host)

    def __contains__(self, host: str) -> bool:
        return host in self.exact or any(host.endswith(s) for s in self.suffixes)


@dataclass(frozen=True)
class _Link:
    span: tuple[int, int]
    what: str  # "an image", "a link", "a URL", ...
    problem: str | None  # None: harmless


def _links(text: str, hosts: HostList, max_query: int, judge_hosts: bool = True) -> list[_Link]:
    from shipyard.security import pii  # lazily: pii.py is the heavier module

    references = {
        m.group(1).casefold()
        for m in re.finditer(r"!\[[^\[\]\n]{0,500}\]\[([^\[\]\n]{1,200})\]", text)
    }
    found: list[_Link] = []
    for match in _URL.finditer(text):
        url = match.group()
        start, end = match.span()
        if url.lower().startswith(("javascript:", "vbscript:")):
            found.append(_Link((start, end), "a script URL", "runs code when clicked"))
            continue
        while url and url[-1] in _TRAILING:
            url, end = url[:-1], end - 1
        what = _context(text[max(0, start - 600) : start], references)
        found.append(
            _Link((start, end), what, _url_problem(url, hosts, max_query, judge_hosts, pii))
        )
    return found


def _context(before: str, references: set[str]) -> str:
    """What the URL is, from the text just before it: an image is fetched with no click."""
    tail = before.rstrip(" <")
    if tail.endswith("]("):
        opening = before.rfind("[", 0, len(tail) - 2)
        return "an image" if opening > 0 and before[opening - 1] == "!" else "a link"
    if re.search(r"\bsrc(?:set)?\s*=\s*[\"']?$", tail[-40:], re.I):
        return "an image" if "<img" in tail[tail.rfind("<") :].lower() else "an embed"
    if re.search(r"\bhref\s*=\s*[\"']?$", tail[-40:], re.I):
        return "a link"
    ref = _REFERENCE_DEF.fullmatch(before[before.rfind("\n") + 1 :])
    if ref is not None:
        return "an image" if ref.group(1).casefold() in references else "a link"
    return "a URL"


def _url_problem(
    url: str, hosts: HostList, max_query: int, judge_hosts: bool, pii: Any
) -> str | None:
    target = url if "://" in url or url.startswith("//") else "https://" + url
    try:
        parts = urlsplit(target)
        host = _normal_host(parts.hostname or "")
    except ValueError:
        return "does not parse"
    if judge_hosts and (not host or host not in hosts):
        return "points to a host off the allowlist"
    query = unquote(parts.query + parts.fragment)
    if len(query) > max_query:
        return "carries a long query string"
    if _OPAQUE.search(query):
        return "carries an opaque token in its query"
    if pii.find(unquote(url)):
        return "carries personal data or a secret"
    return None


def _replace(text: str, spans: list[tuple[tuple[int, int], str]]) -> str:
    parts, position = [], 0
    for (start, end), label in sorted(spans):
        if start < position:
            continue  # overlaps a replaced span: that one already hid it
        parts += [text[position:start], label]
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if depth > 64:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item, depth + 1)


def _parse_arguments(arguments: Mapping[str, Any] | str) -> tuple[Mapping[str, Any] | None, str]:
    if isinstance(arguments, Mapping):
        return arguments, ""
    if not isinstance(arguments, str):
        return None, "arguments that are neither an object nor JSON text"
    if len(arguments) > MAX_ARGUMENT_CHARS:
        return None, "arguments over the size limit"

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):  # two parsers may keep different copies
            raise ValueError("duplicate key")
        return dict(pairs)

    def no_constant(_: str) -> Any:
        raise ValueError("NaN or Infinity")

    try:
        parsed = json.loads(arguments, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except (ValueError, RecursionError):
        return None, "arguments that are not valid JSON (or repeat a key, or hold NaN)"
    if not isinstance(parsed, dict):
        return None, "arguments that are not a JSON object"
    return parsed, ""


class Guardrails:
    """The checks of one deployment; see the module docstring."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        allowed_hosts: Iterable[str] = (),
        tools: Iterable[Tool] = (),
        approval: ApprovalHook | None = None,
        trusted_sources: Iterable[str] = (),
        detector: injection.Detector | None = None,
        on_violation: Callable[[str], None] | None = None,
    ) -> None:
        self.policy = policy or Policy()
        self.hosts = HostList(allowed_hosts)
        self.approval = approval
        self.trusted_sources = frozenset(trusted_sources)
        self.detector = detector
        self.on_violation = on_violation
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if not _SAFE_NAME.fullmatch(tool.name):
                raise ConfigError(
                    "A tool name must be 1 to 64 letters, digits, '_', '.' or '-'.",
                    hint="Rename the tool in the guardrails configuration.",
                )
            if tool.requires_approval and approval is None:
                raise ConfigError(
                    f"The tool {tool.name!r} requires approval but no approval hook is set.",
                    hint="Pass approval=... to Guardrails, or set requires_approval=False.",
                )
            names: frozenset[str] = frozenset()
            if tool.parameters is not None:
                check_schema(tool.parameters, tool.name)
                names = property_names(tool.parameters)
            self.tools[tool.name] = Tool(
                tool.name, tool.parameters, tool.requires_approval, tool.urls_allowed, names
            )

    # --- the four checks ---

    def check_input(self, text: str) -> Verdict:
        scan = injection.scan(
            _text(text),
            "input",
            detector=self.detector,
            threshold=self.policy.injection_threshold,
        )
        found = []
        if scan.suspicious:
            found.append(self._violation("prompt_injection", _signals_detail(scan)))
        return self._verdict(found)

    def check_output(self, text: str) -> Verdict:
        from shipyard.security import pii

        text = _text(text)
        found: list[Violation] = []
        replace: list[tuple[tuple[int, int], str]] = []
        for link in _links(text, self.hosts, self.policy.max_query_chars):
            if link.problem is not None:
                start = link.span[0]
                found.append(
                    self._violation(
                        "exfiltration", f"{link.what} that {link.problem} (at character {start})"
                    )
                )
                replace.append((link.span, "[URL REMOVED]"))
        for item in pii.find(text):
            kind = "secret" if item.kind == "secret" else "pii"
            found.append(
                self._violation(kind, f"{item.detector} at characters {item.start}-{item.end}")
            )
            replace.append((item.span, pii.LABELS.get(item.kind, "[REDACTED]")))
        return self._verdict(found, text=_replace(text, replace))

    def check_tool_call(self, name: str, arguments: Mapping[str, Any] | str) -> Verdict:
        tool = self.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            shown = repr(name) if isinstance(name, str) and _SAFE_NAME.fullmatch(name) else ""
            what = f"the tool {shown}" if shown else "a tool with a malformed name"
            return self._verdict([self._violation("tool_not_allowed", f"{what} is not allowed")])
        parsed, problem = _parse_arguments(arguments)
        if parsed is None:
            return self._verdict([self._violation("tool_arguments", problem)])
        found = [
            self._violation("tool_arguments", f"arguments{path}: fails '{keyword}'")
            for path, keyword in argument_errors(tool.parameters, parsed, tool._names)
        ]
        found += self._argument_content(tool, parsed)
        if self._worst(found) == "block" or not tool.requires_approval:
            return self._verdict(found)
        return self._verdict(found + self._approve(ToolCall(name, parsed)))

    def check_retrieval(self, chunks: Sequence[Chunk]) -> Verdict:
        found: list[Violation] = []
        kept: list[Chunk] = []
        for index, chunk in enumerate(chunks):
            problems = self._chunk_problems(index, chunk)
            found += problems
            if self._worst(problems) != "block":
                flags = tuple(v.kind for v in problems)
                kept.append(Chunk(chunk.text, chunk.provenance, chunk.flags + flags))
        return self._verdict(found, chunks=tuple(kept))

    # --- parts ---

    def _chunk_problems(self, index: int, chunk: Chunk) -> list[Violation]:
        where = f"chunk {index}"
        if not isinstance(chunk, Chunk) or not isinstance(chunk.text, str):
            return [self._violation("provenance", f"{where} is not a Chunk with text")]
        p = chunk.provenance
        if not (
            isinstance(p, Provenance)
            and isinstance(p.source, str)
            and p.source.strip()
            and isinstance(p.uri, str)
            and p.uri.strip()
            and isinstance(p.fetched_at, datetime)
        ):
            return [self._violation("provenance", f"{where} has incomplete provenance")]
        found = []
        if not isinstance(p.digest, str) or p.digest != digest(chunk.text):
            found.append(self._violation("provenance", f"{where}: its digest does not match"))
        if p.source not in self.trusted_sources:
            found.append(
                self._violation("untrusted_source", f"{where} comes from an untrusted source")
            )
        scan = injection.scan(
            chunk.text,
            "retrieved",
            detector=self.detector,
            threshold=self.policy.injection_threshold,
        )
        if scan.suspicious:
            found.append(
                self._violation("retrieval_injection", f"{where}: {_signals_detail(scan)}")
            )
        return found

    def _argument_content(self, tool: Tool, arguments: Mapping[str, Any]) -> list[Violation]:
        from shipyard.security import pii

        found: list[Violation] = []
        for text in _strings(arguments):
            for item in pii.find(text, kinds=("secret",)):
                found.append(self._violation("secret", f"{item.detector} in the arguments"))
            for link in _links(
                text, self.hosts, self.policy.max_query_chars, not tool.urls_allowed
            ):
                if link.problem is not None:
                    found.append(
                        self._violation(
                            "exfiltration", f"{link.what} in the arguments that {link.problem}"
                        )
                    )
        return found

    def _approve(self, call: ToolCall) -> list[Violation]:
        assert self.approval is not None  # checked in __init__ for tools that need it
        try:
            answer = self.approval(call)
        except Exception:
            log.exception("The tool approval hook failed; the call is denied.")
            answer = "deny"
        if answer == "approve":
            return []
        if answer == "pending":
            return [Violation("tool_approval_pending", "waiting for a human's approval", "block")]
        return [Violation("tool_approval_denied", "a human (or the hook) denied the call", "block")]

    def _violation(self, kind: str, detail: str) -> Violation:
        return Violation(kind, detail, getattr(self.policy, kind))

    @staticmethod
    def _worst(found: Sequence[Violation]) -> Action:
        return max((v.action for v in found), key=_RANK.__getitem__, default="allow")

    def _verdict(self, found: list[Violation], **extra: Any) -> Verdict:
        if self.on_violation is not None:
            for violation in found:
                try:
                    self.on_violation(violation.kind)
                except Exception:  # a broken counter must never break a request
                    log.exception("on_violation failed for %s", violation.kind)
        return Verdict(self._worst(found), tuple(found), **extra)


def _text(text: object) -> str:
    if not isinstance(text, str):
        raise ConfigError(
            f"Got a {type(text).__name__} for guardrails to check. Expected a str.",
            hint="Join chat messages into one string, or check each message.",
        )
    return text


def _signals_detail(scan: injection.InjectionScan) -> str:
    return f"signals {', '.join(scan.signals)} (score {scan.score:.2f})"
