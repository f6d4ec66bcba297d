"""The oscillator song generator: musical, every stem sounds, nothing clips."""

import numpy as np

from conditioned_sep.data.oscillators import Song, render_song


def test_songs_are_musical_every_stem_sounds_and_nothing_clips():
    rng = np.random.default_rng([7, 0, 3])
    song = Song.draw(rng, seconds=4.0, rate=44100)
    stems = render_song(song, rng)
    assert stems.shape == (4, 2, 4 * 44100) and stems.dtype == np.float32
    assert np.abs(stems).max() < 1.0 and np.abs(stems.sum(0)).max() < 1.0
    power_db = 10 * np.log10((stems.astype(np.float64) ** 2).mean(axis=(1, 2)) + 1e-12)
    assert np.all(power_db > -45), power_db
    # vocals: pitched energy mostly between 150 Hz and 4 kHz; bass: mostly below 400 Hz
    spec = np.abs(np.fft.rfft(stems.mean(1), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(stems.shape[-1], 1 / 44100)
    share = lambda k, lo, hi: spec[k, (freqs >= lo) & (freqs < hi)].sum() / spec[k].sum()  # noqa: E731
    assert share(0, 150, 4000) > 0.7
    assert share(2, 20, 400) > 0.7
