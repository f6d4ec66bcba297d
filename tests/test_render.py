"""The rendered dataset, song by song: determinism, exact stem sums (in memory and as written), every part audible
where its MIDI notes say it plays and silent before, the cache and its manifest. Renders are a few seconds long."""

from __future__ import annotations

import dataclasses
import json

import mido
import numpy as np
import pytest

from conditioned_sep.data.folder import DatasetError, list_tracks
from conditioned_sep.data.render import RenderConfig, ensure_rendered_dataset, render_song, tools
from conditioned_sep.data.render import __main__ as render_command
from conditioned_sep.data.render.dataset import REQUIRED
from conditioned_sep.data.render.mixing import active_rms
from conditioned_sep.data.render.score import note_spans, track_events
from conditioned_sep.stems import COARSE_OF, FINE_STEMS, OTHER_PARTS
from conditioned_sep.stems import STEMS

SECONDS = 5.0
TINY = RenderConfig(train_songs=3, valid_songs=1, test_songs=1, train_seconds=3.0, valid_seconds=2.0,
                    test_seconds=2.0)


@pytest.fixture(scope="module")
def songs():
    """Six short songs (seeds chosen only by number: whatever they hold is tested)."""
    return [render_song(np.random.default_rng([11, i]), seconds=SECONDS) for i in range(6)]


@pytest.fixture(scope="module")
def tiny_rendered(tmp_path_factory):
    return ensure_rendered_dataset(tmp_path_factory.mktemp("rendered") / "data", seed=3, config=TINY, workers=1,
                                   progress=False)


def test_same_seed_same_song():
    a = render_song(np.random.default_rng(5), seconds=3.0)
    b = render_song(np.random.default_rng(5), seconds=3.0)
    assert a.stems.keys() == b.stems.keys()
    for stem in a.stems:
        assert np.array_equal(a.stems[stem], b.stems[stem]), stem
    assert [t for t in a.midi.tracks] == [t for t in b.midi.tracks]
    c = render_song(np.random.default_rng(6), seconds=3.0)
    assert not np.array_equal(a.stems["mixture"], c.stems["mixture"])


def test_stems_sum_exactly(songs):
    for song in songs:
        stems = {k: v.astype(np.int64) for k, v in song.stems.items()}
        assert set(STEMS) | {"mixture"} <= stems.keys()
        assert set(stems) <= set(FINE_STEMS) | {"mixture"}
        assert np.array_equal(sum(stems[s] for s in STEMS), stems["mixture"])
        parts = [stems[p] for p in OTHER_PARTS if p in stems]
        assert parts and np.array_equal(sum(parts), stems["other"])
        # each written stem is the sum of its parts (to 16-bit rounding of each part)
        for stem in song.stems:
            if stem == "mixture":
                continue
            members = [p.name for p in song.score.parts if stem in (p.stem, COARSE_OF[p.stem])]
            expect = sum((song.parts[m] for m in members), np.zeros_like(song.parts[song.score.parts[0].name]))
            assert np.abs(stems[stem] / 32768.0 - expect).max() <= len(members) / 32768.0 + 1e-7, stem
        assert np.abs(stems["mixture"]).max() < 32767


def test_every_part_plays_where_its_notes_are_and_not_before(songs):
    rate = songs[0].sample_rate
    checked = 0
    for song in songs:
        for part in song.score.parts:
            x = song.parts[part.name]
            level = active_rms(x)
            assert level > 0, f"{part.name} is silent"
            spans = [s for s in note_spans(track_events(song.midi, part.name)) if s[0] < SECONDS - 0.1]
            if part.singer.startswith("formant"):  # it draws its own tune: audible in its bars instead
                bar = 4 * 60.0 / song.score.bpm
                spans = [(b * bar, (b + 1) * bar, 0, 0, "") for b in part.bars if b * bar < SECONDS - 0.5]
            assert spans, f"{part.name} has no note in the song"
            for start, end, pitch, _, _ in spans:
                a, b = int(start * rate), int(min(end, start + 0.25, SECONDS) * rate)
                if b - a < 200:
                    continue
                window_db = 20 * np.log10(np.sqrt(np.mean(x[:, a:b] ** 2)) / level + 1e-12)
                assert window_db > -35, f"{part.name} ({part.preset}) inaudible at {start:.2f} s (pitch {pitch})"
                checked += 1
            first = int((spans[0][0] - 0.02) * rate)
            if first > 0:
                assert np.abs(x[:, :first]).max() < 1e-4, f"{part.name} sounds before its first note"
    assert checked > 100


