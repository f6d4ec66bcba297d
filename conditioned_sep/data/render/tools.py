"""The outside programs and files the renderer needs, found once, with errors that say how to install them.

Every one is a Debian package; ``scripts/setup.sh`` installs them all. The sound sources are fixed on purpose: other
soundfonts (never FluidR3_GM), other Festival voices and the music21 corpus are kept for independent tests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import shutil
import subprocess
from pathlib import Path

from ..folder import DatasetError

SOUNDFONT_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/soundfonts"), Path("/usr/lib/lv2/avldrums.lv2"))
SOUNDFONTS: dict[str, tuple[str, str]] = {  # short name -> (file, Debian package)
    "timgm6mb": ("TimGM6mb.sf2", "timgm6mb-soundfont"),
    "gmbank": ("sf_GMbank.sf2", "csound-soundfont"),
    "blackpearl": ("Black_Pearl_4_LV2.sf2", "avldrums.lv2-soundfont"),
    "redzeppelin": ("Red_Zeppelin_4_LV2.sf2", "avldrums.lv2-soundfont"),
    "opl3": ("OPL-3_FM_128M.sf2", "opl3-soundfont"),
}
FESTIVAL_VOICES: dict[str, tuple[str, str]] = {  # festival voice -> (Debian package, sex)
    "ked_diphone": ("festvox-kdlpc16k", "male"),
    "pc_diphone": ("festvox-itapc16k", "male"),
    "lp_diphone": ("festvox-italp16k", "female"),
}
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")
HYDROGEN_KIT_DIR = Path("/usr/share/hydrogen/data/drumkits")
HYDROGEN_PACKAGE = "hydrogen-drumkits"  # optional: only a dataset rendered with --hydrogen-kits needs it
OPL3_FONT = "opl3"  # optional (opl3-soundfont): only a dataset rendered with --opl3 needs it
OPL3_PACKAGE = "opl3-soundfont"
PROGRAMS: dict[str, str] = {"text2wave": "festival", "espeak-ng": "espeak-ng", "mma": "mma"}  # program -> package
ALL_PACKAGES = ("fluidsynth", "timgm6mb-soundfont", "csound-soundfont", "avldrums.lv2-soundfont", "mma", "festival",
                "festvox-kdlpc16k", "festvox-itapc16k", "festvox-italp16k", "espeak-ng")
INSTALL_ALL = "apt-get install " + " ".join(ALL_PACKAGES)


class RenderToolError(DatasetError):
    """A program, library, soundfont or voice the renderer needs is not installed."""


def _missing(what: str, package: str) -> RenderToolError:
    return RenderToolError(f"{what} is missing: install it with `apt-get install {package}` (or all the renderer "
                           f"needs: `{INSTALL_ALL}`, which scripts/setup.sh runs), or train on other data "
                           "(--folder / --musdb)")


@functools.cache
def soundfont_path(name: str) -> Path:
    """Path of soundfont ``name`` (a key of :data:`SOUNDFONTS`); :class:`RenderToolError` when not installed."""
    file, package = SOUNDFONTS[name]
    for folder in SOUNDFONT_DIRS:
        if (folder / file).is_file():
            return folder / file
    raise _missing(f"soundfont {file}", package)


def hydrogen_kit_folder(name: str) -> Path:
    """Folder of the installed Hydrogen drum kit ``name``; :class:`RenderToolError` when it is not installed."""
    folder = HYDROGEN_KIT_DIR / name
    if not (folder / "drumkit.xml").is_file():
        raise _missing(f"Hydrogen drum kit {name!r} ({folder})", HYDROGEN_PACKAGE)
    return folder


@functools.cache
def program_path(name: str) -> str:
    """Path of program ``name`` (a key of :data:`PROGRAMS`)."""
    path = shutil.which(name)
    if path is None:
        raise _missing(f"program {name}", PROGRAMS[name])
    return path


@functools.cache
def fluidsynth_library() -> ctypes.CDLL:
    """libfluidsynth (Debian ``fluidsynth`` brings it), loaded once per process."""
    name = ctypes.util.find_library("fluidsynth")
    if name is None:
        raise _missing("the FluidSynth library (libfluidsynth)", "fluidsynth")
    try:
        return ctypes.CDLL(name)
    except OSError as err:
        raise _missing(f"a loadable FluidSynth library ({err})", "fluidsynth") from err


def festival_voice_ok(voice: str) -> None:
    """Raise :class:`RenderToolError` unless Festival voice ``voice`` is installed."""
    program_path("text2wave")
    if not any(FESTIVAL_VOICE_DIR.glob(f"*/{voice}")):
        raise _missing(f"Festival voice {voice}", FESTIVAL_VOICES[voice][0])


def check_all() -> None:
    """Raise :class:`RenderToolError` naming the first missing tool the default dataset needs (before any work is
    started). The optional sources (:data:`OPL3_FONT`, the Hydrogen kits) are checked by the variants that use them."""
    fluidsynth_library()
    for name in SOUNDFONTS:
        if name != OPL3_FONT:
            soundfont_path(name)
    for name in PROGRAMS:
        program_path(name)
    for voice in FESTIVAL_VOICES:
        festival_voice_ok(voice)


def tool_versions(packages: tuple[str, ...] = ALL_PACKAGES) -> dict[str, str]:
    """Debian versions of the tools, voices and fonts a dataset is made with (for the manifest)."""
    versions = {}
    for package in packages:
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True,
                                 timeout=30)
            versions[package] = out.stdout.strip() or "unknown"
        except (OSError, subprocess.TimeoutExpired):
            versions[package] = "unknown"
    return versions
