"""conditioned-sep: one FiLM-conditioned U-Net that extracts whichever stem you name.

    >>> from conditioned_sep import Separator
    >>> sep = Separator.load("runs/default/conditioned/best.ckpt")
    >>> out = sep.separate("song.wav", stems=["vocals", "drums+bass"])  # {"vocals": tensor, "drums+bass": tensor}
"""

from .separator import Separator, load
from .stems import ALIASES, STEMS, StemQuery, UnknownStemError, parse_queries, parse_query

__version__ = "0.1.0"

__all__ = [
    "ALIASES", "STEMS", "Separator", "StemQuery", "UnknownStemError", "load", "parse_queries", "parse_query",
    "__version__",
]