def test_midi_file_describes_the_parts(songs):
    for song in songs:
        names = [t.name for t in song.midi.tracks[1:]]
        assert names == [p.name for p in song.score.parts] and len(set(names)) == len(names)
        vocals = [p for p in song.score.parts if p.stem == "vocals"]
        for part in vocals:
            if part.singer.split(":")[0] in ("festival", "espeak"):
                assert all(s[4] for s in note_spans(track_events(song.midi, part.name))), "a sung note without lyric"
        drums = next((p for p in song.score.parts if p.name == "drums"), None)
        if drums is not None:
            onsets = {round(n.start) for n in drums.notes if n.pitch in (49, 57)}
            for section in song.score.sections[1:]:
                if section.start * 4 * song.score.beat_seconds > SECONDS - 0.1:
                    continue  # the score runs past the rendered end
                assert section.start * 4 in onsets, "no crash on a new section's downbeat"


def test_written_dataset_reads_back_exactly(tiny_rendered):
    manifest = json.loads((tiny_rendered / "manifest.json").read_text())
    assert manifest["format"] == "conditioned-sep rendered" and manifest["seed"] == 3
    assert {len(v) for v in manifest["tracks"].values()} == {3, 1}
    assert "fluidsynth" in manifest["tools"]
    stems = (*FINE_STEMS, "mixture")
    for split in ("train", "valid", "test"):
        for track in list_tracks(tiny_rendered, split, stems=stems):
            for name in REQUIRED:
                assert (track.folder / name).is_file()
            x = track.load(stems=stems)
            assert np.array_equal(x[:4].sum(0), x[len(stems) - 1])  # mixture = vocals + drums + bass + other
            assert np.array_equal(x[4: len(stems) - 1].sum(0), x[3])  # other = the sum of its parts
            assert np.abs(x[-1]).max() > 0.01
            meta = json.loads((track.folder / "song.json").read_text())
            assert {p["stem"] for p in meta["parts"]} <= set(FINE_STEMS)
            assert mido.MidiFile(str(track.folder / "song.mid")).type == 1


def test_cached_dataset_is_found_not_rendered_again(tiny_rendered):
    stamp = (tiny_rendered / "manifest.json").stat().st_mtime_ns
    again = ensure_rendered_dataset(tiny_rendered, seed=3, config=TINY, workers=1, progress=False)
    assert again == tiny_rendered and (tiny_rendered / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="another seed"):
        ensure_rendered_dataset(tiny_rendered, seed=4, config=TINY, workers=1, progress=False)


def test_more_training_songs_keep_the_default_songs_and_need_no_optional_sources(tiny_rendered, tmp_path,
                                                                                  monkeypatch):
    """``--train-songs`` adds songs after the default ones and leaves valid and test as they were; and the default
    render runs on a machine without the optional opl3-soundfont and hydrogen-drumkits (a fresh clone's setup)."""
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    for name, (file, _) in tools.SOUNDFONTS.items():
        if name != tools.OPL3_FONT:
            (fonts / file).symlink_to(tools.soundfont_path(name))
    tools.soundfont_path.cache_clear()
    monkeypatch.setattr(tools, "SOUNDFONT_DIRS", (fonts,))
    monkeypatch.setattr(tools, "HYDROGEN_KIT_DIR", tmp_path / "no-kits")
    try:
        more = ensure_rendered_dataset(tmp_path / "more", seed=3, config=dataclasses.replace(TINY, train_songs=4),
                                       workers=1, progress=False)
    finally:
        tools.soundfont_path.cache_clear()
    stems = (*FINE_STEMS, "mixture")
    for split, count in (("train", 4), ("valid", 1), ("test", 1)):
        tracks = list_tracks(more, split, stems=stems)
        assert len(tracks) == count
        for track, same in zip(tracks, list_tracks(tiny_rendered, split, stems=stems)):
            assert track.folder.name == same.folder.name
            assert np.array_equal(track.load(stems=stems), same.load(stems=stems))


def test_render_command_passes_the_training_song_count_and_refuses_none(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(render_command, "ensure_rendered_dataset",
                        lambda root, **kwargs: seen.update(root=root, **kwargs) or root)
    assert render_command.main(["/tmp/somewhere", "--train-songs", "480"]) == 0
    assert seen["root"] == "/tmp/somewhere" and seen["config"] == RenderConfig(train_songs=480)
    assert render_command.main([]) == 0 and seen["config"] == RenderConfig()  # the default dataset's sizes
    with pytest.raises(SystemExit):
        render_command.main(["/tmp/somewhere", "--train-songs", "0"])
    assert "--train-songs is a number of songs, at least 1 (got 0)" in capsys.readouterr().err
