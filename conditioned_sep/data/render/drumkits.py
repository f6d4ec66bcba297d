"""Real drum kits from Hydrogen (Debian ``hydrogen-drumkits``), played by a small sampler.

A Hydrogen kit is a folder with ``drumkit.xml`` (instruments, each with velocity layers of sample files) and the
samples. Its instruments are matched to General MIDI drum notes by name (:data:`GM_NAMES`), with fallbacks for
what a kit lacks (a pedal hi-hat plays the closed one, a missing tom the next tom, then the snare; a missing crash
the ride, then the open hi-hat); notes still unanswered (Latin percussion, often the clap) are played by a GM kit,
as with the AVL kits. Hits are one-shots as in Hydrogen: a note-off is ignored, velocity picks the layer and scales
it linearly, and a hi-hat hit chokes the hi-hat still ringing (:data:`CHOKE_SECONDS` fade).

    kit = load_kit("ForzeeStereo")                  # from the installed package
    audio = render_kit(events, kit, num_samples=n, sample_rate=44100)   # float32 (2, n)
"""

from __future__ import annotations

import bisect
import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...audio import read_audio
from .instruments import Preset
from .score import TimedEvent
from .tools import RenderToolError, hydrogen_kit_folder

HYDROGEN = "hydrogen:"
"""Prefix of a Hydrogen kit's :attr:`Preset.soundfont` (``hydrogen:ForzeeStereo``)."""

KITS = ("ForzeeStereo", "BJA_Pacific", "ColomboAcousticDrumkit", "Millo_MultiLayered2", "Millo_MultiLayered3",
        "Millo-Drums_v.1", "Audiophob", "rumpf_kit_z01_h2", "ElectricEmpireKit", "HardElectro1", "VariBreaks")
"""The kits drawn: the package's acoustic and electronic drum sets. Left out: ``The Black Pearl 1.0`` (the AVL
Black Pearl's drummer and recordings, already drawn), and the hand-percussion sets (``circAfrique v4``,
``Gimme A Hand 1.0``), which have no kick, snare or hi-hat."""

GM_NAMES: tuple[tuple[tuple[int, ...], str], ...] = (
    ((36, 35), r"kick|bass ?drum"),
    ((38,), r"snare(?!.*(roll|rim))"),
    ((40,), r"snare.*(rock|2|rim)"),
    ((37,), r"side ?stick|rim ?click|^(\S+ - )?stick$"),
    ((39,), r"clap"),
    ((42,), r"(hh|hat).*(closed|\bcl\b)|closed.*(hh|hat)"),
    ((44,), r"(hh|hat).*(pedal|\bpd\b)|pedal.*(hh|hat)"),
    ((46,), r"(hh|hat).*(open|\bop\b)|open.*(hh|hat)"),
    ((41, 43), r"floor|tom.*\blow?\b|\blow?\b.*tom"),
    ((45, 47), r"tom.*\bmid|mid(dle)? tom|^tom$"),
    ((48, 50), r"tom.*\bhi(gh)?\b|\bhi(gh)? tom"),
    ((49, 57), r"crash(?!.*(ride|choke))"),
    ((51, 59), r"ride(?!.*(bell|cup))"),
    ((53,), r"ride.*(bell|cup)"),
    ((52,), r"china"),
    ((55,), r"splash(?!.*choke)"),
    ((54,), r"tambourine(?!.*pedal)"),
    ((56,), r"cowbell"),
)
"""GM drum notes and the pattern their instrument's (lower-case) name matches; the first match in kit order plays
the first note, a second match the second (two crashes: 49 and 57)."""

FALLBACKS: dict[int, tuple[int, ...]] = {
    35: (36,), 40: (38,), 44: (42,), 46: (42,),
    41: (45, 48, 38), 43: (41, 45, 48, 38), 45: (48, 41, 38), 47: (45, 48, 41, 38), 48: (45, 41, 38),
    50: (48, 45, 41, 38),
    49: (51, 46), 57: (49, 51, 46), 51: (49, 46), 59: (51, 49, 46), 53: (51, 49), 52: (49, 51), 55: (49, 51),
}
"""What a note plays when the kit has no instrument of its own for it: the first of these it has."""

HI_HATS = frozenset({42, 44, 46})
CHOKE_SECONDS = 0.01


class DrumKitError(RenderToolError):
    """A Hydrogen kit whose ``drumkit.xml`` cannot be read or has no kick, snare and hi-hat."""


@dataclass(frozen=True)
class Layer:
    """One sample of an instrument, played for velocities in ``[low, high]`` (0..1) at ``gain``."""

    path: Path
    low: float
    high: float
    gain: float


@dataclass(frozen=True)
class Instrument:
    """A kit piece: its ``name``, ``gain`` (Hydrogen's gain times volume), ``pan`` (left, right gains) and layers."""

    name: str
    gain: float
    pan: tuple[float, float]
    layers: tuple[Layer, ...]

    def layer(self, velocity: float) -> Layer:
        """The layer for ``velocity`` (0..1): the first whose range holds it, else the nearest range."""
        for layer in self.layers:
            if layer.low <= velocity <= layer.high:
                return layer
        return min(self.layers, key=lambda l: min(abs(velocity - l.low), abs(velocity - l.high)))


@dataclass(frozen=True)
class DrumKit:
    """A parsed kit: its ``name`` and the instrument that plays each GM note it answers."""

    name: str
    notes: dict[int, Instrument]

    @property
    def preset(self) -> Preset:
        """How a score names this kit (``soundfont`` ``hydrogen:<name>``)."""
        return Preset(HYDROGEN + self.name, 0, 0, 0)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element: ET.Element, name: str, default: str = "") -> str:
    child = _child(element, name)
    return (child.text or "").strip() if child is not None and child.text else default


