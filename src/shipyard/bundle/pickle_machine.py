"""A symbolic pickle machine: pickle's stack and memo over plain values, importing nothing.

Reading opcodes one by one (`pickletools.genops`) is not enough to know which global a
STACK_GLOBAL imports: its operands are whatever the stack holds, and a file can route them
through MEMOIZE/BINGET, DUP or different string opcodes. This machine keeps the stack, the
mark stack and the memo as plain Python values, so every import is named exactly, and a value
it cannot know (a call's result) makes the import undecidable, which refuses the file.

It also reads joblib's layout: after the BUILD of a `NumpyArrayWrapper` joblib reads the array
bytes straight from the file (or a nested pickle for object arrays), so the machine skips
exactly the number of bytes the header declares, as joblib does.
"""

from __future__ import annotations

import importlib.util
import math
import pickletools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, cast

from shipyard.bundle.allowlist import (
    UFUNC_RECONSTRUCTORS,
    python3_name,
    refusal,
    ufunc_refusal,
)

CHUNK = 1 << 20
MAX_READ = 1 << 32  # one pickle value above 4 GiB is refused rather than held in memory
MAX_LINE = 1 << 30
_DTYPE_CODE = re.compile(r"[<>|=]?[A-Za-z][A-Za-z0-9]*(\[[A-Za-z0-9]+\])?")


class Stream(Protocol):
    """The part of a binary file the scanner uses."""

    def read(self, size: int = ..., /) -> bytes: ...
    def readline(self, size: int = ..., /) -> bytes: ...
    def close(self) -> None: ...


class Undecidable(Exception):
    """The scanner cannot tell what a loader would do here, so the file is refused."""


@dataclass(frozen=True)
class Context:
    """Where a pickle lives: torch archives admit torch globals and persistent ids."""

    torch: bool = False
    torchscript: bool = False
    persistent: bool = False


PLAIN = Context()
TORCH = Context(torch=True, persistent=True)


def short(text: str, limit: int = 200) -> str:
    """Names come from the file: cap them before they reach a message or a log."""
    return text if len(text) <= limit else text[:limit] + "..."


class Reader:
    """The file as genops sees it: bounded reads and lines, and the last opcode byte."""

    def __init__(self, stream: Stream, size: int | None, max_read: int = MAX_READ) -> None:
        self._stream = stream
        self._left = size
        self._max = max_read
        self._want_opcode = False
        self.opcode = b""
        self.line = b""

    def expect_opcode(self) -> None:
        self._want_opcode = True
        self.opcode = b""

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._max:
            raise Undecidable(f"a value of {n} bytes is over the scan limit of {self._max}")
        if self._left is not None:
            n = min(n, self._left)  # a short file: genops reports it, nothing is allocated
        chunks = []
        while n > 0 and (chunk := self._stream.read(min(n, CHUNK))):
            chunks.append(chunk)
            n -= len(chunk)
        return self._seen(b"".join(chunks))

    def readline(self) -> bytes:
        line = self._stream.readline(MAX_LINE)
        if len(line) >= MAX_LINE and not line.endswith(b"\n"):
            raise Undecidable("a text line is over the scan limit")
        self.line = line
        return self._seen(line)

    def skip(self, n: int) -> None:
        while n > 0:
            chunk = self._stream.read(min(n, CHUNK))
            if not chunk:
                raise EOFError("array bytes end before the size their header declares")
            n -= len(self._seen(chunk))

    def _seen(self, data: bytes) -> bytes:
        if self._want_opcode and data:
            self.opcode, self._want_opcode = data[:1], False
        if self._left is not None:
            self._left -= len(data)
        return data


@dataclass(frozen=True)
class _Global:
    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


class _Obj:
    """An object the machine does not model: a call's result, a persistent id, a big value."""

    def __init__(self, origin: _Global | None = None, *, init: bool = True) -> None:
        self.origin = origin
        self.init = init  # True when the class's __init__ ran on call arguments
        self.attrs: dict[Any, Any] = {}


