"""The web dashboard at /ui: one self-contained page (no external scripts or fonts).

It reads the same JSON the CLI reads (`/v1/deployments`, `/v1/deployments/NAME/monitor`) and
draws its plots as SVG in the browser; every value is set as text, never parsed as HTML.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def page() -> bytes:
    return files("shipyard.serving").joinpath("ui.html").read_bytes()
