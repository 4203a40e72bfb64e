"""One file through chunked execution, its feature chunks handed to a writer as they come.

Flow: source -> load -> stack -> **execute** -> sink -> engines. Input: an ``AudioStream``
(``load/stream.py``) or a path, and a ``ConvStack``; the chunks ``(C_out, m)`` of
``chunked.iter_features`` (float32, on the CPU) go to ``writer(chunks, shape, sample_rate)``
(``file_writer`` writes a feature file incrementally, ``sink/writer.py``; ``collect_features``
returns an array ``(C_out, frames)``). Overflowing chunks are refused (``whole.check_finite``)
before the writer sees them; the frame count is checked against ``StackGeometry``.

Public API:

* ``extract_stream(stream, stack, device, writer) -> ChunkedResult`` and
  ``extract_file_chunked(path, stack, audio, chunk_seconds, device, writer) -> ChunkedResult``.
* ``collect_features``, ``file_writer(path, geometry, config, before_commit)``: writers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch

from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.errors import InputError
from conv_pipeline.execute.chunked import iter_features
from conv_pipeline.execute.whole import check_finite
from conv_pipeline.load.info import AudioInfo
from conv_pipeline.load.stream import AudioStream, open_audio_stream
from conv_pipeline.stack.stack import ConvStack

Writer = Callable[[Iterator[np.ndarray], "tuple[int, int]", int], Any]


@dataclass
class ChunkedResult:
    """What ``extract_stream`` did: the writer's return value and the figures of the manifest."""

    written: Any
    shape: tuple[int, int]
    sample_rate: int
    num_samples: int  # per channel, at sample_rate
    info: AudioInfo
    seconds: float


def collect_features(chunks: Iterator[np.ndarray], shape: tuple[int, int], sample_rate: int) -> np.ndarray:
    """A writer that keeps the features in memory: ``(C_out, frames)`` float32."""
    parts = list(chunks)
    return np.concatenate(parts, axis=1) if parts else np.zeros((shape[0], 0), np.float32)


def file_writer(path: Union[str, Path], geometry, config: Optional[dict] = None, before_commit=None) -> Writer:
    """A writer that streams the features into ``path`` (``.npy`` or ``.npz``, atomically,
    preallocated with the predicted shape); see ``sink.writer.write_features_stream``."""
    from conv_pipeline.sink.writer import write_features_stream

    def write(chunks: Iterator[np.ndarray], shape: tuple[int, int], sample_rate: int) -> Path:
        return write_features_stream(Path(path), chunks, shape, geometry, sample_rate, config, before_commit)

    return write


def extract_stream(
    stream: AudioStream,
    stack: ConvStack,
    device: Optional[torch.device] = None,
    writer: Writer = collect_features,
) -> ChunkedResult:
    """``stream`` through ``stack`` chunk by chunk; ``writer(chunks, shape, sample_rate)`` consumes
    the float32 ``(C_out, m)`` chunks (``shape`` is the prediction from the header).

    Errors are ``extract``'s and ``load_audio``'s, with the same messages: NaN/Inf samples, a
    too short file and features that overflow float32 raise ``InputError`` (from inside the chunk
    iterator when found while streaming, so a writer that cleans up on exceptions leaves nothing).
    """
    t0 = time.perf_counter()
    if stream.channels != stack.in_channels:
        raise InputError(
            f"{stream.path}: has {stream.channels} channel(s) after audio.channels but the stack takes "
            f"{stack.in_channels}; fix audio.channels (mono, or a list of indices)"
        )
    geometry = stack.geometry
    predicted = geometry.output_length(stream.frames)
    if predicted < 1:  # too short by its header: decode it first, so NaN/Inf is reported as whole-file mode does
        for _ in stream:
            pass
        predicted = geometry.check_input_length(stream.frames_read, what=stream.path)
    emitted = 0

    def chunks() -> Iterator[np.ndarray]:
        nonlocal emitted
        for y in iter_features(stream, stack, device):
            emitted += int(y.shape[-1])
            chunk = y.to("cpu", torch.float32)
            check_finite(chunk, stream.path)  # before the writer sees it: overflowing features are never written
            yield chunk.numpy()
        expected = geometry.check_input_length(stream.frames_read, what=stream.path)
        if emitted != expected:
            raise RuntimeError(f"internal error: chunked execution gave {emitted} frames, geometry predicts {expected}")

    written = writer(chunks(), (stack.out_channels, predicted), stream.sample_rate)
    return ChunkedResult(
        written, (stack.out_channels, emitted), stream.sample_rate, int(stream.frames_read), stream.info,
        time.perf_counter() - t0,
    )


def extract_file_chunked(
    path: Union[str, Path],
    stack: ConvStack,
    audio: Optional[AudioConfig],
    chunk_seconds: float,
    device: Optional[torch.device] = None,
    writer: Writer = collect_features,
) -> ChunkedResult:
    """One file through ``stack`` in chunks of ``chunk_seconds`` (of the file's audio), in bounded
    memory: ``open_audio_stream`` then ``extract_stream``."""
    return extract_stream(open_audio_stream(path, audio, chunk_seconds), stack, device, writer)
