"""The globals a pickle-family artifact may import, and why each one is safe.

A pickle runs code by importing a global and calling it, so the safe question is "is every
global on a short list of things known to be harmless?", never "is some global on a list of
known-bad things?": denylists miss the next gadget (scanners that list `os.system` still pass
`runpy._run_code`, `operator.attrgetter` chains or a re-export under an innocent module).

Three tiers decide a global, in this order:

1. `ALLOWED_GLOBALS`: exact names of functions and objects that real scikit-learn, NumPy,
   pandas and joblib files need (array and index rebuilders, Cython unpicklers, builtins
   containers). Functions are admitted only by exact name.
2. Classes under `CLASS_PACKAGES` (scikit-learn, NumPy, SciPy sparse, pandas internals): the
   global is imported and must be a class defined under an allowed package (not a function,
   not a metaclass, not a re-export of something defined elsewhere, not under
   `DENIED_PACKAGES`). Calling such a class only builds an estimator, array or frame.
3. Format-specific names: PyTorch rebuild helpers, storages and dtypes inside torch
   archives only, and TorchScript's `__torch__.*` classes only inside TorchScript archives.

`DENIED_REASONS` never admits anything; it only explains a refusal in the error message.

The same decision guards loading: `numpy_unpickler()` is joblib's reader with `find_class`
limited to the allowlist, calls limited to the globals it imported, and BUILD refused on
classes and functions, so nothing outside the list is imported even if a scan were wrong.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import importlib.util
import pickle
import re
import types
import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

from shipyard.errors import UnsafeArtifactError

ALLOWED_GLOBALS: frozenset[str] = frozenset(
    {
        # builtins that pickle itself emits for containers and empty bytes
        *(
            f"builtins.{name}"
            for name in [
                "set",
                "frozenset",
                "slice",
                "complex",
                "bytearray",
                "bytes",
                "range",
                "object",
                "list",
                "dict",
                "tuple",
                "int",
                "float",
                "bool",
                "str",
            ]
        ),
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "_codecs.encode",  # bytes in protocols 0-2; the scanner checks it only encodes latin1
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.deque",
        "collections.Counter",
        *(f"datetime.{name}" for name in ("datetime", "date", "time", "timedelta", "timezone")),
        "zoneinfo.ZoneInfo",
        "zoneinfo.ZoneInfo._unpickle",
        "pytz._p",
        "pytz._UTC",
        # NumPy arrays, scalars, masked arrays and random generators (numpy 1.x and 2.x names)
        *(
            f"numpy.{core}.{name}"
            for core in ("core", "_core")
            for name in (
                "multiarray._reconstruct",
                "multiarray.scalar",
                "numeric._frombuffer",
                "_ufunc_reconstruct",
            )
        ),
        "numpy._core._DType_reconstruct",
        "numpy.ma.core._mareconstruct",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        # pandas frames, indexes and scalars
        "pandas.core.indexes.base._new_Index",
        "pandas.core.indexes.datetimes._new_DatetimeIndex",
        "pandas.core.indexes.interval._new_IntervalIndex",
        "pandas.core.indexes.period._new_PeriodIndex",
        "pandas.core.internals.blocks.new_block",
        "pandas._libs.internals._unpickle_block",
        "pandas._libs.tslibs.timestamps._unpickle_timestamp",
        "pandas._libs.tslibs.timedeltas._timedelta_unpickle",
        "pandas._libs.tslibs.nattype.__nat_unpickle",
        "pandas._libs.missing.NA",
        # scikit-learn: Cython tree/metric constructors and score functions stored as params
        "sklearn.metrics._dist_metrics.newObj",
        "sklearn.neighbors._kd_tree.newObj",
        "sklearn.neighbors._ball_tree.newObj",
        *(
            f"sklearn.feature_selection._univariate_selection.{name}"
            for name in ("f_classif", "f_regression", "r_regression", "chi2", "f_oneway")
        ),
        "sklearn.feature_selection._mutual_info.mutual_info_classif",
        "sklearn.feature_selection._mutual_info.mutual_info_regression",
        # joblib's placeholder for an array whose bytes follow in the file
        "joblib.numpy_pickle.NumpyArrayWrapper",
    }
)

# `_ufunc_reconstruct(module, name)` imports any module and returns any attribute: the
# scanner and the loader check its arguments as if they were a global of their own.
UFUNC_RECONSTRUCTORS: frozenset[str] = frozenset(
    {"numpy.core._ufunc_reconstruct", "numpy._core._ufunc_reconstruct"}
)
UFUNC_PACKAGES: tuple[str, ...] = ("numpy", "scipy.special")

CLASS_PACKAGES: tuple[str, ...] = (
    "sklearn",
    "numpy",
    "scipy.sparse",
    "pandas.core",
    "pandas._libs.arrays",
    "pandas._libs.internals",
    "pandas._libs.interval",
    "pandas._libs.lib",
    "pandas._libs.missing",
    "pandas._libs.sparse",
    "pandas._libs.tslibs",
)

# Classes here touch files, wrap arbitrary callables or belong to test tooling.
DENIED_PACKAGES: tuple[str, ...] = (
    "numpy.ctypeslib",
    "numpy.distutils",
    "numpy.f2py",
    "numpy.lib._datasource",
    "numpy.lib._npyio_impl",
    "numpy.lib.format",
    "numpy.lib.npyio",
    "numpy.testing",
    "numpy._pytesttester",
    "pandas.core.computation",
    "scipy.sparse.linalg",
    "sklearn.datasets",
    "sklearn.experimental",
    "sklearn.externals",
    "sklearn.utils._joblib",
    "sklearn.utils._mocking",
    "sklearn.utils._show_versions",
    "sklearn.utils._testing",
    "sklearn.utils.estimator_checks",
    "sklearn.utils.parallel",
)
DENIED_CLASS_NAMES: frozenset[str] = frozenset(
    {"numpy.memmap", "numpy.vectorize", "numpy.lib._function_base_impl.vectorize"}
)

TORCH_GLOBALS: frozenset[str] = frozenset(
    {
        *(
            f"torch._utils._rebuild_{name}"
            for name in [
                "tensor",
                "tensor_v2",
                "tensor_v3",
                "parameter",
                "parameter_with_state",
                "sparse_tensor",
                "nested_tensor",
                "meta_tensor_no_storage",
                "device_tensor_from_numpy",
                "device_tensor_from_cpu_tensor",
                "qtensor",
                "wrapper_subclass",
            ]
        ),
        "torch._tensor._rebuild_from_type_v2",
        "torch.serialization._get_layout",
        "torch.Size",
        "torch.device",
        "torch.Tensor",
        "torch.nn.parameter.Parameter",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
    }
)
TORCH_STORAGE = re.compile(r"[A-Z][A-Za-z0-9]*Storage")
TORCHSCRIPT_GLOBALS: frozenset[str] = frozenset(
    f"torch.jit._pickle.{name}"
    for name in [
        "build_intlist",
        "build_tensorlist",
        "build_doublelist",
        "build_boollist",
        "build_tensor_from_id",
        "restore_type_tag",
    ]
)
TORCHSCRIPT_PACKAGE = "__torch__"

# Explanations only: anything not admitted above is refused whether or not it is listed here.
DENIED_REASONS: dict[str, str] = {
    **dict.fromkeys(("os", "posix", "nt", "subprocess", "pty", "commands"), "it runs commands"),
    **dict.fromkeys(
        (
            "importlib",
            "runpy",
            "pickle",
            "_pickle",
            "marshal",
            "code",
            "codeop",
            "ctypes",
            "cloudpickle",
            "dill",
            "joblib",
            "torch",
            "pydoc",
            "imp",
            "pkgutil",
        ),
        "it imports, loads or runs other code",
    ),
    **dict.fromkeys(
        ("functools", "operator", "types", "copyreg", "itertools", "inspect"),
        "it builds callables that reach any attribute (getattr chains)",
    ),
    **dict.fromkeys(
        ("shutil", "tempfile", "io", "pathlib", "glob"), "it reads, writes or deletes files"
    ),
    **dict.fromkeys(
        ("socket", "webbrowser", "urllib", "http", "requests", "smtplib", "ftplib"),
        "it opens network connections or programs",
    ),
    **dict.fromkeys(
        ("sys", "gc", "signal", "threading", "multiprocessing"), "it controls the interpreter"
    ),
}
_DANGEROUS_BUILTINS = frozenset(
    [
        "eval",
        "exec",
        "compile",
        "open",
        "getattr",
        "setattr",
        "delattr",
        "__import__",
        "globals",
        "locals",
        "vars",
        "input",
        "breakpoint",
        "help",
        "exit",
        "quit",
        "memoryview",
        "type",
        "super",
        "classmethod",
        "staticmethod",
        "property",
    ]
)

HINT = (
    "Do not load this file. If you made it, save the model again from trusted code without "
    "custom classes or functions, or export it to ONNX, safetensors or XGBoost JSON."
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def under(module: str, packages: tuple[str, ...]) -> bool:
    """True when `module` is one of `packages` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in packages)


