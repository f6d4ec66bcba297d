"""Training and evaluation data: stem folders (MUSDB18-HQ layout), MUSDB18, the synthetic default, sampling.

musdb / stempeg are imported lazily inside :mod:`conditioned_sep.data.musdb` (they need ffmpeg at import).
"""

from .folder import DatasetError, Track, list_tracks, read_track
from .synthetic import SyntheticConfig, default_data_root, ensure_default_dataset

__all__ = ["DatasetError", "SyntheticConfig", "Track", "default_data_root", "ensure_default_dataset",
           "list_tracks", "read_track"]
