"""The rendered dataset: songs of sampled instruments and recorded-voice singing, written once in MUSDB18-HQ's
layout (plus the parts ``other`` is made of) and cached.

Layout of ``<root>/<split>/<song>/`` (splits train, valid, test)::

    vocals.flac drums.flac bass.flac other.flac mixture.flac   always (silence where the song has no such part)
    piano.flac guitar.flac keys.flac strings.flac winds.flac synth.flac   the parts of ``other`` the song has
    song.mid    the multitrack MIDI the stems were played from (one track per part, lyrics included)
    song.json   tempo, key, chords, sections, and each part's instrument, soundfont preset or singer

Audio is 44.1 kHz stereo 16-bit FLAC (lossless): ``other`` is the sample-exact sum of its parts and ``mixture`` of
the four coarse stems, as read back. ``<root>/manifest.json`` (written last) records seed, sizes and tool versions.

    python -m conditioned_sep.data.render [ROOT]     # generate (or find) the dataset
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...audio import write_audio
from ...fileio import atomic_write_text
from ...stems import FINE_STEMS, STEMS
from ..cache import SongJob, SongSetConfig, cache_root, ensure_cached, make_songs
from . import tools
from .compose import ComposeConfig
from .drumkits import KITS, load_kit
from .song import RenderedSong, render_song

FORMAT = "conditioned-sep rendered"
FORMAT_VERSION = 1
SUFFIX = ".flac"
REQUIRED = tuple(f"{stem}{SUFFIX}" for stem in (*STEMS, "mixture")) + ("song.mid", "song.json")


@dataclass(frozen=True)
class RenderConfig(SongSetConfig):
    """Songs per split and their length in seconds (160 x 12 s train, 12 x 12 s valid, 14 x 15 s test)."""


def default_render_root() -> Path:
    """Cache folder of the rendered dataset: ``rendered-v<version>`` under ``$CONDITIONED_SEP_DATA`` if set, else
    under ``~/.cache/conditioned-sep`` (a new version never reuses an old cache)."""
    return cache_root(f"rendered-v{FORMAT_VERSION}")


LATER_COMPOSE_FIELDS = ("opl3",)
"""ComposeConfig fields added after variants were first rendered: left out of a manifest while at their default,
so a variant rendered before them keeps a valid cache."""


def manifest_header(*, seed: int, config: RenderConfig, compose: ComposeConfig) -> dict:
    """What a rendered dataset's manifest must hold for its cache to serve ``seed``, ``config`` and ``compose``."""
    header = {"format": FORMAT, "version": FORMAT_VERSION, "seed": int(seed), "config": dataclasses.asdict(config)}
    if compose != ComposeConfig():  # the default's manifest stays as it was, so its cache stays valid
        default = ComposeConfig()
        header["compose"] = {k: v for k, v in dataclasses.asdict(compose).items()
                             if k not in LATER_COMPOSE_FIELDS or v != getattr(default, k)}
    return header


def ensure_rendered_dataset(root: str | os.PathLike | None = None, *, seed: int = 0,
                            config: RenderConfig | None = None, compose: ComposeConfig | None = None,
                            workers: int | None = None, progress: bool = True) -> Path:
    """Return the root of the rendered dataset, rendering it first if needed (once; cached on disk).

    ``compose`` other than the default (e.g. ``ComposeConfig(hydrogen_kits=0.5)`` or ``opl3=0.3``) makes a variant, recorded in
    the manifest; give it a root of its own. ``workers`` processes render songs in parallel (default: up to 2).
    Raises
    :class:`~conditioned_sep.data.render.tools.RenderToolError` naming the ``apt-get install`` line when a
    program, soundfont or voice is missing, and :class:`~conditioned_sep.data.folder.DatasetError` when ``root``
    holds something else.
    """
    config = config or RenderConfig()
    root = Path(root).expanduser() if root is not None else default_render_root()
    compose = compose or ComposeConfig()
    header = manifest_header(seed=seed, config=config, compose=compose)

    def build(tmp: Path) -> dict:
        tools.check_all()
        if compose.hydrogen_kits > 0:
            for kit in KITS:
                load_kit(kit)
        if compose.opl3 > 0:
            tools.soundfont_path(tools.OPL3_FONT)  # missing: says apt-get install opl3-soundfont, before rendering
        packages = tools.ALL_PACKAGES + ((tools.HYDROGEN_PACKAGE,) if compose.hydrogen_kits > 0 else ()) + \
            ((tools.OPL3_PACKAGE,) if compose.opl3 > 0 else ())
        job = functools.partial(_render_job, compose=compose)
        tracks = make_songs(tmp, seed=seed, config=config, job=job, workers=workers, progress=progress,
                            desc=f"rendering songs into {root}")
        return {"tracks": tracks, "stems": list(FINE_STEMS), "audio": "FLAC PCM_16", "tools": tools.tool_versions(packages)}

    return ensure_cached(root, header=header, required=REQUIRED, build=build, what="rendered dataset")


def track_name(index: int, title: str) -> str:
    """``song007-Amin-96bpm-RnB``: index first (sorted order is render order), then a file-safe title."""
    return f"song{index:03d}-" + re.sub(r"[^A-Za-z0-9-]", "", title.replace("&", "n"))


def write_song(folder: Path, song: RenderedSong) -> None:
    """Write ``song``'s stems (those present, and always the coarse four and the mixture), MIDI file and metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, audio in song.stems.items():
        write_audio(folder / f"{stem}{SUFFIX}", audio, song.sample_rate, subtype="PCM_16")
    song.midi.save(str(folder / "song.mid"))
    score = song.score
    meta = {"title": score.title, "style": score.style, "bpm": score.bpm, "tonic": score.tonic, "mode": score.mode,
            "chords": score.chords, "sections": [dataclasses.asdict(s) for s in score.sections],
            "seconds": score.seconds, "sample_rate": song.sample_rate, "stems": sorted(song.stems),
            "parts": [p.describe() for p in score.parts]}
    atomic_write_text(folder / "song.json", json.dumps(meta, indent=1))


def _render_job(job: SongJob, *, compose: ComposeConfig | None = None) -> tuple[str, str]:
    split_dir, seed, split_index, index, seconds, rate = job
    song = render_song(np.random.default_rng([seed, split_index, index]), seconds=seconds, sample_rate=rate,
                       compose_config=compose)
    name = track_name(index, song.score.title)
    write_song(Path(split_dir) / name, song)
    return split_dir, name
