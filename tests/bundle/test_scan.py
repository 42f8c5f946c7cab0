"""Pickle-family artifacts: recognised by content, admitted only through the allowlist.

Every malicious payload here is real: `test_payloads_really_run_under_plain_pickle` loads each
one with plain `pickle.loads` in a child process and sees its trap go off. The matrix then
writes each payload into every container format, under its own and under a misleading file
extension, and checks that scanning and loading refuse it, name the global, and never trip
the trap.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import lzma
import os
import pickle
import runpy
import shutil
import subprocess
import sys
import textwrap
import webbrowser
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.bundle.allowlist import numpy_unpickler, refusal
from shipyard.bundle.scan import check_artifact, detect_format, load_pickle, scan_file
from shipyard.errors import BundleError, ShipyardError, UnsafeArtifactError

# ----------------------------------------------------------------------------------------
# Traps: what a payload does when it runs


@dataclass(frozen=True)
class Trap:
    """A marker file that must never appear and a folder that must never vanish."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / "pwned"

    @property
    def victim(self) -> Path:
        return self.root / "victim"

    def arm(self) -> Trap:
        self.victim.mkdir(parents=True, exist_ok=True)
        (self.victim / "keep.txt").write_text("keep")
        return self

    def tripped(self) -> bool:
        return self.marker.exists() or not self.victim.exists()

    @property
    def touch(self) -> str:
        return f"touch {self.marker}"


