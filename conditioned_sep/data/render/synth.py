"""FluidSynth playing one MIDI track through one sampled preset, to float32 stereo.

A small ctypes binding to libfluidsynth (the few calls needed, with float output, which pyfluidsynth does not
wrap). Each part gets a fresh synthesiser (loading a soundfont takes milliseconds), so a part never hears another's
state and the same track renders to the same samples. FluidSynth's own reverb and chorus are off: the mixer adds
the room (:mod:`.mixing`).
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from .instruments import Preset
from .score import TimedEvent
from .tools import RenderToolError, fluidsynth_library, soundfont_path

GAIN = 0.5
POLYPHONY = 256
_QUIET_LEVELS = (2, 3, 4)  # FLUID_WARN, FLUID_INFO, FLUID_DBG: "sample not found" chatter on every load
_P, _I, _D, _S, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_char_p, ctypes.POINTER(ctypes.c_float)
_PROTOTYPES = {  # name: (result, arguments)
    "new_fluid_settings": (_P, ()), "delete_fluid_settings": (None, (_P,)),
    "fluid_settings_setnum": (_I, (_P, _S, _D)), "fluid_settings_setint": (_I, (_P, _S, _I)),
    "new_fluid_synth": (_P, (_P,)), "delete_fluid_synth": (None, (_P,)),
    "fluid_synth_sfload": (_I, (_P, _S, _I)), "fluid_synth_program_select": (_I, (_P, _I, _I, _I, _I)),
    "fluid_synth_noteon": (_I, (_P, _I, _I, _I)), "fluid_synth_noteoff": (_I, (_P, _I, _I)),
    "fluid_synth_cc": (_I, (_P, _I, _I, _I)), "fluid_synth_pitch_bend": (_I, (_P, _I, _I)),
    "fluid_synth_write_float": (_I, (_P, _I, _F, _I, _I, _F, _I, _I)),
    "fluid_set_log_function": (_P, (_I, _P, _P)),
}


@functools.cache
def _lib() -> ctypes.CDLL:
    lib = fluidsynth_library()
    for name, (result, args) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = result, list(args)
    for level in _QUIET_LEVELS:
        lib.fluid_set_log_function(level, None, None)
    return lib


def render_track(events: list[TimedEvent], preset: Preset, *, channel: int, num_samples: int,
                 sample_rate: int) -> np.ndarray:
    """Play ``events`` (times in seconds) on ``preset`` for ``num_samples`` samples: float32 ``(2, num_samples)``.

    Events after the end are dropped; notes still sounding at the end are cut there.
    """
    lib = _lib()
    settings = lib.new_fluid_settings()
    lib.fluid_settings_setnum(settings, b"synth.sample-rate", float(sample_rate))
    lib.fluid_settings_setnum(settings, b"synth.gain", GAIN)
    lib.fluid_settings_setint(settings, b"synth.reverb.active", 0)
    lib.fluid_settings_setint(settings, b"synth.chorus.active", 0)
    lib.fluid_settings_setint(settings, b"synth.polyphony", POLYPHONY)
    synth = lib.new_fluid_synth(settings)
    left = np.zeros(num_samples, dtype=np.float32)
    right = np.zeros(num_samples, dtype=np.float32)

    def write(start: int, stop: int) -> None:
        lib.fluid_synth_write_float(synth, stop - start, left[start:].ctypes.data_as(_F), 0, 1,
                                    right[start:].ctypes.data_as(_F), 0, 1)

    try:
        path = soundfont_path(preset.soundfont)
        font = lib.fluid_synth_sfload(synth, str(path).encode(), 1)
        if font < 0:
            raise RenderToolError(f"FluidSynth could not load {path}; reinstall its package")
        lib.fluid_synth_program_select(synth, channel, font, preset.bank, preset.preset)
        done = 0
        for event in events:
            at = min(num_samples, int(round(event.seconds * sample_rate)))
            if at > done:
                write(done, at)
                done = at
            if at >= num_samples:
                break
            if event.kind == "note_on":
                lib.fluid_synth_noteon(synth, channel, event.a, event.b)
            elif event.kind == "note_off":
                lib.fluid_synth_noteoff(synth, channel, event.a)
            elif event.kind == "cc":
                lib.fluid_synth_cc(synth, channel, event.a, event.b)
            elif event.kind == "bend":
                lib.fluid_synth_pitch_bend(synth, channel, int(np.clip(event.a + 8192, 0, 16383)))
        if done < num_samples:
            write(done, num_samples)
    finally:
        lib.delete_fluid_synth(synth)
        lib.delete_fluid_settings(settings)
    return np.stack([left, right])
