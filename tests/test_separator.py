import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import pytest
import torch

import conditioned_sep
from conditioned_sep.audio import AudioError, resample, write_audio
from conditioned_sep.checkpoint import save_checkpoint
from conditioned_sep.fileio import MANIFEST, ForeignFolderError
from conditioned_sep.models import ConditionedUNet, SeparationConfig, SeparationModel
from conditioned_sep.separator import Separator
from conditioned_sep.spectral import wiener
from conditioned_sep.stems import STEMS, UnknownStemError

SR = 44100


def _model(**overrides) -> ConditionedUNet:
    torch.manual_seed(0)
    return ConditionedUNet.from_preset("tiny", **overrides)


def _dedicated(stems=STEMS) -> dict[str, ConditionedUNet]:
    return {s: _model(conditioned=False, target=s) for s in stems}


def _audio(seconds: float = 2.0, channels: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return 0.3 * torch.randn(channels, int(seconds * SR), generator=gen)


def test_public_api_is_exported():
    assert conditioned_sep.Separator is Separator and conditioned_sep.load == Separator.load


@pytest.mark.parametrize("shape", [(SR,), (1, SR), (2, SR)])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_output_is_shaped_like_the_input(shape, kind):
    sep = Separator(_model(), chunk_seconds=0.5)
    x = _audio(1.0)[: shape[0] if len(shape) == 2 else 1].reshape(shape)
    x = x.numpy() if kind == "numpy" else x
    out = sep.separate(x, ["vocals", "drums+bass"], sample_rate=SR)
    assert list(out) == ["vocals", "drums+bass"]
    for y in out.values():
        assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and tuple(y.shape) == shape
        assert torch.isfinite(y).all()


def test_mono_is_processed_as_duplicated_stereo():
    sep = Separator(_model(), chunk_seconds=None)
    x = _audio(1.0, channels=1)
    mono = sep.separate(x, "vocals", sample_rate=SR)["vocals"]
    stereo = sep.separate(x.repeat(2, 1), "vocals", sample_rate=SR)["vocals"]
    assert torch.allclose(mono, stereo.mean(0, keepdim=True), atol=1e-6)


def test_mono_model_takes_stereo_input():
    sep = Separator(_model(audio_channels=1), chunk_seconds=None)
    x = _audio(1.0)
    out = sep.separate(x, "bass", sample_rate=SR)["bass"]
    left = sep.separate(x[:1], "bass", sample_rate=SR)["bass"]
    assert out.shape == x.shape and torch.allclose(out[:1], left, atol=1e-6)


def test_other_sample_rates_come_back_at_their_rate_and_length():
    """22.05 kHz input equals resampling it to the model rate by hand, separating there and resampling back
    (cropped to the input length). Stated tolerance: 1e-5 absolute (float32 round-off; same soxr calls)."""
    sep = Separator(_model(), chunk_seconds=0.5)
    x = _audio(1.0)[:, :22050 + 7].numpy()
    out = sep.separate(x, "vocals", sample_rate=22050)
    assert out["vocals"].shape == x.shape
    up = resample(x, orig_rate=22050, target_rate=SR)
    at_model_rate = sep.separate(up, "vocals", sample_rate=SR)["vocals"]
    expected = resample(at_model_rate, orig_rate=SR, target_rate=22050)[:, : x.shape[1]]
    assert expected.shape == x.shape
    assert (out["vocals"] - expected).abs().max() < 1e-5
    assert out["vocals"].abs().max() > 1e-2  # not trivially equal (both silent)


def test_integer_pcm_is_scaled_and_input_never_modified():
    sep = Separator(_model(), chunk_seconds=0.5)
    x = (_audio(1.0) * 2**14).round().to(torch.int16)
    x_before = x.clone()
    as_int = sep.separate(x.numpy(), "drums", sample_rate=SR)["drums"]
    as_float = sep.separate(x.float() / 2**15, "drums", sample_rate=SR)["drums"]
    assert torch.allclose(as_int, as_float, atol=1e-6)
    assert torch.equal(x, x_before)
    f = _audio(1.0)
    f_np = f.numpy().copy()
    f_before = f.clone()
    sep.separate(f, ["vocals", "other"], sample_rate=SR)
    sep.separate(f_np, "vocals", sample_rate=SR)
    assert torch.equal(f, f_before) and np.array_equal(f_np, f_before.numpy())


def test_chunked_matches_whole_signal():
    """Chunks start on the U-Net's frame grid and cross-fade: differences come only from the receptive field
    reaching past a chunk edge. Stated tolerance: max error below 1e-3 of the peak, RMS error below 1e-4."""
    model = _model()
    x = _audio(4.0)
    whole = Separator(model, chunk_seconds=None).separate(x, ["vocals", "accompaniment"], sample_rate=SR)
    chunked = Separator(model, chunk_seconds=1.0, overlap=0.25).separate(x, ["vocals", "accompaniment"],
                                                                          sample_rate=SR)
    for name in whole:
        err = chunked[name] - whole[name]
        assert err.abs().max() < 1e-3 * whole[name].abs().max()
        assert err.norm() < 1e-4 * whole[name].norm()


@pytest.mark.parametrize("overlap", [0.0, 0.01])
def test_least_overlap_covers_the_signal_and_matches_whole_signal(overlap):
    """overlap=0 (or a fraction below one grid step) means one step of the U-Net's frame grid: chunks keep their
    frame alignment and leave no gap. Seams are less hidden than with a wide overlap, since the receptive field
    (~24 frames on the tiny preset) reaches past a chunk edge into the short cross-fade: measured max error
    3.1e-3 of the peak and RMS 4.2e-4 of the norm. Stated tolerance: max below 1e-2 of the peak, RMS below 1e-3
    (a gap or a wrong normalisation gives errors of order 1)."""
    model = _model()
    x = _audio(4.0)
    sep = Separator(model, chunk_seconds=1.0, overlap=overlap)
    chunk, stride = sep._chunk_length(x.shape[1])
    hop, grid = model.config.hop_length, model.frame_multiple
    assert chunk - stride == (grid - 1) * hop and stride % (grid * hop) == 0
    whole = Separator(model, chunk_seconds=None).separate(x, "vocals", sample_rate=SR)["vocals"]
    chunked = sep.separate(x, "vocals", sample_rate=SR)["vocals"]
    err = chunked - whole
    assert err.abs().max() < 1e-2 * whole.abs().max()
    assert err.norm() < 1e-3 * whole.norm()
    short = Separator(model, chunk_seconds=0.3, overlap=overlap).separate(x[:, : SR], "vocals", sample_rate=SR)
    assert short["vocals"].shape == (2, SR) and torch.isfinite(short["vocals"]).all()


def test_wiener_keeps_the_sum_of_all_stems_equal_to_the_mixture():
    x = _audio(1.0)
    out = Separator(_model(), niter=1, chunk_seconds=0.5).separate(x, list(STEMS), sample_rate=SR)
    assert (sum(out.values()) - x).abs().max() < 1e-4
    plain = Separator(_model(), niter=0, chunk_seconds=0.5).separate(x, list(STEMS), sample_rate=SR)
    assert (sum(plain.values()) - x).abs().max() > 1e-2  # masks alone do not sum to one


def test_wiener_with_partial_and_overlapping_requests():
    x = _audio(1.0)
    sep = Separator(_model(), niter=2, chunk_seconds=None)
    pair = sep.separate(x, ["vocals", "accompaniment"], sample_rate=SR)
    assert (pair["vocals"] + pair["accompaniment"] - x).abs().max() < 1e-4
    partial = sep.separate(x, ["vocals", "drums"], sample_rate=SR)  # a residual source takes the rest
    overlapping = sep.separate(x, ["vocals", "vocals+drums"], sample_rate=SR)
    # reference: spectral.wiener called directly, with the residual relu(|x| - sum |y|) at the mixture's phase
    model = sep.models[""].eval()  # as inside separate: no dropout
    with torch.no_grad():
        spec = model.stft(x[None])  # (1, c, f, t)
        z = {"vocals": [1.0, 0, 0, 0], "drums": [0, 1.0, 0, 0], "vocals+drums": [1.0, 1.0, 0, 0]}
        est = {k: model(spec, torch.tensor([v]))[0] for k, v in z.items()}  # each (c, f, t)

        def filtered(names: list[str]) -> torch.Tensor:
            ys = torch.stack([est[k] for k in names])
            mag = (spec[0].abs() - ys.abs().sum(0)).clamp_min(0)
            residual = spec[0] * mag / spec[0].abs().clamp_min(1e-12)
            out = wiener(torch.cat([ys, residual[None]]), spec[0], niter=2)[: len(names)]
            return model.istft(out, length=x.shape[-1])

        joint = filtered(["vocals", "drums"])
        own = {k: filtered([k])[0] for k in ["vocals", "vocals+drums"]}
    # stated tolerance: 1e-5 absolute (float32 round-off of the same operations; peaks are ~1)
    for i, k in enumerate(["vocals", "drums"]):
        assert (partial[k] - joint[i]).abs().max() < 1e-5
    for k in own:
        assert (overlapping[k] - own[k]).abs().max() < 1e-5
    assert (overlapping["vocals"] - partial["vocals"]).abs().max() > 1e-4  # a different residual, a different filter


def test_conditioned_sum_uses_one_z_with_several_ones():
    model = _model().eval()
    x = _audio(1.0)
    out = Separator(model, chunk_seconds=None).separate(x, ["drums+bass", "drums"], sample_rate=SR)
    with torch.no_grad():
        spec = model.stft(x[None])
        est = model(spec, torch.tensor([[0.0, 1.0, 1.0, 0.0]]))
        expected = model.istft(est, length=x.shape[-1])[0]
    assert torch.allclose(out["drums+bass"], expected, atol=1e-5)
    assert (out["drums+bass"] - out["drums"]).abs().max() > 1e-5  # a different z, a different output


def test_one_batched_forward_with_a_shared_encoder():
    for where, enc_batch in [("decoder", 1), ("both", 4)]:
        model = _model(film_where=where)
        calls = {"enc": [], "dec": []}
        model.encoder[0].register_forward_hook(lambda m, i, o: calls["enc"].append(i[0].shape[0]))
        model.decoder[0].register_forward_hook(lambda m, i, o: calls["dec"].append(i[0].shape[0]))
        Separator(model, chunk_seconds=None).separate(_audio(0.5), list(STEMS), sample_rate=SR)
        assert calls == {"enc": [enc_batch], "dec": [4]}


def test_model_mode_is_restored():
    model = _model().train()
    Separator(model).separate(_audio(0.3), "vocals", sample_rate=SR)
    assert model.training


def test_dedicated_set_behind_the_same_api():
    sep = Separator(_dedicated(), chunk_seconds=0.5)
    assert not sep.is_conditioned and sep.stems == STEMS
    x = _audio(1.0)
    out = sep.separate(x, ["drums", "bass", "drums+bass", "accompaniment"], sample_rate=SR)
    assert torch.allclose(out["drums+bass"], out["drums"] + out["bass"], atol=1e-5)
    assert sep.num_parameters == 4 * _model(conditioned=False, target="bass").num_parameters
    out = Separator(_dedicated(), niter=1).separate(x, list(STEMS), sample_rate=SR)
    assert (sum(out.values()) - x).abs().max() < 1e-4
    partial = Separator(_dedicated(("drums", "bass")))
    assert partial.stems == ("drums", "bass")
    with pytest.raises(UnknownStemError, match="unknown stem 'vocals'.*valid: stems drums, bass"):
        partial.separate(x, "vocals", sample_rate=SR)


def test_six_stem_vocabulary_conditioned_and_dedicated():
    six = ("vocals", "drums", "bass", "piano", "guitar", "other")
    x = _audio(0.5)
    sep = Separator(_model(stems=six), chunk_seconds=None)
    out = sep.separate(x, "vocals,drums,bass,other", sample_rate=SR)  # MUSDB18's four from a 6-stem model
    assert all(y.shape == x.shape and torch.isfinite(y).all() for y in out.values())
    with_wiener = Separator(_model(stems=six), chunk_seconds=None, niter=1).separate(x, "vocals,drums,bass,other",
                                                                                   sample_rate=SR)
    assert (sum(with_wiener.values()) - x).abs().max() < 1e-4  # a disjoint cover of the vocabulary sums to x
    dedicated = Separator({s: _model(conditioned=False, target=s, stems=six) for s in ("piano", "guitar", "other")},
                          chunk_seconds=None)
    out = dedicated.separate(x, ["other", "piano", "guitar", "other+piano+guitar"], sample_rate=SR)
    torch.testing.assert_close(out["other"], out["other+piano+guitar"])
    remainder_only = Separator({s: _model(conditioned=False, target=s, stems=six) for s in ("vocals", "other")})
    with pytest.raises(UnknownStemError, match=r"'other' is piano\+guitar\+other in this vocabulary .*no dedicated "
                                               "model for piano, guitar"):
        remainder_only.separate(x, "other", sample_rate=SR)
    assert remainder_only.separate(x, "vocals", sample_rate=SR)["vocals"].shape == x.shape


def test_dedicated_set_is_checked():
    models = _dedicated(("drums",))
    with pytest.raises(ValueError, match="dedicated 'drums' model; key it by its target"):
        Separator({"bass": models["drums"]})
    with pytest.raises(ValueError, match="conditioned model; pass it alone"):
        Separator({"vocals": _model()})
    with pytest.raises(ValueError, match="disagree"):
        Separator({"drums": models["drums"], "bass": _model(conditioned=False, target="bass", hop_length=64)})


def test_load_conditioned_and_dedicated_checkpoints(tmp_path):
    model = _model().eval()
    path = save_checkpoint(tmp_path / "c.ckpt", model)
    x = _audio(0.5)
    loaded = conditioned_sep.load(path, chunk_seconds=None)
    assert loaded.is_conditioned and loaded.sample_rate == SR
    assert torch.equal(loaded.separate(x, "vocals", sample_rate=SR)["vocals"],
                       Separator(model, chunk_seconds=None).separate(x, "vocals", sample_rate=SR)["vocals"])
    paths = {s: save_checkpoint(tmp_path / f"{s}.ckpt", m) for s, m in _dedicated().items()}
    by_list = Separator.load(list(paths.values()))
    by_map = Separator.load(paths)
    assert by_list.stems == by_map.stems == STEMS
    assert torch.equal(by_list.separate(x, "bass", sample_rate=SR)["bass"],
                       by_map.separate(x, "bass", sample_rate=SR)["bass"])
    with pytest.raises(ValueError, match="key it by its target"):
        Separator.load({"vocals": paths["drums"]})
    with pytest.raises(ValueError, match="conditioned model; load it alone"):
        Separator.load([path, paths["drums"]])


def test_file_input(tmp_path):
    x = _audio(0.5)
    wav = write_audio(tmp_path / "mix.wav", x, SR, subtype="FLOAT")
    sep = Separator(_model(), chunk_seconds=None)
    from_file = sep.separate(wav, "vocals")["vocals"]
    assert torch.allclose(from_file, sep.separate(x, "vocals", sample_rate=SR)["vocals"], atol=1e-6)
    with pytest.raises(ValueError, match="omit sample_rate for files"):
        sep.separate(str(wav), "vocals", sample_rate=8000)


def test_file_with_three_channels_is_refused(tmp_path):
    wav = write_audio(tmp_path / "surround.wav", _audio(0.2, channels=3), SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="has 3 channels.*at most 2 are supported"):
        Separator(_model(), chunk_seconds=None).separate(wav, "vocals")


def test_clipping_input_is_separated():
    out = Separator(_model()).separate(_audio(0.5) * 10, "vocals", sample_rate=SR)["vocals"]
    assert torch.isfinite(out).all() and out.abs().max() > 1


def test_bad_inputs_are_clear_errors():
    sep = Separator(_model())
    x = _audio(0.2)
    nan = x.clone()
    nan[0, 5] = float("nan")
    inf = x.numpy().copy()
    inf[1, 3] = np.inf
    with pytest.raises(AudioError, match="NaN or Inf"):
        sep.separate(nan, "vocals", sample_rate=SR)
    with pytest.raises(AudioError, match="NaN or Inf"):
        sep.separate(inf, "vocals", sample_rate=SR)
    with pytest.raises(AudioError, match="empty"):
        sep.separate(np.zeros((2, 0), np.float32), "vocals", sample_rate=SR)
    with pytest.raises(AudioError, match="3 channels"):
        sep.separate(torch.zeros(3, 1000), "vocals", sample_rate=SR)
    with pytest.raises(AudioError, match=r"\(samples,\) or \(channels, samples\)"):
        sep.separate(torch.zeros(1, 2, 1000), "vocals", sample_rate=SR)
    with pytest.raises(ValueError, match="sample_rate is required"):
        sep.separate(x, "vocals")
    with pytest.raises(UnknownStemError, match="unknown stem 'guitar'.*vocals, drums, bass, other"):
        sep.separate(x, "guitar", sample_rate=SR)
    with pytest.raises(TypeError, match="file path, a numpy array or a torch tensor"):
        sep.separate([0.0, 0.1], "vocals", sample_rate=SR)
    with pytest.raises(FileNotFoundError):
        sep.separate("/no/such/file.wav", "vocals")
    with pytest.raises(ValueError, match="overlap is a fraction"):
        Separator(_model(), overlap=0.9)
    with pytest.raises(ValueError, match="niter must be >= 0"):
        Separator(_model(), niter=-1)


@dataclass
class _PassConfig(SeparationConfig):
    arch: str = field(default="pass-through", init=False)


class _PassThrough(SeparationModel):
    """A model through the interface only: every query's estimate is the mixture (an identity mask), with a
    frame grid and a context need of its own."""

    config_class = _PassConfig

    def __init__(self, config: _PassConfig, *, frame_multiple: int, context_frames: int) -> None:
        super().__init__(config)
        self._grid, self._context = frame_multiple, context_frames
        self.calls: list[int] = []

    @property
    def frame_multiple(self) -> int:
        return self._grid

    @property
    def context_frames(self) -> int:
        return self._context

    def forward(self, spec, z=None):
        # q: conditions, c: channels, f: freq, t: frames
        q = self.check_z(z, spec.shape[0])
        self.calls.append(spec.shape[-1])
        return spec.expand(q, -1, -1, -1)  # (q, c, f, t)


# n_fft / hop ratios 2, 4 and 8 (every ratio ModelConfig accepts is hop <= n_fft / 2)
EDGE_CONFIGS = [(256, 128), (1024, 512), (256, 64), (512, 64)]


def _edge_lengths(n_fft: int, hop: int) -> list[int]:
    return sorted({1, 2, hop - 1, hop, hop + 1, n_fft - 1, n_fft + 1, 255}
                  | {k * hop + d for k in (3, 20, 41) for d in (-1, 0, 1)})


@pytest.mark.parametrize("n_fft,hop", EDGE_CONFIGS)
def test_any_model_of_the_interface_reconstructs_every_length(n_fft, hop):
    """Separator needs only stft / istft, forward, frame_multiple and context_frames. With identity masks the
    output is the input, around every chunk and hop boundary: chunks (of 16 frames) start on the model's grid
    of 4 frames and get 2 frames of context. Stated tolerance: 1e-5 of the peak (float32 FFT round-off).
    Before the STFT covered the last samples with two windows, 1024 / 512 was off by 3e-3 here."""
    model = _PassThrough(_PassConfig(n_fft=n_fft, hop_length=hop), frame_multiple=4, context_frames=2)
    sep = Separator(model, chunk_seconds=16 * hop / SR, overlap=0.25)
    gen = torch.Generator().manual_seed(0)
    for n in _edge_lengths(n_fft, hop):
        x = torch.rand(2, n, generator=gen) * 2 - 1
        out = sep.separate(x, ["vocals", "drums+bass"], sample_rate=SR)
        for y in out.values():
            assert y.shape == x.shape and (y - x).abs().max() < 1e-5 * x.abs().max(), n
    assert max(model.calls) == 15 + 2 * 4 + 1  # frames of a chunk (15 hops) and its context (2 rounded up to 4)


@pytest.mark.parametrize("n_fft,hop", EDGE_CONFIGS)
def test_the_last_samples_never_spike(n_fft, hop):
    """The reported bug: with hop = n_fft / 2, a length of -1 modulo the hop made the last samples come out 10-70x
    the input peak (255 samples into the tiny preset: 20.5 for an input peak of 0.93). Masks are in [0, 1], so the
    output stays near the input's level: measured at most 0.7x over these lengths. Stated bound: 2x."""
    torch.manual_seed(0)
    model = ConditionedUNet.from_preset("tiny", n_fft=n_fft, hop_length=hop, n_bins=64)
    sep = Separator(model, chunk_seconds=0.05)
    for n in _edge_lengths(n_fft, hop):
        x = torch.rand(2, n, generator=torch.Generator().manual_seed(n)) * 2 - 1
        out = sep.separate(x, ["vocals", "drums+bass", "other"], sample_rate=SR)
        for y in out.values():
            assert y.abs().max() < 2 * x.abs().max(), n


def test_audio_that_resamples_to_nothing_is_a_clear_error():
    """One sample at 96 kHz is 0.46 samples at the model's 44.1 kHz: refused, naming the way out; three samples
    (the suggested least) come back at the input's rate and length."""
    sep = Separator(_model())
    with pytest.raises(AudioError, match=r"audio too short: 1 sample\(s\) at 96000 Hz resample to none at the "
                                         r"model's 44100 Hz; pass at least 3 samples"):
        sep.separate(np.full((2, 1), 0.5, np.float32), "vocals", sample_rate=96000)
    out = sep.separate(np.full(3, 0.5, np.float32), ["vocals", "bass"], sample_rate=96000)
    assert all(y.shape == (3,) and torch.isfinite(y).all() for y in out.values())


# ---- streaming from disk to disk -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate, channels", [(44100, 2), (22050, 1), (48000, 2)])
def test_separate_file_streams_the_same_stems_as_separate(tmp_path, rate, channels):

    torch.manual_seed(0)
    sep = Separator(ConditionedUNet.from_preset("tiny").eval(), chunk_seconds=0.3)  # several chunks
    x = (0.1 * np.random.default_rng(1).standard_normal((channels, int(1.3 * rate)))).astype(np.float32)
    song = write_audio(tmp_path / "song.wav", x, rate, subtype="FLOAT")
    files = sep.separate_file(song, tmp_path / "out", ["vocals", "drums+bass"], subtype="FLOAT")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST, "drums+bass.wav", "vocals.wav"]
    in_memory = sep.separate(song, ["vocals", "drums+bass"])
    for name, path in files.items():
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
        assert file_rate == rate and data.T.shape == (channels, x.shape[1])
        # the streamed resampler and overlap-add are the in-memory ones, block by block: identical samples
        assert np.array_equal(data.T, in_memory[name].numpy())


