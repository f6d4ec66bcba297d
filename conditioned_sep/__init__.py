"""conditioned-sep: one FiLM-conditioned network that extracts whichever stem you name.

    >>> from conditioned_sep import Separator
    >>> sep = Separator.load("runs/default/conditioned/best.ckpt")
    >>> out = sep.separate("song.wav", stems=["vocals", "drums+bass"])  # {"vocals": tensor, "drums+bass": tensor}

Importing the package is cheap: the public names load their modules (and torch) on first use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("conditioned-sep")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_PUBLIC = {
    "Separator": "separator", "load": "separator",
    "ALIASES": "stems", "STEMS": "stems", "StemQuery": "stems", "UnknownStemError": "stems",
    "parse_queries": "stems", "parse_query": "stems",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    """Load a public name's module on first use (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'conditioned_sep' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