def refusal(
    module: str, name: str, *, torch: bool = False, torchscript: bool = False
) -> str | None:
    """Why `module.name` may not be imported; None when the allowlist admits it."""
    return _refusal(module, name, torch, torchscript)


@lru_cache(maxsize=4096)
def _refusal(module: str, name: str, torch: bool, torchscript: bool) -> str | None:
    full = f"{module}.{name}"
    if not (_IDENTIFIER.fullmatch(module) and _IDENTIFIER.fullmatch(name)):
        return "it is not a valid dotted name"
    if torchscript and (full in TORCHSCRIPT_GLOBALS or under(module, (TORCHSCRIPT_PACKAGE,))):
        return None  # resolved against the archive's own TorchScript code, not imported
    if any(part.startswith("__") and part.endswith("__") for part in name.split(".")):
        return "it reaches a dunder attribute"
    if full in ALLOWED_GLOBALS:
        return None
    if torch and (full in TORCH_GLOBALS or _is_torch_constant(module, name)):
        return None
    if under(module, CLASS_PACKAGES + UFUNC_PACKAGES) and not under(module, DENIED_PACKAGES):
        return _verify(module, name)
    return _explain(module, name)


def _explain(module: str, name: str) -> str:
    top = module.split(".")[0]
    if top in ("builtins", "__builtin__") and name in _DANGEROUS_BUILTINS:
        return "it is not on the allowlist: it evaluates code or reaches any attribute"
    reason = DENIED_REASONS.get(top, "it is not a known-safe class or function")
    return f"it is not on the allowlist: {reason}"


