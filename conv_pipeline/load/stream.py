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
whole-signal result; see "The resampler as a conv" in ``docs/geometry.md``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
import torch.nn.functional as F

from conv_pipeline.config.checks import validate_chunk_seconds
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.load.audio import AudioInfo
from conv_pipeline.load.blocks import BlockReader, open_blocks
from conv_pipeline.load.signal import (
    capped_block_frames,
    normalize_waveform,
    resampled_length,
)
from conv_pipeline.windows import Moments, Window


# ---------------------------------------------------------------- the resampler
class StreamingResampler:
    """``torchaudio.functional.resample`` (default sinc_interp_hann, width 6, rolloff 0.99) on a stream.

    ``push((C, n))`` returns the resampled samples it completes; ``flush()`` the rest. The
    concatenation has ``ceil(new * frames / orig)`` samples, equal to the whole-signal result up
    to float32 rounding (same kernel, the same strided conv over each window).
    """

    def __init__(self, orig: int, new: int, channels: int, dtype=torch.float32, device=torch.device("cpu")) -> None:
        from torchaudio.functional.functional import _get_sinc_resample_kernel

        g = math.gcd(int(orig), int(new))
        self.orig_hz, self.new_hz = int(orig), int(new)
        self.orig, self.new = self.orig_hz // g, self.new_hz // g
        self.kernel, width = _get_sinc_resample_kernel(self.orig_hz, self.new_hz, g, device=device, dtype=dtype)
        span = int(self.kernel.shape[-1])  # 2 * width + orig
        self.window = Window(span, self.orig, width, width + self.orig, channels, dtype, device)
        self.channels = channels
        self.frames_in = 0
        self.frames_out = 0

    # Windows per conv call: the conv unfolds its input (kernel-length copies of each window), so
    # memory would grow with the chunk length; slices keep it to a few MB whatever the chunk.
    SLICE = 1 << 14

    def _run(self) -> torch.Tensor:
        m = self.window.ready()
        if m == 0:
            return self.window.buf[:0].t()
        span, parts = self.window.span, []
        for a in range(0, m, self.SLICE):
            b = min(m, a + self.SLICE)  # windows a..b-1 read samples a*orig .. (b-1)*orig + span - 1
            x = self.window.buf[a * self.orig : (b - 1) * self.orig + span].t().contiguous()[:, None, :]  # (C, 1, n)
            y = F.conv1d(x, self.kernel, stride=self.orig)  # (C, new, b - a): one row per output phase
            parts.append(y.transpose(1, 2).reshape(self.channels, (b - a) * self.new))  # interleave the phases
        self.window.consume(m)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    @torch.inference_mode()
    def push(self, x: torch.Tensor) -> torch.Tensor:
        self.frames_in += int(x.shape[-1])
        self.window.append(x.t())
        y = self._run()
        self.frames_out += int(y.shape[-1])
        return y

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        self.window.finish()
        y = self._run()
        keep = resampled_length(self.frames_in, self.orig_hz, self.new_hz) - self.frames_out
        if keep < 0 or keep > y.shape[-1]:
            raise RuntimeError("internal error: the streaming resampler's length disagrees with torchaudio's")
        self.frames_out += keep
        return y[:, :keep]


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
        self.norm_stats: Optional[tuple[float, float]] = None
        self.frames_read: Optional[int] = None
        rate = reader.info.sample_rate
        widest = max(reader.info.channels, reader.channels)
        reader.block_frames = capped_block_frames(chunk_seconds, rate, widest, self.sample_rate / rate)

    def _decode(self) -> Iterator[torch.Tensor]:
        rate = self.info.sample_rate
        resampler = StreamingResampler(rate, self.sample_rate, self.channels) if rate != self.sample_rate else None
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
