"""The --opl3 variant of the rendered data: a share of the pitched parts played by the OPL3 FM soundfont."""

from __future__ import annotations

import numpy as np
import pytest

from conditioned_sep.data.render import ComposeConfig, compose, render_song
from conditioned_sep.data.render import tools
from conditioned_sep.data.render.__main__ import main as render_main
from conditioned_sep.data.render.dataset import RenderConfig, manifest_header


def _sound_free(score):
    """Each part as it plays (name, stem, notes), without the preset that says what it sounds like."""
    return [(p.name, p.stem, p.channel, [(n.start, n.duration, n.pitch, n.velocity) for n in p.notes])
            for p in score.parts]


def test_opl3_parts_keep_their_notes_and_programs_and_spare_drums_and_vocals():
    plain = compose(np.random.default_rng(11), seconds=6.0)
    same = compose(np.random.default_rng(11), seconds=6.0, config=ComposeConfig(opl3=0.0))
    fm = compose(np.random.default_rng(11), seconds=6.0, config=ComposeConfig(opl3=1.0))
    assert [p.describe() for p in plain.parts] == [p.describe() for p in same.parts]
    assert _sound_free(plain) == _sound_free(fm)  # the composition is untouched; only the sound changes
    moved = 0
    for before, after in zip(plain.parts, fm.parts):
        if before.stem in ("drums", "vocals"):
            assert after.preset == before.preset
        else:
            assert after.preset.soundfont == tools.OPL3_FONT and after.preset.bank == 0
            assert after.preset.program == after.preset.preset == before.preset.program
            moved += 1
    assert moved >= 2  # a song has at least a comp part and a lead or bass


def test_the_share_is_a_share_of_parts():
    parts = [p for seed in range(30)
             for p in compose(np.random.default_rng(seed), seconds=4.0, config=ComposeConfig(opl3=0.3)).parts
             if p.stem not in ("drums", "vocals")]
    share = np.mean([p.preset.soundfont == tools.OPL3_FONT for p in parts])
    assert len(parts) > 60 and 0.15 < share < 0.45


def test_render_command_refuses_an_opl3_share_outside_0_1(capsys):
    with pytest.raises(SystemExit):
        render_main(["/tmp/nowhere", "--opl3", "-0.1"])
    assert "--opl3 is a share of parts, from 0 to 1" in capsys.readouterr().err


def test_a_missing_opl3_soundfont_names_its_package(monkeypatch, tmp_path):
    monkeypatch.setattr(tools, "SOUNDFONT_DIRS", (tmp_path,))
    tools.soundfont_path.cache_clear()
    try:
        with pytest.raises(tools.RenderToolError, match="apt-get install opl3-soundfont"):
            tools.soundfont_path(tools.OPL3_FONT)
    finally:
        tools.soundfont_path.cache_clear()


@pytest.mark.skipif(not any((d / tools.SOUNDFONTS[tools.OPL3_FONT][0]).is_file() for d in tools.SOUNDFONT_DIRS),
                    reason="opl3-soundfont is not installed (apt-get install opl3-soundfont)")
def test_a_song_on_the_opl3_font_is_heard_and_still_sums_to_its_mixture():
    song = render_song(np.random.default_rng(7), seconds=4.0, compose_config=ComposeConfig(opl3=1.0))
    plain = render_song(np.random.default_rng(7), seconds=4.0)
    for stem in ("bass", "other"):
        assert np.abs(song.stems[stem].astype(np.int64)).max() > 1000
        assert not np.array_equal(song.stems[stem], plain.stems[stem])  # another sound
    assert np.array_equal(sum(song.stems[s].astype(np.int64) for s in ("vocals", "drums", "bass", "other")),
                          song.stems["mixture"].astype(np.int64))


def test_variants_rendered_before_the_option_keep_their_manifest():
    config = RenderConfig()
    assert "compose" not in manifest_header(seed=0, config=config, compose=ComposeConfig())
    hydrogen = manifest_header(seed=0, config=config, compose=ComposeConfig(hydrogen_kits=0.5))["compose"]
    assert hydrogen == {"vocals": 0.85, "bass": 0.9, "pad": 0.5, "counter_melody": 0.4, "hydrogen_kits": 0.5}
    assert manifest_header(seed=0, config=config, compose=ComposeConfig(opl3=0.3))["compose"]["opl3"] == 0.3
