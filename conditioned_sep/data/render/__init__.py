"""Songs rendered from sampled instruments and recorded-voice singing, with instrument-level stems.

The song model (one tempo, key, chord progression, sections) writes multitrack MIDI: drums, bass and comping from
MMA's style library, a melody with lyrics, pads and counter-melodies (:mod:`.compose`). FluidSynth plays each part
through General MIDI soundfonts and acoustic drum kits (:mod:`.synth`); Festival, espeak-ng, the formant singer
or a soundfont voice sings the melody (:mod:`.voices`); :mod:`.mixing` mixes it like a record. The dataset
(:mod:`.dataset`) is deterministic from a seed for given package versions.

    python -m conditioned_sep.data.render [ROOT]
"""

from .compose import ComposeConfig, compose
from .dataset import RenderConfig, default_render_root, ensure_rendered_dataset
from .mixing import MixConfig
from .song import RenderedSong, render_song
from .tools import RenderToolError

__all__ = ["ComposeConfig", "MixConfig", "RenderConfig", "RenderToolError", "RenderedSong", "compose",
           "default_render_root", "ensure_rendered_dataset", "render_song"]
