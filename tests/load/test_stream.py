"""Streaming input (``conv_pipeline.load.stream``): the block resampler and ``AudioStream`` equal
``torchaudio.functional.resample`` and ``load_audio`` on the whole file."""

from __future__ import annotations

import pytest
import torch
import torchaudio.functional as AF

from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.load.audio import load_audio
from conv_pipeline.load.stream import StreamingResampler, open_audio_stream
from helpers.audio import make_audio
from helpers.tensors import rel_diff, split


@pytest.mark.parametrize("orig,new", [(48000, 16000), (44100, 16000), pytest.param(8000, 22050, marks=pytest.mark.slow),
                                      pytest.param(22050, 16000, marks=pytest.mark.slow)])
def test_streaming_resampler_equals_torchaudio(orig, new):
    """Same kernel, each window computed by the same strided conv: equal to float32 rounding
    (bitwise equal on this machine), same length ceil(new * T / orig)."""
    for length, sizes in ((701, [1, 2, 3]), (9001, [97]), (9001, [4410, 7]), (60001, [60001])):  # last: several conv slices
        x = torch.randn(2, length)
        ref = AF.resample(x, orig, new)
        r = StreamingResampler(orig, new, 2)
        y = torch.cat([r.push(b) for b in split(x, sizes)] + [r.flush()], dim=1)
        assert y.shape == ref.shape
        assert rel_diff(y, ref) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("normalize", [False, True])
def test_audio_stream_equals_load_audio(tmp_path, normalize):
    """Block reader + channel policy (mono) + resampler (+ two-pass normalisation) == load_audio."""
    path = tmp_path / "a.wav"
    make_audio(path, channels=2, frames=44100 * 3 + 17, sr=44100, subtype="PCM_24")
    audio = AudioConfig(sample_rate=16000, channels="mono", normalize=normalize)
    ref = load_audio(path, audio).waveform
    stream = open_audio_stream(path, audio, chunk_seconds=0.13)
    got = torch.cat(list(stream), dim=1)
    assert stream.frames == stream.frames_read == ref.shape[1]
    assert got.shape == ref.shape
    assert rel_diff(got, ref) <= 1e-6