def _verify(module: str, name: str) -> str | None:
    """Import an allowed-package global and check it is what its name promises."""
    try:
        obj = resolve(module, name)
    except Exception as exc:  # noqa: BLE001 - cannot verify means refuse (fail closed)
        return f"it could not be imported to verify it ({type(exc).__name__})"
    if f"{module}.{name}" in DENIED_CLASS_NAMES:
        return "it is not on the allowlist: it touches files or wraps arbitrary callables"
    if under(module, UFUNC_PACKAGES) and _is_ufunc(obj):
        return None
    if _is_cython_unpickler(obj, module, name):
        return None
    if not isinstance(obj, type):
        return "it is a function or object, and only classes and listed functions are allowed"
    if issubclass(obj, type):
        return "it is a metaclass: calling it makes new classes"
    owner = getattr(obj, "__module__", None) or ""
    if not under(owner, CLASS_PACKAGES) or under(owner, DENIED_PACKAGES):
        return f"it is a re-export of {owner}.{obj.__qualname__}, which is not allowed"
    if any(issubclass(obj, bad) for bad in _denied_bases()):
        return "it is not on the allowlist: it touches files or wraps arbitrary callables"
    return None


def _is_cython_unpickler(obj: Any, module: str, name: str) -> bool:
    """Cython's generated `__pyx_unpickle_X(type, checksum, state)`: checks type, sets state."""
    return (
        name.startswith("__pyx_unpickle_")
        and type(obj).__name__ in ("builtin_function_or_method", "cython_function_or_method")
        and getattr(obj, "__name__", None) == name
        and getattr(obj, "__module__", None) == module  # defined here, not a re-export
    )


def resolve(module: str, name: str) -> Any:
    """Import `module` and walk the dotted `name`, as pickle does from protocol 4."""
    if module == "numpy.core" or module.startswith("numpy.core."):
        module = _numpy_core(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    return obj


def _numpy_core(module: str) -> str:
    """numpy 2 renamed numpy.core to numpy._core; old pickles still name the shim."""
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        return "numpy._core" + module[len("numpy.core") :]
    return module


def _is_ufunc(obj: Any) -> bool:
    import numpy

    return isinstance(obj, numpy.ufunc)


@lru_cache(maxsize=1)
def _denied_bases() -> tuple[type, ...]:
    import numpy

    return (numpy.memmap, numpy.vectorize)


def _is_torch_constant(module: str, name: str) -> bool:
    """torch.float32, torch.strided, torch.FloatStorage... as pickled inside torch archives."""
    if module != "torch" or "." in name:
        return False
    if TORCH_STORAGE.fullmatch(name):
        return True
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        torch = importlib.import_module("torch")
        obj = getattr(torch, name)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, (torch.dtype, torch.layout, torch.memory_format))


def ufunc_refusal(module: object, name: object) -> str | None:
    """Check the arguments of `_ufunc_reconstruct`: they must name a NumPy or SciPy ufunc."""
    if not (isinstance(module, str) and isinstance(name, str)):
        return "its arguments are not plain strings"
    if not (_IDENTIFIER.fullmatch(module) and _IDENTIFIER.fullmatch(name)):
        return "it is not a valid dotted name"
    if not under(module, UFUNC_PACKAGES) or under(module, DENIED_PACKAGES):
        return _explain(module, name)
    try:
        obj = resolve(module, name)
    except Exception as exc:  # noqa: BLE001 - cannot verify means refuse (fail closed)
        return f"it could not be imported to verify it ({type(exc).__name__})"
    return None if _is_ufunc(obj) else "it is not a ufunc"


