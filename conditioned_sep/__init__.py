"""conditioned-sep: one FiLM-conditioned U-Net that extracts whichever stem you name.

    >>> from conditioned_sep import Separator
    >>> stems = Separator.load("runs/default/best.ckpt").separate("song.wav", stems=["vocals", "drums+bass"])
"""

from .stems import ALIASES, STEMS, StemQuery, UnknownStemError, parse_queries, parse_query

__version__ = "0.1.0"

__all__ = ["ALIASES", "STEMS", "StemQuery", "UnknownStemError", "parse_queries", "parse_query", "__version__"]

try:  # the Separator lands with the model; keep the package importable while it is being built
    from .separator import Separator, load  # noqa: F401

    __all__ += ["Separator", "load"]
except ImportError:  # pragma: no cover
    pass
