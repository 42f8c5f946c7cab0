#!/usr/bin/env bash
# Create one virtual environment per peer server under $PEERS_DIR (default: a `peers` folder beside the repository),
# outside the repository, with pinned versions. scikit-learn (and, where the peer allows,
# numpy and the uvicorn stack) are pinned to the main venv's versions so that every server
# unpickles the same model with the same library.
#
#   bench/serving/setup_peers.sh [PEER ...]      (default: all peers)
#
# A finished venv holds a stamp file with the exact requirement list; a venv whose stamp
# matches is left alone, any other is rebuilt. Each peer's log is $PEERS_DIR/<peer>/install.log.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MAIN_PY="${MAIN_PY:-$ROOT/.venv/bin/python}"
PEERS_DIR="${PEERS_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/peers}"
BASE_PY="$("$MAIN_PY" -c 'import sys; print(sys._base_executable)')"

ver() { "$MAIN_PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
SKLEARN="scikit-learn==$(ver scikit-learn)"
NUMPY="numpy==$(ver numpy)"
SCIPY="scipy==$(ver scipy)"
JOBLIB="joblib==$(ver joblib)"
UVICORN="uvicorn[standard]==$(ver uvicorn) uvloop==$(ver uvloop) httptools==$(ver httptools)"
ORJSON="orjson==$(ver orjson)"

# Pinned peer versions (the newest installable from PyPI when the harness was written).
requirements() {
  case "$1" in
    floor)    echo "$UVICORN $ORJSON $SKLEARN $NUMPY $SCIPY $JOBLIB" ;;
    fastapi)  echo "fastapi==0.163.2 pydantic==$(ver pydantic) $UVICORN $ORJSON $SKLEARN $NUMPY $SCIPY $JOBLIB" ;;
    bentoml)  echo "bentoml==1.4.40 $SKLEARN $JOBLIB" ;;
    litserve) echo "litserve==0.2.19 $SKLEARN $JOBLIB" ;;
    # MLServer 1.7.1's inference-pool worker calls asyncio.get_event_loop() in a fresh
    # process, which uvloop >= 0.22 refuses ("There is no current event loop"): pin 0.21.
    mlserver) echo "mlserver==1.7.1 mlserver-sklearn==1.7.1 uvloop==0.21.0 $SKLEARN $JOBLIB" ;;
    mlflow)   echo "mlflow==3.17.2 $SKLEARN $JOBLIB" ;;
    *) echo "unknown peer: $1" >&2; return 2 ;;
  esac
}

setup_one() {
  local peer="$1" dir="$PEERS_DIR/$1" reqs stamp
  reqs="$(requirements "$peer")" || return 2
  stamp="$(printf '%s\n' "$BASE_PY" $reqs)"
  if [[ -f "$dir/venv/.shipyard-bench-stamp" && "$(cat "$dir/venv/.shipyard-bench-stamp")" == "$stamp" ]]; then
    echo "[$peer] up to date"; return 0
  fi
  echo "[$peer] installing: $reqs"
  rm -rf "$dir/venv"; mkdir -p "$dir"
  {
    "$BASE_PY" -m venv "$dir/venv" &&
    "$dir/venv/bin/python" -m pip install -q --disable-pip-version-check $reqs
  } >"$dir/install.log" 2>&1
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "[$peer] FAILED (exit $rc); last lines of $dir/install.log:"; tail -n 15 "$dir/install.log"
    return $rc
  fi
  # pip may have moved scikit-learn to satisfy the peer; refuse such a venv.
  local got; got="$("$dir/venv/bin/python" -c 'import sklearn; print(sklearn.__version__)' 2>&1)"
  if [[ "scikit-learn==$got" != "$SKLEARN" ]]; then
    echo "[$peer] FAILED: scikit-learn is $got, expected ${SKLEARN#*==}" | tee -a "$dir/install.log"; return 3
  fi
  printf '%s\n' "$stamp" >"$dir/venv/.shipyard-bench-stamp"
  echo "[$peer] ok"
}

peers=("$@"); [[ ${#peers[@]} -eq 0 ]] && peers=(floor fastapi bentoml litserve mlserver mlflow)
status=0
for p in "${peers[@]}"; do setup_one "$p" || status=1; done
exit $status