def _number(element: ET.Element, name: str, default: float) -> float:
    try:
        return float(_text(element, name, str(default)))
    except ValueError:
        return default


def _instruments(folder: Path, root: ET.Element) -> list[Instrument]:
    found = []
    for element in root.iter():
        if _local(element.tag) != "instrument":
            continue
        layers = []
        for layer in (e for e in element.iter() if _local(e.tag) == "layer"):
            file = _text(layer, "filename")
            if file:
                layers.append(Layer(folder / file, _number(layer, "min", 0.0), _number(layer, "max", 1.0),
                                    _number(layer, "gain", 1.0)))
        if not layers and _text(element, "filename"):  # the old format: one sample, no layers
            layers.append(Layer(folder / _text(element, "filename"), 0.0, 1.0, 1.0))
        layers = [layer for layer in layers if layer.path.is_file()]
        if layers and _text(element, "isMuted", "false") != "true":
            gain = _number(element, "gain", 1.0) * _number(element, "volume", 1.0)
            found.append(Instrument(_text(element, "name"), gain,
                                    (_number(element, "pan_L", 1.0), _number(element, "pan_R", 1.0)), tuple(layers)))
    return found


def match_notes(instruments: list[Instrument]) -> dict[int, Instrument]:
    """The GM notes ``instruments`` answer: by name (:data:`GM_NAMES`), then by :data:`FALLBACKS`."""
    notes: dict[int, Instrument] = {}
    for gm_notes, pattern in GM_NAMES:
        matches = [i for i in instruments if re.search(pattern, i.name.lower())]
        for k, note in enumerate(gm_notes):
            if k < len(matches):
                notes[note] = matches[k]
    for note, others in FALLBACKS.items():
        if note not in notes:
            choice = next((notes[o] for o in others if o in notes), None)
            if choice is not None:
                notes[note] = choice
    return notes


def parse_kit(folder: str | Path, *, name: str | None = None) -> DrumKit:
    """Read the Hydrogen kit in ``folder``; :class:`DrumKitError` when its ``drumkit.xml`` is unreadable or it
    plays no kick, snare or closed hi-hat."""
    folder = Path(folder)
    try:
        root = ET.parse(folder / "drumkit.xml").getroot()
    except (OSError, ET.ParseError) as err:
        raise DrumKitError(f"{folder / 'drumkit.xml'} cannot be read as a Hydrogen drum kit ({err}); reinstall "
                           "hydrogen-drumkits or pick another kit") from err
    notes = match_notes(_instruments(folder, root))
    missing = [what for what, note in (("kick", 36), ("snare", 38), ("closed hi-hat", 42)) if note not in notes]
    if missing:
        raise DrumKitError(f"Hydrogen kit {folder} has no {', '.join(missing)}: it cannot play a drum part")
    return DrumKit(name or folder.name, notes)


@functools.cache
def load_kit(name: str) -> DrumKit:
    """Installed Hydrogen kit ``name`` (a folder of the package), parsed once per process."""
    return parse_kit(hydrogen_kit_folder(name), name=name)


def draw_hydrogen_kit(rng: np.random.Generator) -> Preset:
    """One of :data:`KITS`, uniformly."""
    return Preset(HYDROGEN + KITS[int(rng.integers(len(KITS)))], 0, 0, 0)


def kit_of(preset: Preset) -> DrumKit | None:
    """The Hydrogen kit ``preset`` names, or None for a soundfont preset."""
    return load_kit(preset.soundfont[len(HYDROGEN):]) if preset.soundfont.startswith(HYDROGEN) else None


@functools.lru_cache(maxsize=512)
def _sample(path: Path, sample_rate: int) -> np.ndarray:
    audio, _ = read_audio(path, sample_rate=sample_rate)
    return np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio[:2]


def render_kit(events: list[TimedEvent], kit: DrumKit, *, num_samples: int, sample_rate: int) -> np.ndarray:
    """Play the note-ons of ``events`` (times in seconds) on ``kit``: float32 ``(2, num_samples)``.

    Notes the kit does not answer are skipped (the composer gives them to a GM percussion part); a sample still
    sounding at the end is cut there.
    """
    out = np.zeros((2, num_samples), dtype=np.float32)
    hits = [(int(round(e.seconds * sample_rate)), e.a, e.b) for e in events
            if e.kind == "note_on" and e.b > 0 and e.a in kit.notes]
    hits = [h for h in hits if h[0] < num_samples]
    hat_starts = sorted(at for at, note, _ in hits if note in HI_HATS)
    fade = max(1, int(CHOKE_SECONDS * sample_rate))
    for at, note, velocity in hits:
        instrument = kit.notes[note]
        v = velocity / 127.0
        layer = instrument.layer(v)
        sample = _sample(layer.path, sample_rate)
        stop = min(num_samples, at + sample.shape[-1])
        gains = np.asarray(instrument.pan, dtype=np.float32)[:, None] * np.float32(v * layer.gain * instrument.gain)
        piece = sample[:, :stop - at] * gains
        if note in HI_HATS:
            k = bisect.bisect_right(hat_starts, at)
            if k < len(hat_starts) and hat_starts[k] < stop:
                cut = hat_starts[k] - at
                piece = piece[:, :cut + fade].copy()
                ramp = np.linspace(1.0, 0.0, piece.shape[-1] - cut, dtype=np.float32)
                piece[:, cut:] *= ramp
                stop = at + piece.shape[-1]
        out[:, at:stop] += piece
    return out
