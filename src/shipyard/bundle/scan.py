"""Artifact scanning: pickle-family files admitted only through an allowlist of globals.

A pickle is a program: loading it imports globals and calls them, so a model file can run
`os.system` (MLflow CVE-2024-37052..37060, BentoML CVE-2025-27520). Listing bad globals is
not enough, because the next gadget is never on the list; so every global a file imports must
be on the allowlist in `shipyard.bundle.allowlist`, and anything the scanner cannot decide is
refused (fail closed).

Files are recognised by content, never by extension: pickle streams of any protocol (0 and 1
have no magic number), joblib files (raw array bytes between pickle opcodes; zlib, gzip, bz2,
xz, lzma or lz4 compressed), PyTorch zip archives (every pickle inside, TorchScript
included), the legacy `torch.save` format, NumPy object arrays in .npy and .npz files (which
`np.load(allow_pickle=True)` unpickles), and any zip that holds pickles.

The scanner never unpickles. It runs a symbolic pickle machine over `pickletools.genops`: a
stack and memo of plain values, so the operands of STACK_GLOBAL are known even when they come
through MEMOIZE/BINGET or different string opcodes, and joblib's array bytes are skipped by
the exact size the array header declares. `load_pickle` then loads through an unpickler whose
`find_class` admits the same allowlist, so nothing outside it is imported even if a scan were
wrong. A joblib file's verdict holds for joblib-aware readers (`load_pickle`, `joblib.load`):
plain `pickle.load` would read the array bytes as opcodes, so never use it on joblib files.
"""

from __future__ import annotations

import ast
import bz2
import functools
import gzip
import importlib.util
import io
import lzma
import pickletools
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from shipyard.bundle.allowlist import HINT, numpy_unpickler
from shipyard.bundle.pickle_machine import (
    CHUNK,
    PLAIN,
    TORCH,
    Context,
    Findings,
    Machine,
    Reader,
    Stream,
    Undecidable,
    short,
)
from shipyard.errors import BundleError, ShipyardError, UnsafeArtifactError

