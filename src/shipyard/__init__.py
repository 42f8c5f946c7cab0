"""shipyard: take a trained model to production and keep it there.

The public API is this module's `__all__`; a test guards it. Everything is imported lazily so
that `import shipyard` stays light and never imports a machine-learning framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from shipyard.api import check, finish, init, load, package, pull, push
    from shipyard.bundle.manifest import Manifest
    from shipyard.errors import ShipyardError
    from shipyard.registry.registry import Registry
    from shipyard.runtimes.model import Model
    from shipyard.settings import Settings

_EXPORTS = {
    "package": "shipyard.api",
    "finish": "shipyard.api",
    "init": "shipyard.api",
    "check": "shipyard.api",
    "push": "shipyard.api",
    "pull": "shipyard.api",
    "load": "shipyard.api",
    "Manifest": "shipyard.bundle.manifest",
    "Model": "shipyard.runtimes.model",
    "Registry": "shipyard.registry.registry",
    "Settings": "shipyard.settings",
    "ShipyardError": "shipyard.errors",
}

__all__ = [
    "Manifest",
    "Model",
    "Registry",
    "Settings",
    "ShipyardError",
    "__version__",
    "check",
    "finish",
    "init",
    "load",
    "package",
    "pull",
    "push",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
