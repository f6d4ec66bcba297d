"""Separator: the Python API a user touches. ``Separator.load(path).separate(audio, stems=...)``.

It owns one conditioned model (or a set of dedicated ones, one per stem), runs long audio through fixed-size
chunks with overlap-add outside the model, and returns a dict from each requested name to audio shaped like
the input, at the input's sample rate.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .audio import (
    AudioError,
    SeekableAudio,
    StemWriter,
    as_float,
    check_output_rate,
    output_subtype,
    read_audio,
    resample,
    validate_audio,
)
from .checkpoint import PRETRAINED, load_checkpoint
from .chunking import overlap_add, overlap_add_blocks
from .fileio import atomic_folder, check_replaceable, check_writable, work_folder
from .hardware import PRECISION_CHOICES, autocast, choose_precision, resolve_device
from .models import SeparationModel
from .spectral import wiener
from .stems import StemQuery, UnknownStemError, parse_queries, parse_query, queries_to_z

PathLike = str | os.PathLike


@dataclass(frozen=True)
class SeparatorOptions:
    """How a :class:`Separator` runs, each default written once: the ``separate`` command and evaluation derive
    theirs from these fields (see :class:`Separator` for their meaning)."""

    niter: int = field(default=0, metadata={
        "help": "Wiener filter iterations across the requested outputs (0: plain masks)"})
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda, cuda:N or auto"})
    precision: str = field(default="fp32", metadata={
        "help": "the network's forward in fp32 or autocast to bf16 (STFT, masks, Wiener filter and ISTFT stay "
                "fp32); auto: bf16 on a GPU, and on a CPU with bf16 matrix units where the architecture is "
                "measured faster in it (as training's --precision auto)", "choices": PRECISION_CHOICES})
    chunk_seconds: float | None = 10.0
    overlap: float = 0.15
    batch_size: int = 8


class Separator:
    """Separate stems by name with a conditioned model or a set of dedicated models.

    ``model``: a :class:`~conditioned_sep.models.SeparationModel` such as :class:`ConditionedUNet`
    (conditioned, or one dedicated model), or a mapping stem -> dedicated model. ``niter``: multichannel Wiener
    filter iterations across the requested outputs (0 = plain masks).
    ``chunk_seconds``: chunk length (None = whole signal at once; memory then grows with the song).
    ``overlap``: fraction of a chunk shared with its neighbour, cross-faded linearly (0 to 0.5); rounded to
    whole steps of the model's frame grid (:attr:`~SeparationModel.frame_multiple` frames), and never below one
    step (``(frame_multiple - 1) * hop_length`` samples) so that chunks keep whole-signal frame alignment.
    ``batch_size``: most conditions (outputs) per forward pass. The models are moved to ``device``; they are
    put in eval mode during :meth:`separate` and restored to their previous mode afterwards. ``precision``: the
    network's forward in ``fp32``, ``bf16`` (or ``fp16`` on CUDA) autocast, or ``auto``
    (:func:`~conditioned_sep.hardware.choose_precision`); the chosen one is :attr:`precision`.
    """

    def __init__(
        self,
        model: SeparationModel | Mapping[str, SeparationModel],
        *,
        niter: int = SeparatorOptions.niter,
        chunk_seconds: float | None = SeparatorOptions.chunk_seconds,
        overlap: float = SeparatorOptions.overlap,
        device: str | torch.device = SeparatorOptions.device,
        batch_size: int = SeparatorOptions.batch_size,
        precision: str = SeparatorOptions.precision,
    ) -> None:
        if niter < 0:
            raise ValueError(f"niter must be >= 0, got {niter}")
        if chunk_seconds is not None and chunk_seconds <= 0:
            raise ValueError(f"chunk_seconds must be positive or None, got {chunk_seconds}")
        if not 0 <= overlap <= 0.5:
            raise ValueError(f"overlap is a fraction of the chunk in [0, 0.5], got {overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.niter, self.chunk_seconds, self.overlap, self.batch_size = niter, chunk_seconds, overlap, batch_size
        self.device = resolve_device(device, precision="fp32" if precision == "auto" else precision)
        if isinstance(model, SeparationModel):
            models = {"": model} if model.is_conditioned else {model.target: model}
        elif isinstance(model, Mapping):
            models = dict(model)
            self._check_dedicated(models)
        else:
            raise TypeError(f"model must be a SeparationModel (e.g. ConditionedUNet) or a mapping stem -> "
                            f"dedicated model, got {type(model).__name__}")
        self.models: dict[str, SeparationModel] = {k: m.to(self.device) for k, m in models.items()}
        first = next(iter(self.models.values()))
        self.config = first.config
        self.is_conditioned: bool = first.is_conditioned
        self.precision = choose_precision(precision, device=self.device, bf16_pays=type(first).bf16_pays)
        # chunking that suits every model of a dedicated set
        self.frame_multiple = math.lcm(*(m.frame_multiple for m in self.models.values()))
        self.context_frames = max(m.context_frames for m in self.models.values())
        if self.is_conditioned:
            self.stems: tuple[str, ...] = tuple(first.stems)
        else:
            self.stems = tuple(s for s in first.stems if s in self.models)

    @staticmethod
    def _check_dedicated(models: dict[str, SeparationModel]) -> None:
        if not models:
            raise ValueError("an empty set of models; pass one dedicated model per stem")
        ref = None
        for stem, m in models.items():
            if not isinstance(m, SeparationModel):
                raise TypeError(f"models[{stem!r}] is a {type(m).__name__}, expected a SeparationModel")
            if m.is_conditioned:
                raise ValueError(f"models[{stem!r}] is a conditioned model; pass it alone, not in a stem mapping")
            if m.target != stem:
                raise ValueError(f"models[{stem!r}] is a dedicated {m.target!r} model; key it by its target")
            sig = (m.config.sample_rate, m.config.n_fft, m.config.hop_length, m.config.audio_channels,
                   tuple(m.config.stems))
            if ref is not None and sig != ref:
                raise ValueError(f"dedicated models disagree on (sample_rate, n_fft, hop, channels, stems): "
                                 f"{ref} vs {sig} for {stem!r}; train them with one config")
            ref = sig

    @classmethod
    def pretrained(cls, **kwargs) -> Separator:
        """The shipped conditioned model (``conditioned_sep/pretrained/``; no network): the same as
        ``Separator.load("pretrained")``. ``kwargs`` go to :class:`Separator`."""
        return cls.load(PRETRAINED, **kwargs)

    @classmethod
    def load(cls, path: PathLike | Sequence[PathLike] | Mapping[str, PathLike], **kwargs) -> Separator:
        """One checkpoint (conditioned, or one dedicated model), a list of dedicated checkpoints, or a mapping
        stem -> dedicated checkpoint (each path a ``str``, ``bytes`` or ``os.PathLike``; the name ``"pretrained"``
        is the shipped model, :meth:`pretrained`). ``kwargs`` go to :class:`Separator`."""
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, (str, os.PathLike)):
            model, _ = load_checkpoint(path)
            return cls(model, **kwargs)
        if isinstance(path, Mapping):
            return cls({stem: load_checkpoint(os.fsdecode(p))[0] for stem, p in path.items()}, **kwargs)
        items = list(path) if isinstance(path, Iterable) else None
        if items is None or not all(isinstance(p, (str, bytes, os.PathLike)) for p in items):
            raise TypeError(f"Separator.load takes a checkpoint path (str, bytes or os.PathLike), a list of them or "
                            f"a mapping stem -> path; got {_describe(path)}")
        models: dict[str, SeparationModel] = {}
        for p in map(os.fsdecode, items):
            model, _ = load_checkpoint(p)
            if model.is_conditioned:
                raise ValueError(f"{p} holds a conditioned model; load it alone: Separator.load({str(p)!r})")
            if model.target in models:
                raise ValueError(f"two checkpoints for stem {model.target!r} (the second is {p})")
            models[model.target] = model
        return cls(models, **kwargs)

    def parse(self, stems: str | Sequence[str]) -> list[StemQuery]:
        """Queries against this separator's vocabulary (:func:`~conditioned_sep.stems.parse_queries`).

        A dedicated set answers the stems it has models for; a query whose sum in the full vocabulary needs a
        missing model is refused (with parts of other in the vocabulary, ``other`` alone is only the remainder).
        """
        queries = parse_queries(stems, vocabulary=self.stems)
        if not self.is_conditioned:
            for q in queries:
                full = parse_query(q.name, vocabulary=self.config.stems).stems
                missing = [s for s in full if s not in self.models]
                if missing:
                    raise UnknownStemError(f"{q.name!r} is {'+'.join(full)} in this vocabulary "
                                           f"{self.config.stems}, but there is no dedicated model for "
                                           f"{', '.join(missing)}; add their dedicated checkpoints")
        return queries

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def num_parameters(self) -> int:
        return sum(m.num_parameters for m in self.models.values())

    def __repr__(self) -> str:
        kind = "conditioned" if self.is_conditioned else "dedicated"
        return (f"Separator({kind}, stems={self.stems}, sample_rate={self.sample_rate}, niter={self.niter}, "
                f"parameters={self.num_parameters})")

    # ---------------------------------------------------------------------------------------------- public
    def separate(
        self, audio: PathLike | np.ndarray | Tensor, stems: str | Sequence[str] = "vocals", *,
        sample_rate: int | None = None,
    ) -> dict[str, Tensor]:
        """Separate ``audio`` into the requested ``stems`` -> ``{name: float32 tensor}`` shaped like the input.

        ``audio``: a file path, or ``(samples,)`` / ``(channels, samples)`` numpy or torch audio (mono or stereo,
        float or integer PCM) with its ``sample_rate`` in Hz. ``stems``: a name, a list of names, or sums such
        as ``"drums+bass"``; aliases (``"accompaniment"``) are accepted. Output is at the input's rate, on the
        input tensor's device (CPU for numpy and files). The input is never modified. Raises :class:`AudioError`
        for unusable audio (NaN or Inf, empty, more than two channels, too short to leave one sample at the
        model's rate).
        """
        queries = self.parse(stems)
        signal, rate, like = self._prepare(audio, sample_rate)
        x = signal if rate == self.sample_rate else resample(signal, orig_rate=rate, target_rate=self.sample_rate)
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.shape[-1] == 0:
            raise AudioError(f"audio too short: {signal.shape[-1]} sample(s) at {rate} Hz resample to none at the "
                             f"model's {self.sample_rate} Hz; pass at least {math.ceil(rate / self.sample_rate)} "
                             "samples")
        with self._eval():
            out = self._separate_array(x, queries)
        if rate != self.sample_rate:
            out = resample(out, orig_rate=self.sample_rate, target_rate=rate)
            n = signal.shape[-1]
            out = out[..., :n] if out.shape[-1] >= n else torch.nn.functional.pad(out, (0, n - out.shape[-1]))
        result = {}
        for i, q in enumerate(queries):
            y = out[i]
            if like["ndim"] == 1:
                y = y[0]
            result[q.name] = y.to(like["device"])
        return result

    def separate_file(
        self, path: PathLike, out_dir: PathLike, stems: str | Sequence[str] = "vocals", *, format: str = "wav",
        subtype: str | None = None, progress: bool = False,
    ) -> dict[str, Path]:
        """Separate the song at ``path`` into ``out_dir/<query>.<format>``, streaming from disk to disk.

        The song is read chunk by chunk and every stem written chunk by chunk, so peak memory is set by the chunk,
        not the song; only the requested ``stems`` are computed. ``format``: ``wav``, ``flac`` or ``mp3``
        (:data:`~conditioned_sep.audio.OUTPUT_FORMATS`), ``subtype`` the sample format (wav: ``PCM_16`` default,
        ``PCM_24``, ``FLOAT``). Stems are at the song's sample rate and length. ``out_dir`` is published whole: all
        its stems appear together or, on any error or kill, none and the earlier folder stays.

        ``out_dir`` is this song's own folder, and the rule is that no file this project did not write is ever
        deleted: a new or empty folder is filled, a folder an earlier ``separate_file`` wrote (its
        :data:`~conditioned_sep.fileio.MANIFEST` lists its stems) is replaced, and any other folder (one holding
        other files, or the song itself; the current, home or root folder) is refused with a
        :class:`~conditioned_sep.fileio.ForeignFolderError` before anything is read. Decoding (ffmpeg) and
        resampling use a scratch folder beside ``out_dir``. Returns ``{query: file}``.
        """
        queries = self.parse(stems)
        subtype = output_subtype(format, subtype)
        out_dir = Path(out_dir)
        check_replaceable(out_dir, inputs=[path], suggest=out_dir / Path(path).stem)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        check_writable(out_dir.parent)
        names = {q.name: f"{output_name(q.name)}.{format}" for q in queries}
        with contextlib.ExitStack() as stack:
            work = stack.enter_context(work_folder(out_dir))
            song = stack.enter_context(SeekableAudio(
                path, sample_rate=self.sample_rate, workdir=work,
                check_rate=lambda rate: check_output_rate(format, rate, name=str(path))))
            stack.enter_context(self._eval())
            folder = stack.enter_context(atomic_folder(out_dir, replace=True))
            writers = []
            for q in queries:
                writer = StemWriter(folder / names[q.name], channels=song.channels, from_rate=self.sample_rate,
                                    to_rate=song.source_rate, frames=song.source_frames, subtype=subtype)
                stack.callback(writer.close)
                writers.append(writer)
            chunk, stride = self._chunk_length(song.frames)
            blocks = overlap_add_blocks(self._chunk_fn(queries), lambda lo, hi: torch.from_numpy(song.read(lo, hi)),
                                        song.frames, **self._overlap_args(chunk, stride))
            total = 1 if chunk >= song.frames else math.ceil((song.frames - chunk) / stride) + 1
            with tqdm(total=total, desc=Path(path).name, unit="chunk", disable=not progress, leave=False) as bar:
                for _, block in blocks:  # (q, c, m), in order
                    for writer, stem in zip(writers, block.numpy()):
                        writer.write(stem)
                    bar.update()
            for writer in writers:
                writer.write(np.zeros((song.channels, 0), np.float32), last=True)
        return {name: out_dir / file for name, file in names.items()}

    # --------------------------------------------------------------------------------------------- helpers
    def _prepare(self, audio, sample_rate: int | None) -> tuple[np.ndarray | Tensor, int, dict]:
        """Validated float audio ``(channels, samples)`` (never the caller's buffer written to), its rate, and
        what the output should look like."""
        if isinstance(audio, (str, os.PathLike)):
            data, rate = read_audio(Path(audio))
            if sample_rate is not None and sample_rate != rate:
                raise ValueError(f"sample_rate={sample_rate} given for file {audio} whose rate is {rate}; "
                                 "omit sample_rate for files")
            validate_audio(data, name=str(audio), max_channels=2)
            return data, rate, {"ndim": 2, "device": torch.device("cpu")}
        if not isinstance(audio, (np.ndarray, Tensor)):
            raise TypeError(f"audio must be a file path, a numpy array or a torch tensor, got {type(audio).__name__}")
        if sample_rate is None:
            raise ValueError("sample_rate is required for array input: separate(audio, stems, sample_rate=44100)")
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate}")
        if audio.ndim not in (1, 2):
            raise AudioError(f"audio must be (samples,) or (channels, samples), got shape {tuple(audio.shape)}")
        device = audio.device if isinstance(audio, Tensor) else torch.device("cpu")
        data = as_float(audio.detach() if isinstance(audio, Tensor) else audio)
        validate_audio(data, max_channels=2)
        data = data[None] if data.ndim == 1 else data
        if isinstance(data, Tensor):
            data = data.to("cpu", torch.float32)
        else:
            data = data.astype(np.float32, copy=False)
        return data, int(sample_rate), {"ndim": audio.ndim, "device": device}

    @contextlib.contextmanager
    def _eval(self) -> Iterator[None]:
        modes = {k: m.training for k, m in self.models.items()}
        try:
            for m in self.models.values():
                m.eval()
            yield
        finally:
            for k, m in self.models.items():
                m.train(modes[k])

    def _chunk_length(self, n: int) -> tuple[int, int]:
        """(chunk, stride) in samples for a signal of ``n`` samples. Chunks hold a whole multiple of the models'
        frame grid (:attr:`~SeparationModel.frame_multiple` frames), so a model pads nothing inside a chunk, and
        start on that same grid, so a chunk sees the very frames (and strided-convolution phases) that
        whole-signal processing sees."""
        cfg = self.config
        if self.chunk_seconds is None:
            return n, n
        grid = self.frame_multiple
        frames = max(2, round(self.chunk_seconds * cfg.sample_rate / cfg.hop_length / grid)) * grid
        chunk = (frames - 1) * cfg.hop_length  # the STFT of (frames - 1) hops has ``frames`` frames
        if chunk >= n:
            return n, n
        # the stride is a whole number of grid steps and a chunk is one hop short of ``frames`` hops, so
        # neighbours must share at least one grid step: with less, the stride would exceed the chunk and
        # leave a gap no chunk covers. overlap=0 thus means the least overlap the grid allows.
        overlap_frames = max(grid, min(frames - grid, round(self.overlap * frames / grid) * grid))
        return chunk, (frames - overlap_frames) * cfg.hop_length

    def _separate_array(self, x: Tensor, queries: list[StemQuery]) -> Tensor:
        """``x (c, n)`` at the model rate -> ``(q, c, n)`` by chunked overlap-add (:func:`overlap_add`)."""
        # q: queries, c: channels, n: samples
        chunk, stride = self._chunk_length(x.shape[-1])
        return overlap_add(self._chunk_fn(queries), x, **self._overlap_args(chunk, stride))

    def _overlap_args(self, chunk: int, stride: int) -> dict[str, int]:
        hop = self.config.hop_length
        return {"chunk": chunk, "overlap": chunk - stride, "grid": self.frame_multiple * hop,
                "context": self.context_frames * hop}

    def _chunk_fn(self, queries: list[StemQuery]) -> Callable[[Tensor], Tensor]:
        """The function overlap-add applies: one stretch ``(c, m)`` at the model rate -> ``(q, c, m)`` on the CPU.
        Mono input to a stereo model goes in as two equal channels and comes out as their mean; a mono model
        separates each channel on its own."""

        def run(part: Tensor) -> Tensor:
            with torch.inference_mode():
                part = part.to(self.device)
                if self.config.audio_channels == 1:
                    out = torch.cat([self._run(part[i: i + 1], queries) for i in range(part.shape[0])], dim=1)
                elif part.shape[0] == 1:
                    out = self._run(part.expand(2, -1), queries).mean(1, keepdim=True)
                else:
                    out = self._run(part, queries)
                return out.cpu()

        return run

    def _run(self, x: Tensor, queries: list[StemQuery]) -> Tensor:
        """One chunk ``x (c, n)`` -> ``(q, c, n)``: STFT, masks for every query in batched passes, optional
        Wiener filter, ISTFT."""
        # q: queries, c: channels, f: freq, t: frames, n: samples
        model = next(iter(self.models.values()))
        spec = model.stft(x[None])  # (1, c, f, t)
        with autocast(self.device, self.precision):  # the network only; what follows is fp32 (as in training)
            if self.is_conditioned:
                z = queries_to_z(queries, vocabulary=self.stems).to(x.device)
                est = torch.cat([model(spec, zb).to(spec.dtype) for zb in z.split(self.batch_size)])  # (q, c, f, t)
            else:  # a sum of stems is the sum of the dedicated estimates
                needed = [s for s in self.stems if any(s in q.stems for q in queries)]
                stem_est = {s: self.models[s](spec).to(spec.dtype) for s in needed}
                est = torch.cat([sum(stem_est[s] for s in q.stems) for q in queries])  # (q, c, f, t)
        if self.niter > 0:
            est = self._wiener(est, spec[0], queries)
        return model.istft(est, length=x.shape[-1])

    def _wiener(self, est: Tensor, mix: Tensor, queries: list[StemQuery]) -> Tensor:
        """Wiener filtering across the requested outputs. Disjoint queries are filtered jointly (with a residual
        source for the stems nobody asked for); overlapping ones each against their own residual."""
        sets = [set(q.stems) for q in queries]
        disjoint = sum(len(s) for s in sets) == len(set().union(*sets))
        if disjoint:
            covered = set().union(*sets) == set(self.stems)
            sources = est if covered else torch.cat([est, self._residual(est, mix)[None]])
            return wiener(sources, mix, niter=self.niter)[: len(queries)]
        return torch.stack([wiener(torch.stack([e, self._residual(e[None], mix)]), mix, niter=self.niter)[0]
                            for e in est])

    @staticmethod
    def _residual(est: Tensor, mix: Tensor) -> Tensor:
        """What the estimates leave of the mixture, as an initial estimate: magnitude ``relu(|x| - sum |y|)``
        with the mixture's phase."""
        mag = (mix.abs() - est.abs().sum(0)).clamp_min(0)
        return mix * (mag / mix.abs().clamp_min(1e-12))


def _describe(value: object) -> str:
    """``value``'s type, and its elements' types for a sequence, for a TypeError."""
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {', '.join(sorted({type(v).__name__ for v in value})) or 'nothing'}"
    return type(value).__name__


def output_name(query: str) -> str:
    """A file name (without suffix) for a query such as ``"drums+bass"``: characters no file system takes become
    ``_``."""
    return re.sub(r"[\\/:*?\"<>|]", "_", query.strip()) or "_"


load = Separator.load
"""Module-level alias: ``conditioned_sep.load(path, **kwargs)``."""

__all__ = ["Separator", "load", "output_name"]