__all__ = ["ScanReport", "check_artifact", "detect_format", "load_pickle", "scan_file"]

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", "_pkl")
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"
_NPY_MAX_HEADER = 1 << 20
# joblib picks a decompressor by prefix alone, in this order; so does the scanner
_COMPRESSORS = (
    (b"ZF", "zfile"),
    (b"x", "zlib"),
    (b"\x1f\x8b", "gzip"),
    (b"BZ", "bz2"),
    (b"\x5d\x00", "lzma"),
    (b"\xfd7zXZ", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
)
_STORAGE_ENTRY = re.compile(r"[^/]+/data/[^/]+")


@dataclass
class ScanReport:
    """What a scan found: `ok` only when nothing was refused and nothing went wrong."""

    format: str | None
    globals: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.refused


def detect_format(path: Path) -> str | None:
    """By content: 'pickle', 'joblib', 'torch-zip', 'torch-legacy', 'npy' (object array),
    'zip' (holding pickles) or None for a file no loader would unpickle."""
    return scan_file(path).format


def scan_file(path: Path) -> ScanReport:
    """Scan `path` without loading it. Never raises for bad content: errors refuse the file."""
    report = ScanReport(format=None)
    try:
        _examine(Path(path), report)
    except Exception as exc:  # noqa: BLE001 - fail closed: a scan that breaks refuses the file
        report.error = short(f"{type(exc).__name__}: {exc}")
    return report


def check_artifact(path: Path) -> None:
    """Raise UnsafeArtifactError if `path` is a pickle-family file reaching a non-allowed global."""
    _raise_unless_ok(Path(path), scan_file(path))


def load_pickle(path: Path) -> Any:
    """Load a pickle or joblib file through the allowlist unpickler, after scanning it."""
    path = Path(path)
    report = scan_file(path)
    if report.format not in ("pickle", "joblib"):
        raise BundleError(
            f"Got a {report.format or 'non-pickle'} file {path.name!r} for load_pickle. "
            "Expected a pickle or joblib file.",
            hint="Load PyTorch files with torch.load(weights_only=True) in the torch runtime, "
            "and other formats with their own runtime.",
            file=str(path),
        )
    _raise_unless_ok(path, report)
    compressor = _compressor(_head(path))
    opener = functools.partial(_decompress, path, compressor) if compressor else _raw(path)
    with closing(opener()) as stream:
        try:
            return numpy_unpickler()(str(path), stream).load()
        except ShipyardError:
            raise
        except Exception as exc:
            raise BundleError(
                f"Got an unreadable {report.format} file {path.name!r} "
                f"({short(f'{type(exc).__name__}: {exc}')}). Expected a file saved by "
                "pickle or joblib with the libraries installed here.",
                hint="Check the scikit-learn, NumPy and pandas versions match the ones that "
                "saved the model.",
                file=str(path),
            ) from exc


def _raise_unless_ok(path: Path, report: ScanReport) -> None:
    if report.ok:
        return
    kind = report.format or "unrecognised"
    if report.refused:
        name, reason = report.refused[0]
        raise UnsafeArtifactError(
            f"Got global {short(name)!r} in {kind} file {path.name!r}: {reason}. Expected only "
            "allowlisted globals (scikit-learn, NumPy, SciPy sparse, pandas, PyTorch tensors).",
            hint=HINT,
            file=str(path),
            reference=short(name),
        )
    raise UnsafeArtifactError(
        f"Got a {kind} file {path.name!r} that could not be scanned ({report.error}). "
        "Expected a complete, well-formed file: what the scanner cannot read is refused.",
        hint="Save and package the model again; a truncated or corrupted copy fails this way.",
        file=str(path),
    )


# ----------------------------------------------------------------------------------------
# Which interpretations a loader could give the file, and the scan of each


_Opener = Callable[[], Stream]


def _examine(path: Path, report: ScanReport) -> None:
    head = _head(path)
    if head.startswith(_ZIP_MAGIC):  # torch also decides zip-or-not by the first bytes
        _scan_zip(path, report)
        return
    if head.startswith(_NPY_MAGIC):  # object arrays are pickled after the header
        offset = _npy_pickle_offset(_raw(path))
        if offset is not None:
            report.format = "npy"
            _scan_stream(_skipping(_raw(path), offset), report, PLAIN, must=True)
        return
    size = path.stat().st_size
    compressor = _compressor(head)
    if compressor == "zfile" and re.fullmatch(rb"0x[0-9a-f]+ *", head[2:21]):
        report.format = "joblib"
        raise Undecidable("joblib's pre-0.10 'ZF' format is not supported")
    if compressor == "lz4" and importlib.util.find_spec("lz4") is None:
        report.format = "joblib"
        raise Undecidable("the file is lz4-compressed and lz4 is not installed")
    if compressor not in (None, "zfile"):
        opener = functools.partial(_decompress, path, compressor)
        if _scan_stream(opener, report, PLAIN, joblib=True, where=f"{compressor} stream"):
            report.format = "joblib"
    # A prefix can be both a compressor's and an opcode ("BZ"): read the raw bytes as well.
    if _is_torch_legacy(head):
        report.format = report.format or "torch-legacy"
        _scan_stream(_raw(path), report, TORCH, count=5, size=size, must=True)
    else:
        # PROTO first: a pickle, so any error refuses it. A safetensors header may start
        # with the same two bytes; its next byte is no opcode, so no loader runs anything.
        must = head[:1] == b"\x80" and head[1:2] <= b"\x05" and not _is_safetensors(head, size)
        if _scan_stream(_raw(path), report, PLAIN, joblib=True, size=size, must=must):
            report.format = report.format or ("joblib" if _saw_wrapper(report) else "pickle")
    if len(head) > 262 and head[257:262] == b"ustar" and _tar_has_pickle(path):
        report.format = report.format or "torch-legacy"
        raise Undecidable("the pre-1.6 tar format of torch.save is not supported")


def _scan_stream(
    opener: _Opener,
    report: ScanReport,
    ctx: Context,
    *,
    joblib: bool = False,
    count: int = 1,
    size: int | None = None,
    must: bool = False,
    where: str = "",
) -> bool:
    """Run the machine over one stream; False when it is not a pickle for any loader."""
    findings = Findings()
    try:
        with closing(opener()) as stream:
            reader = Reader(stream, size)
            for _ in range(count):
                Machine(reader, findings, ctx, joblib=joblib).run()
    except Exception as exc:  # noqa: BLE001 - classified below, then fail closed
        natural = not isinstance(exc, Undecidable | MemoryError | RecursionError)
        if natural and not must and not findings.hazard:
            return False  # it fails where every loader fails, before anything was imported
        findings.error = f"{where + ': ' if where else ''}{type(exc).__name__}: {exc}"
    _merge(findings, report, where)
    return True


def _scan_zip(path: Path, report: ScanReport) -> None:
    report.format = "zip"
    with zipfile.ZipFile(path) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise Undecidable("the archive lists an entry twice; loaders disagree on which")
        torch = any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)
        scripted = torch and any(n.startswith("code/") or "/code/" in n for n in names)
        ctx = Context(torch=torch, torchscript=scripted, persistent=torch)
        found = False
        for info in infos:
            opener: _Opener = functools.partial(archive.open, info)
            joblib = not torch
            if not info.filename.lower().endswith(PICKLE_SUFFIXES):
                if torch and _STORAGE_ENTRY.fullmatch(info.filename):
                    continue  # raw tensor bytes, never unpickled
                with archive.open(info) as member:
                    start = member.read(2)
                if start == _NPY_MAGIC[:2]:  # .npz: np.load(allow_pickle=True) unpickles
                    offset = _npy_pickle_offset(opener)
                    if offset is None:
                        continue
                    opener, joblib = _skipping(opener, offset), False
                elif not (len(start) == 2 and start[0] == 0x80 and start[1] <= 5):
                    continue
            found = True
            _scan_stream(opener, report, ctx, joblib=joblib, must=True, where=info.filename)
        report.format = "torch-zip" if torch else ("zip" if found else None)