def python3_name(module: str, name: str, proto: int) -> tuple[str, str]:
    """The name pickle really imports: protocols 0-2 map Python 2 names (fix_imports)."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def _cap(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------------------
# Loading: the same allowlist enforced by find_class, by every call and by BUILD, so nothing
# outside it is imported even if a scan were wrong.


def _admit(unpickler: Any, module: str, name: str) -> Any:
    module, name = python3_name(module, name, unpickler.proto)
    full = f"{module}.{name}"
    reason = refusal(module, name)
    if reason:
        raise _unsafe_load(full, reason)
    found = _checked_ufunc_reconstruct if full in UFUNC_RECONSTRUCTORS else resolve(module, name)
    unpickler.callables[id(found)] = found  # the dict keeps it alive, so ids stay unique
    return found


def _checked_ufunc_reconstruct(module: Any, name: Any) -> Any:
    reason = ufunc_refusal(module, name)
    if reason:
        raise _unsafe_load(f"{module}.{name}", reason)
    return resolve(module, name)


def _unsafe_load(name: str, reason: str) -> UnsafeArtifactError:
    return UnsafeArtifactError(
        f"Got global {_cap(name)!r} while loading a pickle: {reason}. Expected only "
        "allowlisted globals.",
        hint=HINT,
        reference=_cap(name),
    )


def _load_reduce(unpickler: Any) -> None:
    stack = unpickler.stack
    args = stack.pop()
    if id(stack[-1]) not in unpickler.callables:
        raise _unsafe_load("<computed callable>", "the pickle calls a value it built itself")
    stack[-1] = stack[-1](*args)


def _instantiate(unpickler: Any, klass: Any, args: Any) -> None:
    if id(klass) not in unpickler.callables:
        raise _unsafe_load("<computed class>", "the pickle instantiates a value it built itself")
    _BASE_INSTANTIATE(unpickler, klass, args)


def _check_build(unpickler: Any) -> None:
    target = unpickler.stack[-2]
    if id(target) in unpickler.callables or isinstance(
        target, type | types.FunctionType | types.BuiltinFunctionType | types.ModuleType
    ):
        raise _unsafe_load(str(getattr(target, "__name__", "?")), "BUILD would edit a global")


_BASE_BUILD = cast(Any, pickle._Unpickler.dispatch[pickle.BUILD[0]])
_BASE_INSTANTIATE = cast(Any, pickle._Unpickler)._instantiate


def _load_build(unpickler: Any) -> None:
    _check_build(unpickler)
    _BASE_BUILD(unpickler)


class _AllowlistUnpickler(pickle._Unpickler):
    """Plain pickle reader for joblib's nested object arrays."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.BUILD[0]] = _load_build

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.callables: dict[int, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        return _admit(self, module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise _unsafe_load("<persistent id>", "plain pickle files never need persistent_load")

    def _instantiate(self, klass: Any, args: Any) -> None:
        _instantiate(self, klass, args)


@lru_cache(maxsize=1)
def numpy_unpickler() -> Callable[[str, Any], Any]:
    """joblib's reader (array bytes after each wrapper) with the allowlist built in."""
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class _AllowlistNumpyUnpickler(NumpyUnpickler):
        dispatch = dict(NumpyUnpickler.dispatch)

        def __init__(self, filename: str, stream: Any) -> None:
            super().__init__(filename, stream, True)
            self.callables: dict[int, Any] = {}

        def find_class(self, module: str, name: str) -> Any:
            return _admit(self, module, name)

        def persistent_load(self, pid: Any) -> Any:
            raise _unsafe_load("<persistent id>", "joblib files never need persistent_load")

        def _instantiate(self, klass: Any, args: Any) -> None:
            _instantiate(self, klass, args)

        def load_build(self) -> None:
            _check_build(self)
            _BASE_BUILD(self)
            if isinstance(self.stack[-1], NumpyArrayWrapper):
                wrapper = self.stack.pop()
                if wrapper.dtype.hasobject:  # older joblib reads these with plain pickle.load
                    array = _AllowlistUnpickler(self.file_handle).load()
                else:
                    array = wrapper.read(self, self.ensure_native_byte_order)
                self.stack.append(array)

        dispatch[pickle.BUILD[0]] = load_build
        dispatch[pickle.REDUCE[0]] = _load_reduce

    return _AllowlistNumpyUnpickler