def test_separate_file_formats_and_bad_options(tmp_path):

    sep = Separator(ConditionedUNet.from_preset("tiny").eval())
    song = write_audio(tmp_path / "song.wav", 0.1 * np.ones((2, 8000), np.float32), 44100)
    for fmt, subtype in [("flac", "PCM_24"), ("mp3", None), ("wav", "PCM_24")]:
        path = sep.separate_file(song, tmp_path / fmt, "vocals", format=fmt, subtype=subtype)["vocals"]
        info = sf.info(str(path))
        assert path.suffix == f".{fmt}" and info.frames == 8000 and info.samplerate == 44100
    with pytest.raises(ValueError, match="unknown output format 'ogg'; choose one of wav, flac, mp3"):
        sep.separate_file(song, tmp_path / "x", "vocals", format="ogg")
    with pytest.raises(ValueError, match="flac takes the sample formats PCM_16, PCM_24, got 'FLOAT'"):
        sep.separate_file(song, tmp_path / "x", "vocals", format="flac", subtype="FLOAT")
    assert not (tmp_path / "x").exists()


def test_a_song_folder_is_published_whole_or_not_at_all(tmp_path, monkeypatch):
    from conditioned_sep.audio import StemWriter

    sep = Separator(ConditionedUNet.from_preset("tiny").eval(), chunk_seconds=0.2)
    song = write_audio(tmp_path / "song.wav", 0.1 * np.ones((2, 30000), np.float32), 44100)
    sep.separate_file(song, tmp_path / "out", ["vocals", "bass"])
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    calls = []
    real = StemWriter.write

    def killed(self, block, **kwargs):  # dies half way through the second run, after some stems were written
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, block, **kwargs)

    monkeypatch.setattr(StemWriter, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        sep.separate_file(song, tmp_path / "out", ["vocals", "drums"])
    # the earlier folder as it was: no new stem beside old ones, no temporary folder or work files left
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "song.wav"]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_separate_file_never_deletes_a_file_it_did_not_write(tmp_path, monkeypatch):
    """The reported data loss: ``separate_file("album/song.wav", "album", ...)`` replaced album/ whole, deleting
    song.wav and notes.txt. Now: refused before anything is read or written, naming the folder and the way out;
    a new folder is filled, a folder of ours (with its manifest) replaced, one the user added a file to refused."""
    sep = Separator(ConditionedUNet.from_preset("tiny").eval())
    album = tmp_path / "album"
    album.mkdir()
    song = write_audio(album / "song.wav", 0.1 * np.ones((2, 8000), np.float32), 44100)
    (album / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in album.iterdir()}
    with pytest.raises(ForeignFolderError, match=r"album holds the input .*song\.wav: replacing the folder would "
                                                 r"delete it; pass a new folder, such as .*album/song"):
        sep.separate_file(song, album, "vocals")
    assert {p.name: p.read_bytes() for p in album.iterdir()} == before and _names(tmp_path) == ["album"]
    other = tmp_path / "other.wav"
    write_audio(other, 0.1 * np.ones((2, 8000), np.float32), 44100)
    with pytest.raises(ForeignFolderError, match=r"did not write \(notes\.txt, song\.wav\)"):
        sep.separate_file(other, album, "vocals")
    assert {p.name: p.read_bytes() for p in album.iterdir()} == before
    # the folder the message suggests works, and a second run replaces our own folder
    sep.separate_file(song, album / "song", ["vocals", "bass"])
    sep.separate_file(song, album / "song", "drums")
    assert _names(album / "song") == [MANIFEST, "drums.wav"]
    (album / "song" / "lyrics.txt").write_text("mine too")
    with pytest.raises(ForeignFolderError, match=r"lyrics\.txt"):
        sep.separate_file(song, album / "song", "vocals")
    assert _names(album / "song") == [MANIFEST, "drums.wav", "lyrics.txt"]
    # the current folder: refused, and no ``..partial-PID-old-*`` folder left in it
    monkeypatch.chdir(album)
    for where in (".", ""):
        with pytest.raises(ForeignFolderError, match="is the current folder: it is never replaced"):
            sep.separate_file(song, where, "vocals")
    assert _names(album) == ["notes.txt", "song", "song.wav"] and _names(tmp_path) == ["album", "other.wav"]
    with pytest.raises(ForeignFolderError, match="is the file-system root"):
        sep.separate_file(song, "/", "vocals")
    # an empty folder is filled
    (tmp_path / "empty").mkdir()
    sep.separate_file(song, tmp_path / "empty", "vocals")
    assert _names(tmp_path / "empty") == [MANIFEST, "vocals.wav"]


