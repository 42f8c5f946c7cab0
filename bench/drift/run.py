"""A drift report on 1,000,000 rows x 30 features: shipyard vs Evidently, same data, same run.

    .venv/bin/python bench/drift/run.py [--rows 1000000] [--reference-rows 1000000]
        [--features 30] [--shifted 3] [--repeats 3] [--skip-evidently]

The data: a reference and a current sample of `--features` normal features with different
means and scales; `--shifted` of them are moved by half a standard deviation in the current
sample, so both tools have something to find. Both sides get the very same arrays (written
once as .npy files).

- shipyard: the reference profile is built once, as `shipyard.package` does at packaging time
  (timed apart), then `drift_frame(profile, current)` is timed: sketching 1,000,000 rows
  (bins + KLL quantile sketches) and every statistic and decision. Median of --repeats, with
  the default threads (one per CPU) and with one thread.
- Evidently: `Report([DataDriftPreset()]).run(current, reference)` with its defaults, in its own
  virtual environment under $PEERS_DIR/evidently/venv (default: a `peers` folder beside the
  repository), created here when missing, with the main venv's NumPy, pandas, SciPy and
  scikit-learn versions pinned. Timed inside its process, imports and loading excluded.

Prints a table and writes bench/drift/results.md. Targets: shipyard's drift_frame <= 5 s and
>= 10x faster than Evidently. Exits 1 when a measured target is missed.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from shipyard.bundle.manifest import Profile
from shipyard.bundle.profile import numeric_profile
from shipyard.monitoring.drift import drift_frame

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "results.md"
# Outside the repository, so the peer virtual environment is never committed.
DEFAULT_PEERS_DIR = Path(__file__).resolve().parents[3] / "peers"
EVIDENTLY = "evidently==0.7.23"
PINNED_FROM_MAIN = ("numpy", "pandas", "scipy", "scikit-learn")
TARGET_SECONDS = 5.0
TARGET_RATIO = 10.0


def evidently_python(peers_dir: Path) -> Path:
    """Evidently's venv interpreter; (re)built when its stamp does not match the pins."""
    venv = peers_dir / "evidently" / "venv"
    python = venv / "bin" / "python"
    requirements = [EVIDENTLY] + [f"{n}=={metadata.version(n)}" for n in PINNED_FROM_MAIN]
    stamp_file = venv / ".shipyard-bench-stamp"
    stamp = "\n".join([sys._base_executable, *requirements])  # type: ignore[attr-defined]
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return python
    print(f"creating {venv} with {' '.join(requirements)} (a few minutes) ...", flush=True)
    log = peers_dir / "evidently" / "install.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        for argv in (
            [sys._base_executable, "-m", "venv", "--clear", str(venv)],  # type: ignore[attr-defined]
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             *requirements],
        ):
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise SystemExit(f"installing Evidently failed; see {log}")
    stamp_file.write_text(stamp)
    return python


