"""Streaming output (``conv_pipeline.sink.writer``): the feature file is preallocated with the
predicted shape, a wrong prediction is fixed, and an interrupted stream leaves nothing."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conv_pipeline.config.compose import compose_config
from conv_pipeline.config.schema import LayerConfig
from conv_pipeline.engines.single import run
from conv_pipeline.sink.writer import TMP_MARKER, NpyStreamWriter, write_features_stream
from conv_pipeline.stack.stack import ConvStack
from helpers.audio import make_audio


def test_output_is_preallocated_with_the_predicted_shape(tmp_path):
    """Before the second chunk arrives, the temporary .npy already has the final shape."""
    out = tmp_path / "f.npy"
    seen = []

    def chunks():
        yield np.ones((3, 10), np.float32)
        (tmp,) = [p for p in tmp_path.iterdir() if TMP_MARKER in p.name]
        seen.append(np.load(tmp, mmap_mode="r").shape)
        yield np.full((3, 15), 2, np.float32)

    stack = ConvStack(1, [LayerConfig(3, 5)])
    write_features_stream(out, chunks(), (3, 25), stack.geometry, 16000)
    assert seen == [(3, 25)]
    y = np.load(out)
    assert y.shape == (3, 25) and (y[:, :10] == 1).all() and (y[:, 10:] == 2).all()
    assert os.listdir(tmp_path) == ["f.npy"]


@pytest.mark.slow
def test_pipeline_preallocates_what_the_geometry_predicts(tmp_path, monkeypatch):
    import conv_pipeline.sink.writer as writer

    shapes = []
    real = writer.NpyStreamWriter.__init__

    def spy(self, path, channels, frames, *a, **k):
        shapes.append((channels, frames))
        real(self, path, channels, frames, *a, **k)

    monkeypatch.setattr(writer.NpyStreamWriter, "__init__", spy)
    wav = tmp_path / "s.wav"
    make_audio(wav, channels=2, frames=48000 * 2 + 7, sr=48000)
    res = run(compose_config([f"input={wav}", f"output.dir={tmp_path / 'o'}", "runtime.chunk_seconds=0.2"]))
    n = res.stack.geometry.output_length(-(-(2 * 48000 + 7) // 3))  # 48 kHz -> 16 kHz: ceil(T / 3)
    assert shapes == [(128, n)] and res.shape == (128, n) and np.load(res.output).shape == (128, n)


@pytest.mark.parametrize("capacity", [40, 37, 45, 1])
def test_npy_writer_fixes_a_wrong_prediction(tmp_path, capacity):
    """A header that predicts the wrong length (truncated file, estimated MP3 length): the true
    frame count wins, values in place, helper files removed."""
    full = np.random.default_rng(0).standard_normal((4, 40)).astype(np.float32)
    w = NpyStreamWriter(tmp_path / "x.npy", 4, capacity, buffer_bytes=4 * 4 * 6)
    for part in np.array_split(full, 9, axis=1):
        w.write(part)
    assert w.close() == 40
    assert np.array_equal(np.load(tmp_path / "x.npy"), full)
    assert os.listdir(tmp_path) == ["x.npy"]


def test_interrupted_stream_leaves_nothing(tmp_path):
    def chunks():
        yield np.zeros((2, 5), np.float32)
        raise KeyboardInterrupt

    stack = ConvStack(1, [LayerConfig(2, 1)])
    for name in ("f.npy", "f.npz"):
        with pytest.raises(KeyboardInterrupt):
            write_features_stream(tmp_path / name, chunks(), (2, 10), stack.geometry, 8000)
    assert os.listdir(tmp_path) == []