_WRAPPER = _Global("joblib.numpy_pickle", "NumpyArrayWrapper")
_NDARRAY = _Global("numpy", "ndarray")
_DTYPE = _Global("numpy", "dtype")
_OBJECT = _Global("builtins", "object")
_FIRST_ARG_IMPORTED = frozenset(
    {
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "torch._tensor._rebuild_from_type_v2",
        "torch._utils._rebuild_wrapper_subclass",
    }
)
_VALUE_OPS = frozenset(
    [
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "FLOAT",
        "BINFLOAT",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "UNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
    ]
)
_FIXED_OPS: dict[str, Any] = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_EMPTY: dict[str, Callable[[], Any]] = {
    "EMPTY_LIST": list,
    "EMPTY_DICT": dict,
    "EMPTY_SET": set,
    "EMPTY_TUPLE": tuple,
}


@dataclass
class Findings:
    """Globals seen and refused in one stream, and whether any import was attempted."""

    suffix: str = ""
    globals: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    hazard: bool = False  # an import was attempted: the stream is a pickle to some loader

    def note(self, name: str) -> None:
        if name not in self.globals:
            self.globals.append(name)

    def refuse(self, name: str, reason: str) -> None:
        entry = (name, reason + self.suffix)
        if entry not in self.refused:
            self.refused.append(entry)


