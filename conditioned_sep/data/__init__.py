"""Training and evaluation data: stem folders (MUSDB18-HQ layout), MUSDB18, MoisesDB, the rendered default, the
synthetic songs, stem vocabularies (:mod:`.vocabulary`), sampling.

musdb / stempeg are imported lazily inside :mod:`conditioned_sep.data.musdb` (they need ffmpeg at import).
"""

from .folder import DatasetError, Track, list_tracks, read_track
from .synthetic import SyntheticConfig, default_data_root, ensure_synthetic_dataset
from .vocabulary import VocabularyTrack, load_references, with_vocabulary

__all__ = ["DatasetError", "SyntheticConfig", "Track", "VocabularyTrack", "default_data_root",
           "ensure_synthetic_dataset", "list_tracks", "load_references", "read_track",
           "with_vocabulary"]
