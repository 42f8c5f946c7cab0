"""`shipyard` and `python -m shipyard`: the command line, with the cyclic collector paused
while its libraries are imported.

An import allocates objects that live until exit; the collector's passes over them during
start-up find nothing to free and cost a tenth of a second. `serve` keeps it paused until its
models are loaded (see `OnlineApp`); every other command runs with it on.
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    try:
        from shipyard.cli import main as cli_main
    finally:
        gc.enable()
    cli_main()


if __name__ == "__main__":
    main()
