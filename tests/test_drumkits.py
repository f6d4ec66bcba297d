"""Hydrogen drum kits: the kit file read (namespaced and old formats, velocity layers, mute), instruments matched to
GM notes with fallbacks, the sampler's output sample-exact against the samples it plays, the hi-hat choke, errors
for a missing or unusable kit, the installed kits the renderer draws, and songs drummed on them."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conditioned_sep.data.render import ComposeConfig, compose, render_song
from conditioned_sep.data.render import drumkits, tools
from conditioned_sep.data.render.__main__ import main as render_main
from conditioned_sep.data.render.articulation import CRASHES, FILL_DRUMS
from conditioned_sep.data.render.drumkits import DrumKitError, parse_kit, render_kit
from conditioned_sep.data.render.score import TimedEvent

RATE = 8000
NS = 'xmlns="http://www.hydrogen-music.org/drumkit"'


def _instrument(name: str, layers: list[tuple[str, float, float, float]], *, gain: float = 1.0,
                pan: tuple[float, float] = (1.0, 1.0), muted: bool = False) -> str:
    body = "".join(f"<layer><filename>{f}</filename><min>{lo}</min><max>{hi}</max><gain>{g}</gain></layer>"
                   for f, lo, hi, g in layers)
    return (f"<instrument><name>{name}</name><volume>1</volume><isMuted>{str(muted).lower()}</isMuted>"
            f"<pan_L>{pan[0]}</pan_L><pan_R>{pan[1]}</pan_R><gain>{gain}</gain>{body}</instrument>")


@pytest.fixture()
def kit_folder(tmp_path):
    """A kit of five pieces: two kick layers, a snare (old one-file format), closed and open hats, a muted cowbell
    and a piece whose sample is missing. Samples are short ramps, so every played value can be checked."""
    for name, n, channels in (("kick-soft", 40, 1), ("kick-hard", 40, 1), ("snare", 30, 2), ("hat-closed", 20, 1),
                              ("hat-open", 400, 1), ("cowbell", 10, 1)):
        ramp = np.linspace(0.1, 0.5, n, dtype=np.float32)
        sf.write(tmp_path / f"{name}.wav", np.stack([ramp, -ramp][:channels], axis=1), RATE, subtype="FLOAT")
    instruments = [
        _instrument("Kick", [("kick-soft.wav", 0.0, 0.5, 1.0), ("kick-hard.wav", 0.5, 1.0, 2.0)], gain=0.5),
        "<instrument><name>Snare</name><filename>snare.wav</filename></instrument>",
        _instrument("Closed HH", [("hat-closed.wav", 0, 1, 1)], pan=(1.0, 0.5)),
        _instrument("Open HH", [("hat-open.wav", 0, 1, 1)]),
        _instrument("Cowbell", [("cowbell.wav", 0, 1, 1)], muted=True),
        _instrument("Crash", [("missing.wav", 0, 1, 1)]),
    ]
    (tmp_path / "drumkit.xml").write_text(f'<?xml version="1.0"?><drumkit_info {NS}><name>Test</name>'
                                          f'<instrumentList>{"".join(instruments)}</instrumentList></drumkit_info>')
    return tmp_path


def test_kit_file_is_read_and_matched_to_gm_notes(kit_folder):
    kit = parse_kit(kit_folder)
    names = {note: inst.name for note, inst in kit.notes.items()}
    assert names[36] == names[35] == "Kick" and names[38] == names[40] == "Snare"
    assert names[42] == names[44] == "Closed HH" and names[46] == "Open HH"
    assert all(names[t] == "Snare" for t in (41, 43, 45, 47, 48, 50))  # no toms: fills on the snare
    assert names[49] == names[51] == "Open HH"  # no playable cymbal (its sample is missing): the open hat
    assert 56 not in kit.notes and 39 not in kit.notes  # muted cowbell, no clap: left to a GM kit
    kick = kit.notes[36]
    assert kick.gain == 0.5 and [l.path.name for l in kick.layers] == ["kick-soft.wav", "kick-hard.wav"]
    assert kick.layer(0.3).path.name == "kick-soft.wav" and kick.layer(0.9).path.name == "kick-hard.wav"
    assert kit.notes[42].pan == (1.0, 0.5)


def test_sampler_plays_each_hit_sample_exact(kit_folder):
    kit = parse_kit(kit_folder)
    events = [TimedEvent(0.01, "note_on", 36, 127), TimedEvent(0.02, "note_off", 36, 0),
              TimedEvent(0.03, "note_on", 38, 64), TimedEvent(0.04, "note_on", 56, 100)]
    out = render_kit(events, kit, num_samples=400, sample_rate=RATE)
    assert out.shape == (2, 400) and out.dtype == np.float32
    hard = sf.read(kit_folder / "kick-hard.wav", dtype="float32")[0]
    np.testing.assert_allclose(out[0, 80:120], hard * 1.0 * 2.0 * 0.5, rtol=1e-6)  # velocity 1 x layer x kit gain
    snare = sf.read(kit_folder / "snare.wav", dtype="float32")[0].T
    np.testing.assert_allclose(out[:, 240:270], snare * (64 / 127), rtol=1e-6)  # stereo sample kept as it is
    assert not out[:, :80].any() and not out[:, 120:240].any() and not out[:, 270:].any()  # cowbell muted


def test_a_hi_hat_hit_chokes_the_ringing_one(kit_folder):
    kit = parse_kit(kit_folder)
    events = [TimedEvent(0.0, "note_on", 46, 127), TimedEvent(0.02, "note_on", 42, 127)]
    out = render_kit(events, kit, num_samples=600, sample_rate=RATE)
    fade = int(drumkits.CHOKE_SECONDS * RATE)
    alone = render_kit(events[:1], kit, num_samples=600, sample_rate=RATE)
    np.testing.assert_array_equal(out[:, :160], alone[:, :160])  # open hat untouched until the closed one
    closed = render_kit(events[1:], kit, num_samples=600, sample_rate=RATE)
    assert not (out - closed)[:, 160 + fade:].any()  # ... and silent a fade after it
    assert np.abs(alone[:, 160 + fade:400]).min() > 0.1  # where it would have rung on


def test_unusable_kits_say_what_is_wrong(tmp_path, monkeypatch):
    with pytest.raises(DrumKitError, match="drumkit.xml cannot be read"):
        parse_kit(tmp_path)
    (tmp_path / "drumkit.xml").write_text(f"<drumkit_info {NS}><instrumentList>"
                                          f"{_instrument('Kick', [])}</instrumentList></drumkit_info>")
    with pytest.raises(DrumKitError, match="no kick, snare, closed hi-hat"):
        parse_kit(tmp_path)
    monkeypatch.setattr(tools, "HYDROGEN_KIT_DIR", tmp_path / "nowhere")
    with pytest.raises(tools.RenderToolError, match="apt-get install hydrogen-drumkits"):
        tools.hydrogen_kit_folder("ForzeeStereo")


def test_render_command_refuses_a_share_outside_0_1(capsys):
    with pytest.raises(SystemExit):
        render_main(["/tmp/nowhere", "--hydrogen-kits", "1.5"])
    assert "share of songs, from 0 to 1" in capsys.readouterr().err


needs_kits = pytest.mark.skipif(not (tools.HYDROGEN_KIT_DIR / "ForzeeStereo").is_dir(),
                                reason="hydrogen-drumkits is not installed (scripts/setup.sh installs it)")


@needs_kits
@pytest.mark.parametrize("name", drumkits.KITS)
def test_every_drawn_kit_plays_every_note_the_composer_writes_for_it(name):
    kit = drumkits.load_kit(name)
    assert {35, 36, 38, 42, 44, 46, *FILL_DRUMS, *CRASHES} <= set(kit.notes)


@needs_kits
def test_songs_drummed_on_hydrogen_kits_keep_their_composition():
    plain = compose(np.random.default_rng(7), seconds=6.0)
    same = compose(np.random.default_rng(7), seconds=6.0, config=ComposeConfig(hydrogen_kits=0.0))
    real = compose(np.random.default_rng(7), seconds=6.0, config=ComposeConfig(hydrogen_kits=1.0))
    assert [p.describe() for p in plain.parts] == [p.describe() for p in same.parts]
    assert plain.chords == real.chords and plain.bpm == real.bpm
    pitches = [[(p.name, [n.pitch for n in p.notes]) for p in score.parts if p.stem != "drums"] for score in (plain, real)]
    assert pitches[0] == pitches[1]  # same parts playing the same notes (their humanised timing is drawn anew)
    drums = next(p for p in real.parts if p.role == "drums")
    kit = drumkits.kit_of(drums.preset)
    assert kit is not None and all(n.pitch in kit.notes for n in drums.notes)
    song = render_song(np.random.default_rng(7), seconds=4.0, compose_config=ComposeConfig(hydrogen_kits=1.0))
    assert np.abs(song.stems["drums"].astype(np.int64)).max() > 1000  # the kit is heard
    assert np.array_equal(sum(song.stems[s].astype(np.int64) for s in ("vocals", "drums", "bass", "other")),
                          song.stems["mixture"].astype(np.int64))
