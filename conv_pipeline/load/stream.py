"""Chunked (streaming) execution: the frames of the whole-file computation, in bounded memory.

The rule is the "Chunks (exact streaming)" section of ``docs/geometry.md``, applied to
every windowed operation between the file and the features (``Window``): each layer of a
``ConvStack``, and torchaudio's polyphase sinc resampler, which is itself one strided conv
(kernel ``2w + orig``, stride ``orig``, ``w`` zeros before and ``w + orig`` after, the output
truncated to ``ceil(new * frames / orig)``). Per operation a buffer of its input and a count of
samples still to skip are kept; zeros are added only at the true start and at the true end. With
``n`` samples buffered and a window of ``span`` samples moving by ``stride``,
``m = (n - span) // stride + 1`` outputs are complete: they are computed, ``m * stride`` samples
are consumed (more than ``n`` when ``stride > span``: the excess is skipped from later input).
Any chunk size works, including chunks shorter than the receptive field and sizes that are not a
multiple of the hop; the frame count always equals ``StackGeometry.output_length``.

How a layer is computed: activations are kept time-major (``(frames, channels)``) in buffers
that are allocated once and reused, and a conv with ``groups=1`` is one matrix product
(``addmm``) of the windows (a strided view of the buffer, copied once when windows overlap) with
the layer's own weight, written straight into the next layer's buffer; ``groups > 1`` uses
``F.conv1d`` with ``padding=0``. Norms and activations are the layer's own modules (elementwise
activations in place). Values equal the whole-file ``stack(x)`` up to float32 rounding (the sums
run in another order), frame for frame.

Norms over time (``TimeGroupNorm``: statistics over the whole file) take one more pass each:
the file is streamed up to that layer's conv to accumulate the per-channel mean and variance
(float64), then again with the statistics fixed (``TimeGroupNorm.normalize``). ``audio.normalize``
likewise takes a first pass for the file's mean and variance. Per-frame operations (activations,
``layer_norm`` over channels, the front-ends' magnitude/log) commute with chunking.

Public API:

* ``StreamingStack(stack, device, time_stats)``: ``push(x (C_in, n)) -> (C_out, m)``, ``flush()``.
* ``iter_features(blocks, stack, device)``: feature chunks ``(C_out, m)`` of a sequence of input
  blocks (re-iterable when the stack has a norm over time).
* ``AudioStream`` (``open_audio_stream(path, audio, chunk_seconds)``): a file as blocks at the
  target rate (decode block by block, channel policy, resampler, normalisation).
* ``extract_stream(stream, stack, device, writer)`` and
  ``extract_file_chunked(path, stack, audio, chunk_seconds, device, writer)``: one file through
  the stack; ``writer(chunks, shape, sample_rate)`` consumes the chunks (``file_writer`` writes a
  feature file incrementally, ``collect_features`` returns an array).
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
from conv_pipeline.load.signal import normalize_waveform, resampled_length
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
        reader.block_frames = max(1, round(chunk_seconds * reader.info.sample_rate))

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