def test_a_killed_runs_work_folder_is_removed_by_the_next_run(tmp_path):
    """A killed run left ``.<song>.work-*/resampled.wav`` (a float32 copy of the song) even after later runs."""
    sep = Separator(ConditionedUNet.from_preset("tiny").eval())
    song = write_audio(tmp_path / "song.wav", 0.1 * np.ones((2, 9600), np.float32), 48000)  # resampled on the way
    dead = tmp_path / ".song.work.partial-999999999-x"
    alive = tmp_path / f".song.work.partial-{os.getppid()}-x"  # a live process's (pytest's parent)
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "resampled.wav").write_bytes(b"\0" * 4096)
    sep.separate_file(song, tmp_path / "song", "vocals")
    assert _names(tmp_path) == [alive.name, "song", "song.wav"]


def test_mp3_at_a_rate_it_cannot_hold_is_refused_before_resampling(tmp_path, monkeypatch):
    """192 kHz with format mp3 was refused only after the whole song was resampled, with a hint about the subtype."""
    from conditioned_sep import audio

    def resampling(*args, **kwargs):
        raise AssertionError("the song was resampled before the format was checked")

    monkeypatch.setattr(audio, "_resampled_copy", resampling)
    sep = Separator(ConditionedUNet.from_preset("tiny").eval())
    song = write_audio(tmp_path / "hi.wav", 0.1 * np.ones((2, 19200), np.float32), 192000)
    with pytest.raises(AudioError, match=r"hi\.wav is at 192000 Hz, and mp3 takes only 8000, .*, 48000 Hz: write "
                                         r"wav or flac for this song, or resample it to 48000 Hz first"):
        sep.separate_file(song, tmp_path / "out", "vocals", format="mp3")
    assert _names(tmp_path) == ["hi.wav"]


def test_load_takes_bytes_paths_and_names_the_types_it_takes(tmp_path):
    path = save_checkpoint(tmp_path / "m.ckpt", _model())
    assert Separator.load(os.fsencode(path)).is_conditioned  # was: TypeError ... not int
    with pytest.raises(TypeError, match=r"a checkpoint path \(str, bytes or os.PathLike\), a list of them or a "
                                        r"mapping stem -> path; got int"):
        Separator.load(5)
    with pytest.raises(TypeError, match="got list of int"):
        Separator.load([1, 2])


def test_an_unknown_or_missing_device_is_a_clear_error():
    with pytest.raises(ValueError, match=r"device must be auto, cpu, cuda or cuda:N, got 'bogus'"):
        Separator(_model(), device="bogus")
    missing = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=rf"device '{missing}' asked for, but"):
        Separator(_model(), device=missing)