class _Reduce:
    """Pickles as `func(*args)`: the classic malicious __reduce__."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


# ----------------------------------------------------------------------------------------
# Hand-assembled opcode streams


def _u(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def _v(text: str) -> bytes:
    """UNICODE, the protocol-0 text string."""
    return b"V" + text.encode("raw_unicode_escape") + b"\n"


def _stream(proto: int, body: bytes) -> bytes:
    """A pickle: PROTO header for protocols 2+, then the body, then STOP."""
    return (bytes([0x80, proto]) if proto >= 2 else b"") + body + b"."


def _os_system_global(t: Trap) -> bytes:
    return b"cos\nsystem\n(" + _v(t.touch) + b"tR"


def _exec_global(t: Trap) -> bytes:
    return b"cbuiltins\nexec\n(" + _v(f"open({str(t.marker)!r}, 'w').close()") + b"tR"


def _getattr_chain(t: Trap) -> bytes:
    # getattr(__import__("os"), "system")("touch ...")
    return (
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(" + _v("os") + b"tR" + _v("system")
        + b"tR(" + _v(t.touch) + b"tR"
    )  # fmt: skip


def _attrgetter_chain(t: Trap) -> bytes:
    # operator.attrgetter("system")(__import__("os"))("touch ...")
    return (
        b"coperator\nattrgetter\n(" + _v("system") + b"tR(cbuiltins\n__import__\n("
        + _v("os") + b"tRtR(" + _v(t.touch) + b"tR"
    )  # fmt: skip


def _memo_indirection(t: Trap) -> bytes:
    # "os" and "system" are memoised and popped; "numpy" "ndarray" are the last two strings
    # pushed before STACK_GLOBAL, which takes its operands from BINGET instead.
    return (
        _u("os") + b"\x94" + _u("system") + b"\x94" + b"00"
        + _u("numpy") + _u("ndarray") + b"00"
        + b"h\x00h\x01\x93" + _u(t.touch) + b"\x85R"
    )  # fmt: skip


def _split_string_opcodes(t: Trap) -> bytes:
    # module through UNICODE (protocol 0), name through SHORT_BINSTRING (protocol 1)
    name = b"check_output"
    return (
        _v("subprocess") + b"U" + bytes([len(name)]) + name + b"\x93"
        + b"(](" + _v("touch") + _v(str(t.marker)) + b"etR"
    )  # fmt: skip


def _nested_text_pickle(t: Trap) -> bytes:
    inner = b"cos\nsystem\n(" + _v(t.touch) + b"tR."
    return b"cpickle\nloads\n(C" + bytes([len(inner)]) + inner + b"tR"


def _ufunc_gadget(t: Trap) -> bytes:
    # an allowed function that imports what its arguments name
    return (
        b"cnumpy.core\n_ufunc_reconstruct\n(" + _v("os") + _v("system") + b"tR("
        + _v(t.touch) + b"tR"
    )  # fmt: skip


def _reexport_in_allowed_package(t: Trap) -> bytes:
    # sklearn._config imports os: "os.system" walked from an allowed module (protocol 4+)
    return _u("sklearn._config") + _u("os.system") + b"\x93" + _u(t.touch) + b"\x85R"


# ----------------------------------------------------------------------------------------
# Payloads built from Python objects


def _scaler_with_hidden_call(t: Trap) -> Any:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(np.arange(12.0).reshape(6, 2))
    scaler.notes_ = _Reduce(os.system, t.touch)
    return {"scaler": scaler, "weights": np.linspace(0, 1, 7), "labels": np.array(["a", "b"])}


@dataclass(frozen=True)
class Payload:
    name: str
    refused: frozenset[str]  # the error names one of these
    body: Callable[[Trap], bytes] | None = None  # hand-assembled opcodes
    obj: Callable[[Trap], Any] | None = None  # or an object whose pickle is malicious

    def stream(self, trap: Trap, proto: int) -> bytes:
        if self.body is not None:
            return _stream(proto, self.body(trap))
        assert self.obj is not None
        return pickle.dumps(self.obj(trap), protocol=proto)


PAYLOADS = [
    Payload("os-system-global", frozenset({"os.system"}), body=_os_system_global),
    Payload("builtins-exec", frozenset({"builtins.exec"}), body=_exec_global),
    Payload("import-getattr-chain", frozenset({"builtins.getattr"}), body=_getattr_chain),
    Payload("operator-attrgetter", frozenset({"operator.attrgetter"}), body=_attrgetter_chain),
    Payload("memoize-binget-indirection", frozenset({"os.system"}), body=_memo_indirection),
    Payload(
        "split-string-opcodes", frozenset({"subprocess.check_output"}), body=_split_string_opcodes
    ),
    Payload("nested-protocol-0-pickle", frozenset({"pickle.loads"}), body=_nested_text_pickle),
    Payload("ufunc-reconstruct-gadget", frozenset({"os.system"}), body=_ufunc_gadget),
    Payload(
        "reexport-in-allowed-package",
        frozenset({"sklearn._config.os.system"}),
        body=_reexport_in_allowed_package,
    ),
    Payload(
        "posix-system-reduce",
        frozenset({"posix.system", "nt.system"}),
        obj=lambda t: _Reduce(os.system, t.touch),
    ),
    Payload(
        "subprocess-popen",
        frozenset({"subprocess.Popen"}),
        obj=lambda t: _Reduce(subprocess.Popen, ["touch", str(t.marker)]),
    ),
    Payload(
        "subprocess-check-output",
        frozenset({"subprocess.check_output"}),
        obj=lambda t: _Reduce(subprocess.check_output, ["touch", str(t.marker)]),
    ),
    Payload(
        "builtins-eval",
        frozenset({"builtins.eval"}),
        obj=lambda t: _Reduce(eval, f"__import__('os').system({t.touch!r})"),
    ),
    Payload(
        "runpy-run-code",
        frozenset({"runpy._run_code"}),
        obj=lambda t: _Reduce(runpy._run_code, f"open({str(t.marker)!r}, 'w').close()", {}),
    ),
    Payload(
        "webbrowser-open",
        frozenset({"webbrowser.open"}),
        obj=lambda t: _Reduce(webbrowser.open, str(t.marker)),
    ),
    Payload(
        "shutil-rmtree",
        frozenset({"shutil.rmtree"}),
        obj=lambda t: _Reduce(shutil.rmtree, str(t.victim)),
    ),
    Payload(
        "functools-partial-os-system",
        frozenset({"functools.partial"}),
        obj=lambda t: _Reduce(functools.partial(os.system, t.touch)),
    ),
    Payload(
        "hidden-in-fitted-sklearn-and-numpy",
        frozenset({"posix.system", "nt.system"}),
        obj=_scaler_with_hidden_call,
    ),
]


# ----------------------------------------------------------------------------------------
# Containers: every way a pickle reaches a loader


def _joblib_bytes(payload: Payload, trap: Trap, tmp: Path, compress: Any) -> bytes:
    if payload.obj is None:  # a joblib file is a pickle stream: compress it as joblib does
        raw = payload.stream(trap, 4)
        compressor = {
            0: lambda b: b,
            "zlib": zlib.compress,
            "gzip": gzip.compress,
            "bz2": bz2.compress,
            "lzma": lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE),
            "xz": lzma.compress,
        }[compress[0] if isinstance(compress, tuple) else compress]
        return compressor(raw)
    target = tmp / "joblib.tmp"
    joblib.dump(payload.obj(trap), target, compress=compress)
    return target.read_bytes()


def _torch_zip(payload: Payload, trap: Trap, tmp: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", payload.stream(trap, 2))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return buffer.getvalue()


def _torchscript_zip(payload: Payload, trap: Trap, tmp: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/code/__torch__.py", "class Model(Module):\n  pass\n")
        archive.writestr("model/data.pkl", payload.stream(trap, 2))
        archive.writestr("model/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("model/version", "3\n")
    return buffer.getvalue()


def _other_zip(payload: Payload, trap: Trap, tmp: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.md", "weights inside")
        archive.writestr("model/weights.bin", payload.stream(trap, 4))  # no .pkl name
    return buffer.getvalue()


def _npy_object(payload: Payload, trap: Trap, tmp: Path) -> bytes:
    """What np.load(allow_pickle=True) unpickles: an object-array header, then a pickle."""
    buffer = io.BytesIO()
    header = {"descr": "|O", "fortran_order": False, "shape": (1,)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + payload.stream(trap, 3)


def _npz_object(payload: Payload, trap: Trap, tmp: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("weights.npy", _npy_object(payload, trap, tmp))
    return buffer.getvalue()


def _torch_legacy(payload: Payload, trap: Trap, tmp: Path) -> bytes:
    if payload.obj is not None:
        torch = pytest.importorskip("torch")
        target = tmp / "legacy.tmp"
        obj = {"weight": torch.zeros(3), "extra": payload.obj(trap)}
        torch.save(obj, target, _use_new_zipfile_serialization=False)
        return target.read_bytes()
    header = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    parts = [pickle.dumps(part, protocol=2) for part in header]
    return b"".join([*parts, payload.stream(trap, 2), pickle.dumps([], protocol=2)])


def _torch_save(payload: Payload, trap: Trap, tmp: Path) -> bytes:
    if payload.obj is None:
        return _torch_zip(payload, trap, tmp)
    torch = pytest.importorskip("torch")
    target = tmp / "save.tmp"
    torch.save({"weight": torch.zeros(3), "extra": payload.obj(trap)}, target)
    return target.read_bytes()


Build = Callable[[Payload, Trap, Path], bytes]
CONTAINERS: dict[str, tuple[str, Build]] = {
    "pickle-p0": (".pkl", lambda p, t, d: p.stream(t, 0)),
    "pickle-p2": (".pkl", lambda p, t, d: p.stream(t, 2)),
    "pickle-p4": (".pkl", lambda p, t, d: p.stream(t, 4)),
    "pickle-p5": (".pkl", lambda p, t, d: p.stream(t, 5)),
    "joblib": (".joblib", lambda p, t, d: _joblib_bytes(p, t, d, 0)),
    "joblib-zlib": (".joblib.z", lambda p, t, d: _joblib_bytes(p, t, d, ("zlib", 3))),
    "joblib-gzip": (".joblib.gz", lambda p, t, d: _joblib_bytes(p, t, d, ("gzip", 3))),
    "joblib-bz2": (".joblib.bz2", lambda p, t, d: _joblib_bytes(p, t, d, ("bz2", 3))),
    "joblib-lzma": (".joblib.lzma", lambda p, t, d: _joblib_bytes(p, t, d, ("lzma", 3))),
    "joblib-xz": (".joblib.xz", lambda p, t, d: _joblib_bytes(p, t, d, ("xz", 3))),
    "torch-zip": (".pt", _torch_zip),
    "torch-save": (".pt", _torch_save),
    "torchscript-zip": (".pt", _torchscript_zip),
    "torch-legacy": (".pt", _torch_legacy),
    "zip-other-member": (".zip", _other_zip),
    "npy-object": (".npy", _npy_object),
    "npz-object": (".npz", _npz_object),
}
MISLEADING = (".json", ".onnx", ".txt")


def _cases() -> list[Any]:
    return [
        pytest.param(p, container, id=f"{p.name}-{container}")
        for p in PAYLOADS
        for container in CONTAINERS
    ]


@pytest.mark.parametrize(("payload", "container"), _cases())
def test_malicious_payload_is_refused_in_every_container(
    payload: Payload, container: str, tmp_path: Path
) -> None:
    trap = Trap(tmp_path / "trap").arm()
    natural, build = CONTAINERS[container]
    data = build(payload, trap, tmp_path)
    misleading = MISLEADING[list(CONTAINERS).index(container) % len(MISLEADING)]

    for ext in (natural, misleading):  # the extension never matters
        path = tmp_path / f"model{ext}"
        path.write_bytes(data)
        report = scan_file(path)
        assert not report.ok
        assert report.format is not None
        with pytest.raises(UnsafeArtifactError) as caught:
            check_artifact(path)
        assert caught.value.details["reference"] in payload.refused
        assert caught.value.details["reference"] in caught.value.message
        assert caught.value.details["file"] == str(path)
        with pytest.raises(ShipyardError):
            load_pickle(path)

    assert not trap.tripped()


# ----------------------------------------------------------------------------------------
# The payloads are real


def test_payloads_really_run_under_plain_pickle(tmp_path: Path) -> None:
    browser = tmp_path / "browser.sh"
    browser.write_text('#!/bin/sh\ntouch "$1"\n')
    browser.chmod(0o755)
    traps: dict[str, Trap] = {}
    files = []
    for payload in PAYLOADS:
        trap = traps[payload.name] = Trap(tmp_path / payload.name).arm()
        file = tmp_path / f"{payload.name}.pkl"
        file.write_bytes(payload.stream(trap, 4))
        files.append(str(file))
    runner = textwrap.dedent(
        """
        import pickle, sys
        for name in sys.argv[1:]:
            try:
                result = pickle.loads(open(name, "rb").read())
                if hasattr(result, "wait"):
                    result.wait()
            except Exception as exc:
                print(name, type(exc).__name__, exc)
        """
    )
    env = {**os.environ, "BROWSER": str(browser)}
    subprocess.run([sys.executable, "-c", runner, *files], env=env, check=True, timeout=60)

    assert [name for name, trap in traps.items() if not trap.tripped()] == []


def test_loader_alone_refuses_every_payload(tmp_path: Path) -> None:
    """Defense in depth: even without the scan, the unpickler imports nothing unlisted."""
    for payload in PAYLOADS:
        trap = Trap(tmp_path / payload.name).arm()
        for proto in (0, 2, 4):
            stream = io.BytesIO(payload.stream(trap, proto))
            with pytest.raises(UnsafeArtifactError):
                numpy_unpickler()("model.pkl", stream).load()
        assert not trap.tripped(), payload.name


def test_parse_differential_int_base_zero_is_refused(tmp_path: Path) -> None:
    """pickle reads I0x10 (base 0); pickletools does not. The scanner must not stop there."""
    trap = Trap(tmp_path / "trap").arm()
    data = b"I0x10\n0" + _os_system_global(trap) + b"."
    path = tmp_path / "notes.txt"
    path.write_bytes(data)

    with pytest.raises(UnsafeArtifactError):
        check_artifact(path)
    assert not trap.tripped()
    pickle.loads(data)  # and it is real
    assert trap.tripped()


def test_truncated_text_pickle_after_its_call_is_refused(tmp_path: Path) -> None:
    trap = Trap(tmp_path / "trap").arm()
    path = tmp_path / "readme.txt"
    path.write_bytes(_os_system_global(trap) + b"\x00garbage, no STOP")  # runs, then fails

    with pytest.raises(UnsafeArtifactError, match=r"os\.system"):
        check_artifact(path)
    assert not trap.tripped()


# ----------------------------------------------------------------------------------------
# Benign artifacts still load


@pytest.fixture(scope="module")
def pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.DataFrame(
        {"age": [20.0, 35, 50, 65, 30, 45], "city": ["a", "b", "a", "c", "b", "c"]}
    )
    columns = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    model = Pipeline([("columns", columns), ("clf", LogisticRegression())])
    return model.fit(frame, [0, 1, 0, 1, 1, 0]), frame


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("joblib", "joblib"),
        (("zlib", 3), "joblib"),
        (("gzip", 3), "joblib"),
        (("bz2", 3), "joblib"),
        (("lzma", 3), "joblib"),
        (("xz", 3), "joblib"),
        ("pickle-5", "pickle"),
        ("pickle-2", "pickle"),
        ("pickle-0", "pickle"),
    ],
)
def test_fitted_pipeline_passes_and_loads(
    pipeline: Any, how: Any, expected: str, tmp_path: Path
) -> None:
    model, frame = pipeline
    path = tmp_path / "model.bin"
    if isinstance(how, str) and how.startswith("pickle"):
        path.write_bytes(pickle.dumps(model, protocol=int(how[-1])))
    else:
        joblib.dump(model, path, compress=0 if how == "joblib" else how)

    check_artifact(path)
    assert detect_format(path) == expected
    assert "sklearn.pipeline.Pipeline" in scan_file(path).globals
    loaded = load_pickle(path)
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))


@pytest.mark.parametrize("kind", ["forest", "boosting"])
def test_tree_ensembles_pass_and_load(kind: str, tmp_path: Path) -> None:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    x, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
    model = (
        RandomForestClassifier(n_estimators=5, random_state=0)
        if kind == "forest"
        else GradientBoostingClassifier(n_estimators=5, random_state=0)
    ).fit(x, y)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)

    check_artifact(path)
    np.testing.assert_array_equal(load_pickle(path).predict(x), model.predict(x))


def test_numpy_and_pandas_pickles_pass_and_load(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.float32).reshape(4, 6)
    frame = pd.DataFrame(
        {
            "x": [1.5, 2.5],
            "s": ["a", "b"],
            "when": pd.to_datetime(["2024-01-01", "2024-02-01"]),
            "cat": pd.Categorical(["p", "q"]),
        }
    )
    cases = {
        "array.npk": pickle.dumps(array, protocol=5),
        "array-old.npk": pickle.dumps(array, protocol=2),
        "frame.pkl": pickle.dumps(frame, protocol=5),
    }
    joblib.dump({"a": array, "objects": np.array(["x", None], dtype=object)}, tmp_path / "j")
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)

    np.testing.assert_array_equal(load_pickle(tmp_path / "array.npk"), array)
    np.testing.assert_array_equal(load_pickle(tmp_path / "array-old.npk"), array)
    pd.testing.assert_frame_equal(load_pickle(tmp_path / "frame.pkl"), frame)
    loaded = load_pickle(tmp_path / "j")
    np.testing.assert_array_equal(loaded["a"], array)
    assert list(loaded["objects"]) == ["x", None]


def test_numpy_object_arrays_in_npy_and_npz_pass(tmp_path: Path) -> None:
    objects = np.array(["a", None, 3], dtype=object)
    (tmp_path / "objects.npy").write_bytes(_npy_bytes(objects))
    np.savez(tmp_path / "bundle.npz", objects=objects, numbers=np.arange(3))

    assert detect_format(tmp_path / "objects.npy") == "npy"
    assert detect_format(tmp_path / "bundle.npz") == "zip"
    check_artifact(tmp_path / "objects.npy")
    check_artifact(tmp_path / "bundle.npz")


def test_torch_state_dict_and_torchscript_pass(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    torch.save(net.state_dict(), tmp_path / "state.pt")
    torch.save(net.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.jit.save(torch.jit.script(net), tmp_path / "scripted.pt")

    for name, expected in [
        ("state.pt", "torch-zip"),
        ("legacy.pt", "torch-legacy"),
        ("scripted.pt", "torch-zip"),
    ]:
        check_artifact(tmp_path / name)
        assert detect_format(tmp_path / name) == expected
    with pytest.raises(BundleError, match="torch"):
        load_pickle(tmp_path / "state.pt")


# ----------------------------------------------------------------------------------------
# Non-pickles pass; broken pickles fail closed


def _safetensors(header_size: int) -> bytes:
    header = b'{"__metadata__":{}}'.ljust(header_size)
    return header_size.to_bytes(8, "little") + header + b"\x00" * 16


def _npy_bytes(array: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


NOT_PICKLES = {
    "config.json": b'{"threshold": 0.5, "labels": ["a", "b"]}',
    "model.onnx": b"\x08\x07\x12\x07pytorch\x1a\x052.1.0:\x8a\x01\n\x0e\n\x01x\x12\x01y",
    "model.safetensors": _safetensors(0x380),  # its first two bytes read as PROTO 3
    "model.ubj": b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner{",
    "model.txt": b"tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\n",
    "labels.txt": b"cat\ndog\nbird\n",
    "loader.py": b"class Loader:\n    pass\n",
    "data.csv": b"sepal_length,sepal_width\n5.1,3.5\n",
    "empty.bin": b"",
    "notes.gz": gzip.compress(b"just text\n"),
    "arrays.npy": _npy_bytes(np.arange(6.0).reshape(2, 3)),
}


@pytest.mark.parametrize("name", sorted(NOT_PICKLES))
def test_non_pickle_files_pass_with_no_format(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(NOT_PICKLES[name])

    assert detect_format(path) is None
    check_artifact(path)
    with pytest.raises(BundleError):
        load_pickle(path)


def _broken_cases(tmp: Path) -> dict[str, bytes]:
    good = pickle.dumps({"w": np.arange(10.0)}, protocol=4)
    joblib.dump({"w": np.arange(1000.0)}, tmp / "ok.joblib")
    joblib.dump({"w": np.arange(1000.0)}, tmp / "ok.gz", compress=("gzip", 3))
    duplicate = io.BytesIO()
    with zipfile.ZipFile(duplicate, "w") as archive:
        archive.writestr("m/data.pkl", pickle.dumps(1, protocol=2))
        with pytest.warns(UserWarning):
            archive.writestr("m/data.pkl", pickle.dumps(2, protocol=2))
    return {
        "truncated.pkl": good[: len(good) // 2],
        "random.bin": b"\x80\x04" + np.random.default_rng(7).bytes(300),
        "truncated.joblib": (tmp / "ok.joblib").read_bytes()[:-100],
        "truncated.gz": (tmp / "ok.gz").read_bytes()[:-40],
        "duplicate.pt": duplicate.getvalue(),
        "broken.zip": b"PK\x03\x04" + b"\x00" * 40,
    }


def test_broken_pickles_fail_closed(tmp_path: Path) -> None:
    for name, data in _broken_cases(tmp_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        report = scan_file(path)
        assert not report.ok and report.error, name
        with pytest.raises(UnsafeArtifactError, match="could not be scanned"):
            check_artifact(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x80\x04", b"\x80\x02"]))
def test_scan_never_raises_on_arbitrary_bytes(data: bytes, prefix: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "blob"
        path.write_bytes(prefix + data)
        report = scan_file(path)
    assert report.ok == (report.error is None and not report.refused)
    if prefix and report.ok:  # a PROTO header that passes must parse to STOP
        assert report.format == "pickle"


# ----------------------------------------------------------------------------------------
# The allowlist's edges


@pytest.mark.parametrize(
    ("module", "name", "admitted"),
    [
        ("sklearn.linear_model._logistic", "LogisticRegression", True),
        ("numpy", "ndarray", True),
        ("numpy", "log1p", True),  # a ufunc
        ("numpy._core.multiarray", "_reconstruct", True),
        ("pandas.core.frame", "DataFrame", True),
        ("numpy", "load", False),  # a function in an allowed package
        ("numpy", "memmap", False),  # a class that opens files
        ("numpy.testing", "TestCase", False),
        ("sklearn._config", "os", False),  # a module re-exported by an allowed one
        ("builtins", "getattr", False),
        ("builtins", "type", False),
        ("copyreg", "_reconstructor", True),
        ("functools", "partial", False),
        ("torch._utils", "_rebuild_tensor_v2", False),  # only inside torch archives
        ("__torch__", "Model", False),  # only inside TorchScript archives
    ],
)
def test_allowlist_decisions(module: str, name: str, admitted: bool) -> None:
    assert (refusal(module, name) is None) is admitted


def test_torch_and_torchscript_names_only_in_their_archives() -> None:
    assert refusal("torch._utils", "_rebuild_tensor_v2", torch=True) is None
    assert refusal("torch", "FloatStorage", torch=True) is None
    assert refusal("__torch__.model", "Net", torch=True) is not None
    assert refusal("__torch__.model", "Net", torch=True, torchscript=True) is None
    assert refusal("posix", "system", torch=True, torchscript=True) is not None


def test_build_on_an_allowed_class_is_refused(tmp_path: Path) -> None:
    """BUILD on a class itself would set attributes on it: monkeypatching by pickle."""
    path = tmp_path / "patch.pkl"
    path.write_bytes(_stream(4, _u("collections") + _u("OrderedDict") + b"\x93}b"))

    with pytest.raises(UnsafeArtifactError, match="BUILD"):
        check_artifact(path)


def test_error_follows_the_house_style(tmp_path: Path) -> None:
    trap = Trap(tmp_path / "trap").arm()
    path = tmp_path / "model.json"
    path.write_bytes(PAYLOADS[0].stream(trap, 2))

    with pytest.raises(UnsafeArtifactError) as caught:
        check_artifact(path)
    error = caught.value
    assert error.message.startswith("Got global 'os.system' in pickle file 'model.json'")
    assert "Expected" in error.message and error.hint
    assert error.to_dict()["error"]["details"] == {"file": str(path), "reference": "os.system"}
    assert error.status == 400 and error.code == "unsafe_artifact"