def _merge(findings: Findings, report: ScanReport, where: str) -> None:
    tail = f" (in {where})" if where else ""
    report.globals.extend(g for g in findings.globals if g not in report.globals)
    report.refused.extend((name, reason + tail) for name, reason in findings.refused)
    if findings.error and report.error is None:
        report.error = short(findings.error)


def _head(path: Path, size: int = 512) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def _raw(path: Path) -> _Opener:
    def opener() -> Stream:
        return open(path, "rb")

    return opener


def _compressor(head: bytes) -> str | None:
    return next((name for prefix, name in _COMPRESSORS if head.startswith(prefix)), None)


def _decompress(path: Path, compressor: str | None) -> Stream:
    if compressor == "gzip":
        return gzip.open(path, "rb")
    if compressor == "bz2":
        return bz2.open(path, "rb")
    if compressor in ("xz", "lzma"):
        return lzma.open(path, "rb")
    if compressor == "zlib":
        return io.BufferedReader(_ZlibRaw(open(path, "rb")))
    if compressor == "lz4":
        lz4_frame = importlib.import_module("lz4.frame")
        return cast(Stream, lz4_frame.open(path, "rb"))
    raise Undecidable(f"no decompressor for {compressor}")


class _ZlibRaw(io.RawIOBase):
    """Streaming zlib reader (joblib's .z files), bounded output per read."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj()
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            if self._inflate.eof:
                return 0
            data = self._inflate.unconsumed_tail or self._raw.read(CHUNK)
            if not data:
                raise EOFError("compressed stream ended before its end marker")
            self._buffer = self._inflate.decompress(data, CHUNK)
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size

    def close(self) -> None:
        self._raw.close()
        super().close()


def _is_torch_legacy(head: bytes) -> bool:
    """torch.save's legacy format starts with a pickle of one magic number."""
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(head[:64])):
            if op.name in ("LONG1", "LONG4", "LONG", "INT") and arg == TORCH_LEGACY_MAGIC:
                return True
            if op.name not in ("PROTO", "FRAME"):
                return False
    except ValueError:
        return False
    return False


def _npy_pickle_offset(opener: _Opener) -> int | None:
    """Where the pickle of an object array starts in a .npy file; None for plain arrays."""
    with closing(opener()) as stream:
        start = stream.read(12)
        if not start.startswith(_NPY_MAGIC) or len(start) < 10:
            return None
        wide = start[6] >= 2  # format 2.0 and 3.0 use a 4-byte header length
        length = int.from_bytes(start[8:12] if wide else start[8:10], "little")
        offset = (12 if wide else 10) + length
        if length > _NPY_MAX_HEADER:
            raise Undecidable("the .npy header is over the scan limit")
        header = (start + stream.read(offset - len(start)))[offset - length : offset]
    import numpy.lib.format

    try:
        descr = ast.literal_eval(header.decode("latin1"))["descr"]
        has_objects = numpy.lib.format.descr_to_dtype(descr).hasobject
    except (ValueError, TypeError, KeyError, SyntaxError) as exc:
        raise Undecidable(f"the .npy header cannot be read ({type(exc).__name__})") from exc
    return offset if has_objects else None


def _skipping(opener: _Opener, offset: int) -> _Opener:
    def open_after() -> Stream:
        stream = opener()
        stream.read(offset)
        return stream

    return open_after


def _is_safetensors(head: bytes, size: int) -> bool:
    return len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") + 8 <= size


def _saw_wrapper(report: ScanReport) -> bool:
    return "joblib.numpy_pickle.NumpyArrayWrapper" in report.globals


def _tar_has_pickle(path: Path) -> bool:
    try:
        with tarfile.open(path) as archive:
            return "pickle" in archive.getnames()
    except (tarfile.TarError, OSError):
        return False