def make_data(rows: int, reference_rows: int, features: int, shifted: int) -> tuple[
    np.ndarray, np.ndarray, list[str]
]:
    rng = np.random.default_rng(2024)
    means, scales = rng.uniform(-5, 5, features), rng.uniform(0.5, 20, features)
    reference = rng.standard_normal((reference_rows, features)) * scales + means
    current = rng.standard_normal((rows, features)) * scales + means
    moved = list(range(0, features, max(1, features // max(1, shifted))))[:shifted]
    current[:, moved] += 0.5 * scales[moved]
    return reference, current, [f"f{i}" for i in moved]


def run_shipyard(
    reference: np.ndarray, current: np.ndarray, repeats: int
) -> dict[str, object]:
    columns = [f"f{i}" for i in range(reference.shape[1])]
    started = time.perf_counter()
    profile = Profile(
        rows=len(reference),
        inputs={c: numeric_profile(reference[:, i]) for i, c in enumerate(columns)},
    )
    profile_s = time.perf_counter() - started
    frame = pd.DataFrame(current, columns=columns)
    timings: dict[str, list[float]] = {"threads": [], "one_thread": []}
    report = None
    for _ in range(repeats):
        for mode, workers in (("threads", None), ("one_thread", 1)):
            started = time.perf_counter()
            report = drift_frame(profile, frame, workers=workers)
            timings[mode].append(time.perf_counter() - started)
    assert report is not None
    return {
        "profile_s": profile_s,
        "drift_s": statistics.median(timings["threads"]),
        "drift_one_thread_s": statistics.median(timings["one_thread"]),
        "drifted": report.drifted,
    }


def run_evidently(python: Path, reference: np.ndarray, current: np.ndarray) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "reference.npy", Path(tmp) / "current.npy"]
        np.save(paths[0], reference)
        np.save(paths[1], current)
        env = {**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
        done = subprocess.run(
            [str(python), str(HERE / "evidently_side.py"), *map(str, paths)],
            capture_output=True, text=True, env=env,
        )
    if done.returncode:
        raise SystemExit(f"Evidently failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--shifted", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--peers-dir", type=Path,
                        default=Path(os.environ.get("PEERS_DIR", DEFAULT_PEERS_DIR)))
    args = parser.parse_args()

    python = None if args.skip_evidently else evidently_python(args.peers_dir)
    reference, current, moved = make_data(args.rows, args.reference_rows, args.features,
                                          args.shifted)
    ours = run_shipyard(reference, current, args.repeats)
    theirs = None if python is None else run_evidently(python, reference, current)

    drift_s = float(ours["drift_s"])  # type: ignore[arg-type]
    evidently_s = float(theirs["seconds"]) if theirs else None  # type: ignore[arg-type]
    ratio = evidently_s / drift_s if evidently_s else None
    profile_s = float(ours["profile_s"])  # type: ignore[arg-type]
    with_profile = evidently_s / (drift_s + profile_s) if evidently_s else None
    rows = [
        ("shipyard drift_frame (threads)", drift_s, ours["drifted"]),
        ("shipyard drift_frame (1 thread)", ours["drift_one_thread_s"], ours["drifted"]),
        ("shipyard profile build (once per version)", ours["profile_s"], None),
    ]
    if theirs:
        rows.append((f"Evidently {theirs['version']} DataDriftPreset", theirs["seconds"],
                     theirs["drifted"]))
    fast_enough = drift_s <= TARGET_SECONDS
    ratio_ok = ratio is None or ratio >= TARGET_RATIO
    lines = [
        "# Drift report: shipyard vs Evidently",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}. Command: "
        f"`.venv/bin/python bench/drift/run.py --rows {args.rows} --reference-rows "
        f"{args.reference_rows} --features {args.features} --shifted {args.shifted}`.",
        "",
        f"{args.rows:,} current rows x {args.features} features against {args.reference_rows:,} "
        f"reference rows; shifted by 0.5 sd: {', '.join(moved)}.",
        "",
        "| what | seconds | drifted columns |",
        "|---|---:|---|",
        *[f"| {name} | {float(s):.2f} | {'' if d is None else ', '.join(d) or 'none'} |"
          for name, s, d in rows],
        "",
        f"- shipyard drift_frame <= {TARGET_SECONDS:g} s: "
        f"{'met' if fast_enough else 'MISSED'} ({drift_s:.2f} s)",
        f"- >= {TARGET_RATIO:g}x faster than Evidently: " + (
            "not measured" if ratio is None else
            f"{'met' if ratio_ok else 'MISSED'} ({ratio:.1f}x)"
        ),
        *([] if with_profile is None else [
            f"- including shipyard's one-off profile build: {with_profile:.1f}x faster"
        ]),
        "",
        "shipyard's time covers sketching every row (bins and KLL quantiles) and every "
        "statistic (PSI, Jensen-Shannon, KS, with noise bounds and p-values); the profile is "
        "built once per model version at packaging time. Evidently's covers `Report.run` and "
        "`.dict()` (defaults: normed Wasserstein distance for numeric columns over 1,000 rows).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS_MD.write_text(text)
    return 0 if fast_enough and ratio_ok else 1


if __name__ == "__main__":
    sys.exit(main())
