"""A file as a stream of blocks at the target rate: ``open_audio_stream`` -> ``AudioStream``.

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``AudioStream`` is the chunked
counterpart of ``load_audio``: it yields float32 ``(channels, n)`` blocks, decoded block by
block (``blocks.py``, channel policy applied), resampled by ``StreamingResampler`` with context
carried between blocks, and normalised when ``audio.normalize`` (statistics from a first pass
over the file). Concatenated, the blocks equal ``load_audio``'s waveform up to float32 rounding.
``execute/chunked.py`` runs the stack on them.

The resampler: torchaudio's polyphase sinc resampler is itself one strided conv. With the rates
reduced by their greatest common divisor to ``orig`` and ``new`` and a filter half-width ``w``:
``new`` output phases of ``2w + orig`` taps, stride ``orig``, ``w`` zeros before the signal and
``w + orig`` after, the phases interleaved and the output truncated to
``ceil(new * frames / orig)``. ``StreamingResampler`` applies it with the buffer-and-skip rule of
``windows.Window``, the one every conv layer streams with, so any block size gives the
whole-signal result; see "The resampler as a conv" in ``docs/geometry.md``. Each window is
computed by ``polyphase.PolyphaseFilter`` (only the taps each phase uses), as ``signal.resample``
does for the whole file. ``audio.resampler=soxr`` streams through ``soxr_backend.SoxrStream``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Union

import torch

from conv_pipeline.config.checks import validate_chunk_seconds
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.load.blocks import BlockReader, open_blocks
from conv_pipeline.load.info import AudioInfo
from conv_pipeline.load.polyphase import CPU, polyphase_filter
from conv_pipeline.load.signal import (
    capped_block_frames,
    normalize_waveform,
    resampled_length,
)
from conv_pipeline.load.soxr_backend import SoxrStream
from conv_pipeline.windows import Moments


# ---------------------------------------------------------------- the resampler
class StreamingResampler:
    """``torchaudio.functional.resample`` (default sinc_interp_hann, width 6, rolloff 0.99) on a stream.

    ``push((C, n))`` returns the resampled samples it completes; ``flush()`` the rest. The
    concatenation has ``ceil(new * frames / orig)`` samples, equal to the whole-signal result up
    to float32 rounding (the same filter over the same windows, ``polyphase.PolyphaseFilter``).

    The buffer-and-skip rule of ``windows.Window``, kept channel-major: window ``m`` reads input
    samples ``m * orig - w .. m * orig - w + span - 1`` (zeros before the first and after the last);
    it is computed once the input reaches its end, and ``tail`` keeps the samples from the next
    window's start on.
    """

    def __init__(self, orig: int, new: int, channels: int, dtype=torch.float32, device=CPU) -> None:
        self.filter = polyphase_filter(int(orig), int(new), dtype, torch.device(device))
        self.orig_hz, self.new_hz = int(orig), int(new)
        self.orig, self.new, self.width = self.filter.orig, self.filter.new, self.filter.width
        self.tail = torch.zeros(channels, 0, dtype=dtype, device=device)  # input from sample tail_start on
        self.tail_start = 0
        self.windows = 0  # windows computed so far
        self.channels = channels
        self.frames_in = 0
        self.frames_out = 0

    def _run(self, upto: int) -> torch.Tensor:
        """Windows ``self.windows .. upto - 1`` as ``(C, (upto - self.windows) * new)``."""
        m = upto - self.windows
        out = self.tail.new_empty(self.channels, max(0, m) * self.new)
        if m <= 0:
            return out
        first = self.windows * self.orig - self.width  # input sample the first window starts at
        self.filter.run(self.tail, first - self.tail_start, m, out)
        self.windows = upto
        drop = max(0, upto * self.orig - self.width - self.tail_start)  # before the next window's start
        self.tail = self.tail[:, drop:]  # a view of the last concatenation: never of the caller's block
        self.tail_start += drop
        return out

    @torch.inference_mode()
    def push(self, x: torch.Tensor) -> torch.Tensor:
        self.frames_in += int(x.shape[-1])
        self.tail = torch.cat([self.tail, x.to(self.tail.dtype)], dim=1)
        reach = self.frames_in + self.width - self.filter.span  # the last window start whose input is all here
        y = self._run(reach // self.orig + 1 if reach >= 0 else 0)
        self.frames_out += int(y.shape[-1])
        return y

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        total = resampled_length(self.frames_in, self.orig_hz, self.new_hz)
        y = self._run(-(-total // self.new))
        keep = total - self.frames_out
        if keep < 0 or keep > y.shape[-1]:
            raise RuntimeError("internal error: the streaming resampler's length disagrees with torchaudio's")
        self.frames_out += keep
        return y[:, :keep]


def make_resampler(orig: int, new: int, channels: int, resampler: str = "torchaudio"):
    """The streaming resampler ``audio.resampler`` names: ``StreamingResampler`` or ``SoxrStream``."""
    if resampler == "soxr":
        return SoxrStream(orig, new, channels)
    return StreamingResampler(orig, new, channels)


# ---------------------------------------------------------------- a file as a stream
class AudioStream:
    """A file as float32 ``(channels, n)`` blocks at the target rate, as ``load_audio`` would give it
    whole: decoded block by block, channel policy, resampled (context carried between blocks),
    and normalised when ``audio.normalize`` (statistics from a first pass over the file).

    Re-iterable: each iteration decodes the file again. ``frames`` is what the header predicts
    (at the target rate); ``frames_read`` what the last complete iteration gave.
    """

    def __init__(self, reader: BlockReader, audio: AudioConfig, chunk_seconds: float) -> None:
        self.reader = reader
        self.info: AudioInfo = reader.info
        self.path = reader.info.path
        self.channels = reader.channels
        self.sample_rate = int(audio.sample_rate or reader.info.sample_rate)
        self.frames = resampled_length(reader.info.frames, reader.info.sample_rate, self.sample_rate)
        self.normalize = bool(getattr(audio, "normalize", False))
        self.resampler = str(getattr(audio, "resampler", "torchaudio"))
        self.norm_stats: Optional[tuple[float, float]] = None
        self.frames_read: Optional[int] = None
        rate = reader.info.sample_rate
        widest = max(reader.info.channels, reader.channels)
        reader.block_frames = capped_block_frames(chunk_seconds, rate, widest, self.sample_rate / rate)

    def _decode(self) -> Iterator[torch.Tensor]:
        rate = self.info.sample_rate
        resampler = make_resampler(rate, self.sample_rate, self.channels, self.resampler) if rate != self.sample_rate else None
        frames = 0
        for block in self.reader:
            y = resampler.push(block) if resampler is not None else block
            frames += int(y.shape[-1])
            if y.shape[-1]:
                yield y
        if resampler is not None:
            y = resampler.flush()
            frames += int(y.shape[-1])
            if y.shape[-1]:
                yield y
        self.frames_read = frames

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.normalize and self.norm_stats is None:
            moments = Moments()
            for y in self._decode():
                moments.add(y.reshape(-1))
            mean, var = moments.mean_var()
            self.norm_stats = (float(mean), float(var))
        for y in self._decode():
            yield normalize_waveform(y, self.norm_stats) if self.normalize else y


def open_audio_stream(path: Union[str, Path], audio: Optional[AudioConfig] = None, chunk_seconds: float = 1.0) -> AudioStream:
    """Check ``path`` from its header as ``load_audio`` would (same errors) and return its stream,
    read ``chunk_seconds`` at a time."""
    audio = audio or AudioConfig()
    chunk_seconds = validate_chunk_seconds(chunk_seconds)
    return AudioStream(open_blocks(path, audio), audio, chunk_seconds)
