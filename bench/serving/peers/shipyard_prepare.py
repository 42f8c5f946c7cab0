"""Package the benchmark model as a shipyard bundle and deploy it in a fresh home.

    python shipyard_prepare.py HOME MAX_BATCH

Runs in the main venv: `shipyard.package(...)` on the same trained pipeline, then the CLI's
`push` and `deploy bench --model bench:1 --max-batch MAX_BATCH`. `shipyard --home HOME serve
--port P bench` then serves POST /v1/deployments/bench/predict.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import train

import shipyard


def main() -> None:
    home, max_batch = Path(sys.argv[1]), sys.argv[2]
    cli = str(Path(sys.executable).with_name("shipyard"))
    model, X, y = train()
    bundle = home.parent / f"{home.name}-bundle"
    shipyard.package(model, bundle, name="bench", version="1", owner="Bench <bench@example.com>",
                     sample=X[:20], eval_data=(X, y), overwrite=True)
    for argv in (["push", str(bundle)],
                 ["deploy", "bench", "--model", "bench:1", "--max-batch", max_batch]):
        subprocess.run([cli, "--home", str(home), *argv], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