class Machine:
    """Pickle's stack machine over plain values: it imports and calls nothing."""

    def __init__(self, reader: Reader, findings: Findings, ctx: Context, *, joblib: bool) -> None:
        self.reader = reader
        self.findings = findings
        self.ctx = ctx
        self.joblib = joblib
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0

    def run(self) -> None:
        ops = pickletools.genops(cast(Any, self.reader))
        while True:
            self.reader.expect_opcode()
            try:
                op, arg, _ = next(ops)
            except ValueError as exc:
                if self._loader_may_differ(exc):
                    raise Undecidable(f"pickle's own reader may accept this: {exc}") from exc
                raise
            if self._step(op.name, arg):
                return

    def _loader_may_differ(self, exc: ValueError) -> bool:
        """genops parses INT/LONG in base 10 and STRING as ASCII; loaders are laxer."""
        code, line = self.reader.opcode, self.reader.line.strip().rstrip(b"L")
        if code == b"S":
            return isinstance(exc, UnicodeDecodeError)
        if code in (b"I", b"L"):
            try:
                int(line, 0)
            except ValueError:
                return False
            return True
        return False

    def _pop_mark(self) -> list[Any]:
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _step(self, name: str, arg: Any) -> bool:
        stack = self.stack
        if name in _VALUE_OPS:
            stack.append(arg if not isinstance(arg, bytes) or len(arg) <= 4096 else _Obj())
        elif name in _FIXED_OPS:
            stack.append(_FIXED_OPS[name])
        elif name == "PROTO":
            self.proto = arg
        elif name == "STOP":
            stack.pop()
            return True
        elif name == "MARK":
            self.metastack.append(stack)
            self.stack = []
        elif name == "POP":
            if stack:
                stack.pop()
            else:
                self._pop_mark()
        elif name == "POP_MARK":
            self._pop_mark()
        elif name == "DUP":
            stack.append(stack[-1])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(self.memo[arg])
        elif name in ("GLOBAL", "INST"):
            self._global_op(name, arg)
        elif name == "STACK_GLOBAL":
            self._stack_global()
        elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "BUILD"):
            self._call_op(name)
        else:
            self._container_op(name)
        return False

    def _container_op(self, name: str) -> None:
        stack = self.stack
        if name in _EMPTY:
            stack.append(_EMPTY[name]())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            size = int(name[-1])
            if len(stack) < size:
                raise IndexError("unpickling stack underflow")
            stack[-size:] = [tuple(stack[-size:])]
        elif name in ("LIST", "TUPLE", "DICT", "FROZENSET"):
            items = self._pop_mark()
            if name == "DICT":
                if len(items) % 2:
                    raise ValueError("odd number of items for DICT")
                self.stack.append(dict(zip(items[::2], items[1::2], strict=True)))
            else:
                self.stack.append({"LIST": list, "TUPLE": tuple}.get(name, frozenset)(items))
        elif name == "APPEND":
            value = stack.pop()
            if isinstance(stack[-1], list):
                stack[-1].append(value)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            if isinstance(stack[-1], dict):
                stack[-1][key] = value
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            items = self._pop_mark()
            target = self.stack[-1]
            if name == "APPENDS" and isinstance(target, list):
                target.extend(items)
            elif name == "SETITEMS" and isinstance(target, dict):
                for i in range(0, len(items), 2):
                    target[items[i]] = items[i + 1]
            elif name == "ADDITEMS" and isinstance(target, set):
                target.update(items)
        elif name == "BYTEARRAY8":
            stack.append(_Obj())
        elif name in ("PERSID", "BINPERSID"):
            if name == "BINPERSID":
                stack.pop()
            if not self.ctx.persistent:
                self._refuse_op(name, "it asks the loader for an outside object (persistent_load)")
            self.stack.append(_Obj())
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.findings.hazard = True
            self._refuse_op(name, "it imports through copyreg's extension registry")
            stack.append(_Obj())
        elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
            self._refuse_op(name, "it needs out-of-band buffers")
            if name == "NEXT_BUFFER":
                stack.append(_Obj())
        elif name != "FRAME":
            raise Undecidable(f"opcode {name} is not modelled by the scanner")

    # --- imports ---

    def _global_op(self, name: str, arg: Any) -> None:
        # genops joins the two lines with a space; a name holding a space is not importable
        # whichever way it splits, and the allowlist refuses it as not a dotted name
        module, _, attribute = str(arg).partition(" ")
        found = self._import(module, attribute)
        if name == "INST":
            self._pop_mark()
            self.stack.append(_Obj(found))
        else:
            self.stack.append(found)

    def _stack_global(self) -> None:
        name, module = self.stack.pop(), self.stack.pop()
        if type(name) is str and type(module) is str:
            self.stack.append(self._import(module, name))
            return
        if not (isinstance(name, _Obj) or isinstance(module, _Obj)):
            raise TypeError("STACK_GLOBAL requires str")  # pickle fails here too
        self.findings.hazard = True
        self._refuse_op("STACK_GLOBAL", "its operands are computed, so the global is unknown")
        self.stack.append(_Obj())

    def _import(self, module: str, name: str) -> _Global:
        module, name = python3_name(module, name, self.proto)
        found = _Global(module, name)
        self.findings.note(str(found))
        reason = refusal(module, name, torch=self.ctx.torch, torchscript=self.ctx.torchscript)
        if reason:
            self.findings.refuse(str(found), reason)
        if _findable(module.split(".")[0]):
            self.findings.hazard = True
        return found

    # --- calls ---

    def _call_op(self, name: str) -> None:
        stack = self.stack
        if name == "REDUCE":
            args = stack.pop()
            stack[-1] = self._call(stack[-1], args, name)
        elif name in ("NEWOBJ", "NEWOBJ_EX"):
            if name == "NEWOBJ_EX":
                stack.pop()
            stack.pop()
            stack[-1] = self._new(stack[-1], name)
        elif name == "OBJ":
            items = self._pop_mark()
            self.stack.append(self._call(items[0], tuple(items[1:]), name))
        else:
            state = stack.pop()
            self._build(stack[-1], state)

    def _call(self, func: Any, args: Any, op: str) -> Any:
        if not isinstance(func, _Global):
            self._refuse_op(op, "it calls a value built inside the pickle, not a named global")
            return _Obj()
        full = str(func)
        args = args if isinstance(args, tuple) else ()
        if full in UFUNC_RECONSTRUCTORS:
            target = ".".join(str(a) for a in args[:2]) if len(args) == 2 else full
            self.findings.note(target)
            reason = ufunc_refusal(*args) if len(args) == 2 else "it needs two arguments"
            if reason:
                self.findings.refuse(target, reason)
        elif full == "_codecs.encode":
            if not (len(args) == 2 and type(args[0]) is str and args[1] in ("latin1", "latin-1")):
                self.findings.refuse(full, "only the latin1 encoding of a string is allowed")
        elif full == "numpy.dtype":
            return _dtype(args)
        elif full in _FIRST_ARG_IMPORTED:
            if not (args and isinstance(args[0], _Global)):
                self.findings.refuse(full, "its first argument must be a global named directly")
            elif full.startswith("copyreg."):  # cls.__new__ only, unless a base's __init__
                fresh = full != "copyreg._reconstructor" or args[1:2] == (_OBJECT,)
                return _Obj(args[0], init=not fresh)
        return _Obj(func)

    def _new(self, cls: Any, op: str) -> Any:
        if not isinstance(cls, _Global):
            self._refuse_op(op, "it instantiates a value built inside the pickle")
            return _Obj()
        return _Obj(cls, init=False)

    def _build(self, target: Any, state: Any) -> None:
        if isinstance(target, _Global):
            self._refuse_op("BUILD", f"it sets attributes on {short(str(target))} itself")
        elif isinstance(target, _Obj) and target.origin == _WRAPPER and self.joblib:
            self._joblib_array(target, state)
        elif _is_dtype(target):
            try:
                target.__setstate__(state)
            except (TypeError, ValueError):
                self.stack[-1] = _Obj(_DTYPE)

    def _joblib_array(self, wrapper: _Obj, state: Any) -> None:
        """Skip the array bytes joblib wrote after this header, exactly as joblib reads them."""
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state, None)
        for part in parts:
            if isinstance(part, dict):
                wrapper.attrs.update(part)
            elif part is not None:
                raise Undecidable("a joblib array header is not a dict")
        shape: Any = wrapper.attrs.get("shape")
        dtype: Any = wrapper.attrs.get("dtype")
        if wrapper.init or not _is_dtype(dtype):
            raise Undecidable("a joblib array header cannot be read")
        if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
            raise Undecidable("a joblib array shape cannot be read")
        if dtype.hasobject:  # joblib pickles object arrays as a nested stream
            Machine(self.reader, self.findings, self.ctx, joblib=False).run()
        else:
            if wrapper.attrs.get("numpy_array_alignment_bytes") is not None:
                padding = self.reader.read(1)
                self.reader.skip(padding[0] if padding else 0)
            self.reader.skip(math.prod(shape) * dtype.itemsize)
        self.stack[-1] = _Obj(_NDARRAY)

    def _refuse_op(self, op: str, reason: str) -> None:
        self.findings.refuse(f"opcode {op}", reason)


def _dtype(args: tuple[Any, ...]) -> Any:
    """Evaluate numpy.dtype for plain type codes: joblib needs the item size to skip bytes."""
    if (
        len(args) == 3
        and type(args[0]) is str
        and _DTYPE_CODE.fullmatch(args[0])
        and type(args[1]) is bool
        and args[2] is True  # copy=True: a fresh dtype, so BUILD never edits numpy's own
    ):
        import numpy

        try:
            return numpy.dtype(args[0], args[1], True)
        except (TypeError, ValueError):
            pass
    return _Obj(_DTYPE)


def _is_dtype(value: Any) -> bool:
    if type(value).__module__.split(".")[0] != "numpy":
        return False
    import numpy

    return isinstance(value, numpy.dtype)


@lru_cache(maxsize=1024)
def _findable(top: str) -> bool:
    """Could `import top` succeed here? Unknown modules stop every loader before any code."""
    if top in sys.builtin_module_names or top in sys.modules:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return True
