"""conditioned_sep.page: the listening page that evaluation writes, its clips, and the page in a real browser."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_evaluation import make_stem_folder  # a helper, not a fixture: tests/ is on sys.path

from conditioned_sep.fileio import MANIFEST
from conditioned_sep import cli, evaluation, page
from conditioned_sep.data.sources import DatasetSpec
from conditioned_sep.evaluation import EvalConfig
from conditioned_sep.runs import discover_models

RATE = 44100


# ---- clips ----------------------------------------------------------------------------------------------------


def test_excerpt_is_where_every_stem_plays_and_whole_when_short():
    rate = 1000
    t = np.arange(30 * rate)
    loud = np.sin(t / 3.0)
    late = np.where((t >= 12 * rate) & (t < 22 * rate), 0.1 * np.sin(t / 5.0), 0.0)  # quiet, 12-22 s only
    references = np.stack([loud, late, np.zeros_like(loud)])[:, None]  # a silent stem changes nothing
    assert page.excerpt_span(references, rate, seconds=10.0) == (12 * rate, 22 * rate)
    assert page.excerpt_span(references, rate, seconds=None) == (0, 30 * rate)
    assert page.excerpt_span(references[..., : 8 * rate], rate, seconds=10.0) == (0, 8 * rate)


def test_spectrogram_is_a_png_whose_bright_row_is_the_tone():
    import matplotlib.image

    t = np.arange(2 * RATE) / RATE
    tone = np.stack([0.5 * np.sin(2 * np.pi * 1000.0 * t)] * 2)
    picture = matplotlib.image.imread(io.BytesIO(page.spectrogram_png(tone, RATE)), format="png")
    assert picture.shape[:2] == (page._SPECTROGRAM["height"], page._SPECTROGRAM["width"])
    brightness = picture[..., :3].sum(axis=(1, 2))
    freqs = np.geomspace(page._SPECTROGRAM["low_hz"], page._SPECTROGRAM["high_hz"], len(brightness))[::-1]
    assert abs(math.log2(freqs[int(np.argmax(brightness))] / 1000.0)) < 0.25  # within a quarter octave
    silent = matplotlib.image.imread(io.BytesIO(page.spectrogram_png(0 * tone, RATE)), format="png")
    assert (silent == silent[0, 0]).all()  # the floor colour everywhere


def test_clips_are_published_whole_with_their_stamp(tmp_path):
    rng = np.random.default_rng(0)
    clips = {"vocals": 0.1 * rng.standard_normal((2, 3 * RATE)), "drums+bass": 0.1 * rng.standard_normal((2, 3 * RATE))}
    folder = tmp_path / "clips" / "track"
    page.write_clips(folder, clips, rate=RATE, span=(RATE, 2 * RATE), key="a")
    assert sorted(p.name for p in folder.iterdir()) == sorted(  # the manifest marks the folder as ours
        [MANIFEST, "clips.json", "vocals.ogg", "vocals.png", "drums+bass.ogg", "drums+bass.png"])
    audio, rate = sf.read(folder / "vocals.ogg", always_2d=True)
    assert audio.shape[1] == 2 and abs(len(audio) / rate - 1.0) < 0.03 and np.std(audio) > 0.05
    assert page.clip_span(folder) == (1.0, 2.0)
    assert page.clips_ready(folder, key="a", names=["vocals"])
    assert not page.clips_ready(folder, key="b", names=["vocals"])  # made from something else
    assert not page.clips_ready(folder, key="a", names=["bass"])
    with pytest.raises(KeyError), page.writing_clips(folder, clips, rate=RATE, span=(0, RATE), key="c"):
        raise KeyError("killed while scoring")
    assert page.clips_ready(folder, key="a", names=["vocals"])  # the old folder stays, no partial one beside it
    assert sorted(p.name for p in folder.parent.iterdir()) == ["track"]


# ---- the page of an evaluation --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_songs(tmp_path_factory) -> Path:
    # mono: BSS Eval's cost grows with the cube of sources x channels, and the page does not care
    return make_stem_folder(tmp_path_factory.mktemp("songs"), tracks=2, seconds=2.0, channels=1)


def _config(out: Path, run_folder: Path, songs: Path, **kwargs) -> EvalConfig:
    return EvalConfig(models=discover_models([str(run_folder)]), out=out, dataset=DatasetSpec("folder", songs),
                      progress=False, sums=("accompaniment",), **kwargs)


@pytest.fixture(scope="module")
def paged(tmp_path_factory, run_folder, short_songs):
    out = tmp_path_factory.mktemp("paged")
    return out, evaluation.evaluate(_config(out, run_folder, short_songs))


def _sources(html: str) -> list[str]:
    return re.findall(r"<audio [^>]*src='([^']+)'", html)


def test_page_plays_every_condition_of_every_model_with_its_sdr(paged):
    out, result = paged
    assert result.files["index.html"] == out / "index.html"
    html = (out / "index.html").read_text()
    sources = _sources(html)
    # per track and condition: mixture, reference, conditioned, dedicated, oracle
    assert len(sources) == 2 * 5 * 5 and all((out / s.replace("%2B", "+")).is_file() for s in sources)
    assert len(set(sources)) == 2 * (1 + 5 * 4)  # one mixture file per track
    assert "http" not in html and "<script" not in html  # nothing from the network, nothing to run
    for s in result.scores:
        if s.model in ("conditioned", "dedicated", "oracle-irm2", "mixture"):
            assert f"SDR {s.track_score('SDR'):.2f} dB" in html
    # the excerpt: the whole of these 2 s songs, every clip the same span
    audio, rate = sf.read(out / "listen" / "1" / "m0" / "vocals.ogg", always_2d=True)
    assert abs(len(audio) / rate - 2.0) < 0.03 and audio.shape[1] == 1


def test_rerun_replaces_the_page_whole_and_cached_tracks_keep_their_audio(tmp_path, run_folder, short_songs,
                                                                           monkeypatch):
    out = tmp_path / "out"
    run_folder = run_folder / "conditioned"  # one model is enough here
    (out / "listen").mkdir(parents=True)
    (out / "listen" / page._OURS).touch()  # an older run's page: a run without a page takes it away
    (out / "index.html").write_text("an older run's page")
    evaluation.evaluate(_config(out, run_folder, short_songs, page=False, oracle="none"))
    assert not (out / "index.html").exists() and not (out / "listen").exists() and not (out / "clips").exists()
    # the scores are cached: the page's clips come from separating again, without scoring
    monkeypatch.setattr(evaluation, "_score", lambda *a, **k: pytest.fail("a cached track was scored again"))
    evaluation.evaluate(_config(out, run_folder, short_songs, oracle="none"))
    html = (out / "index.html").read_text()
    assert len(_sources(html)) == 2 * 5 * 3 and all((out / s.replace("%2B", "+")).is_file() for s in _sources(html))
    stamp = json.loads((out / "clips" / "track 0" / "rows" / "conditioned" / "clips.json").read_text())
    # fewer tracks: the page has no player of the other track any more
    evaluation.evaluate(_config(out, run_folder, short_songs, oracle="none", tracks=1))
    html = (out / "index.html").read_text()
    assert "track 1" not in html and not (out / "listen" / "1").exists() and (out / "listen" / "0").is_dir()
    assert json.loads((out / "clips" / "track 0" / "rows" / "conditioned" / "clips.json").read_text()) == stamp
    # whole tracks instead of excerpts: new clips, again without scoring
    evaluation.evaluate(_config(out, run_folder, short_songs, oracle="none", tracks=1, page_full=True))
    assert "full=True" in json.loads((out / "clips" / "track 0" / "rows" / "conditioned" / "clips.json").read_text())[
        "key"] and "whole tracks" in (out / "index.html").read_text()
    # a folder of the page's name that the project did not write is never deleted
    shutil.rmtree(out / "listen")
    (out / "listen").mkdir()
    (out / "listen" / "mine.txt").write_text("keep")
    with pytest.raises(page.PageError, match="--no-page"):
        evaluation.evaluate(_config(out, run_folder, short_songs, oracle="none", tracks=1))
    assert (out / "listen" / "mine.txt").read_text() == "keep"


def test_first_seed_is_played_and_named(tmp_path, run_folder, short_songs):
    for seed in (0, 1):
        (tmp_path / "run" / f"seed-{seed}").mkdir(parents=True)
        shutil.copytree(run_folder / "conditioned", tmp_path / "run" / f"seed-{seed}" / "conditioned")
    config = _config(tmp_path / "out", tmp_path / "run", short_songs, oracle="none", mixture=False, tracks=1)
    config.sums = ()
    result = evaluation.evaluate(config)
    html = (tmp_path / "out" / "index.html").read_text()
    assert "conditioned (seed 0 of 2)" in html and "seed 1" not in html
    first = next(s for s in result.scores if s.seed == 0 and s.condition == "bass")
    assert f"SDR {first.track_score('SDR'):.2f} dB" in html


def test_command_line_options():
    parser = cli.argparse.ArgumentParser()
    cli.add_evaluate_arguments(parser)
    assert (parser.parse_args([]).page, parser.parse_args([]).page_full) == (True, False)
    assert (parser.parse_args(["--no-page", "--page-full"]).page, parser.parse_args(["--page-full"]).page_full) == (
        False, True)


# ---- in a real browser ----------------------------------------------------------------------------------------


_CHECK = r"""
(async () => {
  const read = url => new Promise((done, fail) => {
    const x = new XMLHttpRequest(); x.open('GET', url); x.responseType = 'arraybuffer';
    x.onload = () => x.response && x.response.byteLength ? done(x.response) : fail(new Error('empty ' + url));
    x.onerror = () => fail(new Error('cannot read ' + url)); x.send(); });
  const context = new OfflineAudioContext(2, 48000, 48000);
  const audio = {};
  for (const a of document.querySelectorAll('audio')) {
    const src = a.getAttribute('src');
    if (src in audio) continue;
    try {
      const b = await context.decodeAudioData(await read(a.src));
      audio[src] = {seconds: b.duration, channels: b.numberOfChannels};
    }
    catch (e) { audio[src] = {error: String(e)}; }
  }
  const images = {};
  for (const i of document.querySelectorAll('img')) {
    const img = new Image(); img.src = i.src;
    images[i.getAttribute('src')] = await img.decode().then(() => img.naturalWidth, () => 0);
  }
  const cells = [...document.querySelectorAll('td[data-kind]')].map(td => ({...td.dataset, text: td.textContent}));
  return {title: document.title, audio, images, cells, width: document.body.scrollWidth,
          players: document.querySelectorAll('table.players').length};
})()
"""


def _browser() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def run_in_browser(url: str, expression: str, *, profile: Path, timeout: float = 120.0):
    """The value of ``expression`` (a promise) evaluated in ``url`` by headless chromium, over the DevTools
    protocol on a pipe (``--remote-debugging-pipe``: commands on fd 3, replies on fd 4, NUL-separated JSON)."""
    to_browser, commands = os.pipe()
    replies, from_browser = os.pipe()
    flags = ["--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe", "--no-first-run",
             "--allow-file-access-from-files", f"--user-data-dir={profile}", "about:blank"]
    shell = f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}'  # the pipe ends on the fds chromium expects
    process = subprocess.Popen(["bash", "-c", shell, _browser(), *flags], pass_fds=(to_browser, from_browser),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_browser)
    os.close(from_browser)
    watchdog = threading.Timer(timeout, process.kill)  # a hung browser closes the pipe: the test fails, not hangs
    watchdog.start()
    buffer = b""
    events: list[str] = []

    def receive() -> dict:
        nonlocal buffer
        while b"\0" not in buffer:
            chunk = os.read(replies, 1 << 20)
            assert chunk, "chromium closed the DevTools pipe"
            buffer += chunk
        line, buffer = buffer.split(b"\0", 1)
        return json.loads(line)

    def call(number: int, method: str, session: str | None = None, **params):
        message = {"id": number, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = receive()
            if reply.get("id") == number:
                assert "error" not in reply, reply["error"]
                return reply["result"]
            events.append(reply.get("method", ""))

    try:
        target = call(1, "Target.createTarget", url="about:blank")["targetId"]
        session = call(2, "Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        call(3, "Page.enable", session)
        call(4, "Page.navigate", session, url=url)
        while "Page.loadEventFired" not in events:
            events.append(receive().get("method", ""))
        result = call(5, "Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True,
                      timeout=timeout * 1000)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        call(6, "Browser.close")
        return result["result"]["value"]
    finally:
        watchdog.cancel()
        os.close(commands)
        os.close(replies)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _numbers(text: str) -> list[str]:
    return re.findall(r"[-+]?\d+\.\d+|n/a", text)


def test_page_in_a_real_browser(paged, tmp_path):
    if _browser() is None:
        pytest.skip("no chromium here: install it (apt-get install chromium, or bash scripts/setup.sh as root) "
                    "to open the listening page in a real browser")
    out, result = paged
    seen = run_in_browser((out / "index.html").resolve().as_uri(), _CHECK, profile=tmp_path / "profile")
    assert seen["title"].startswith("2 tracks of the test split") and seen["players"] == 2
    # every player's file is there and decodes: 2 s of mono
    assert len(seen["audio"]) == 2 * (1 + 5 * 4)
    for src, got in seen["audio"].items():
        assert "error" not in got, (src, got)
        assert abs(got["seconds"] - 2.0) < 0.05 and got["channels"] == 1, (src, got)
    assert seen["images"] and all(width > 0 for width in seen["images"].values()), seen["images"]
    assert "sdr.png" in seen["images"]
    # the tables on the page are results.csv's, every score and difference of it, to 2 decimals
    with open(out / "results.csv", newline="") as f:
        rows = {(r["kind"], r["model"], r["reference_model"], r["condition"], r["metric"]): r
                for r in csv.DictReader(f) if r["kind"] in ("score", "difference")}
    cells = {(c["kind"], c["model"], c.get("referenceModel", ""), c["condition"], c["metric"]): c["text"]
             for c in seen["cells"]}
    assert set(cells) == set(rows)
    for key, text in cells.items():
        row = rows[key]
        sign = "+" if key[0] == "difference" else ""
        shown = ("median", "ci_low", "ci_high") if row["ci_low"] != "nan" else ("median",)
        want = [f"{float(row[k]):{sign}.2f}" if row[k] != "nan" else "n/a" for k in shown]
        assert _numbers(text) == want, (key, text, want)
        if key[0] == "difference" and row["ci_low"] != "nan":
            assert text.endswith(row["verdict"]), (key, text)
