"""Plots: pixels of the PNG, the envelope reader, and plot=true on the command line."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from helpers.paths import MONO

# A synthetic run: 2 s of a stereo tone at 8 kHz through one layer (k120, s200, p20):
# R = 120, J = 200, P = 20; 16000 samples -> (16000 + 40 - 120) // 200 + 1 = 80 frames, frame t
# centred at (200 t - 20 + 59.5) / 8000 s. A frame is ~13 px wide, so half a frame is visible.
SR, SECONDS, CHANNELS, FRAMES, HOP = 8000, 2.0, 8, 80, 200
BAND = (30, 40)  # frames drawn at the top of the colour scale


def frame_time(t: float) -> float:
    return (HOP * t - 20 + 59.5) / SR


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB")).astype(int)


def luminance(px: np.ndarray) -> np.ndarray:
    return px[..., 0] * 0.299 + px[..., 1] * 0.587 + px[..., 2] * 0.114


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from conv_pipeline.config.schema import LayerConfig
    from conv_pipeline.geometry import StackGeometry
    from conv_pipeline.sink.writer import write_features

    base = tmp_path_factory.mktemp("plot")
    t = np.arange(int(SR * SECONDS)) / SR
    wave = np.stack([0.5 * np.sin(2 * np.pi * 5 * t), 0.2 * np.sin(2 * np.pi * 11 * t)], axis=1)
    audio = base / "tone.wav"
    sf.write(audio, wave.astype(np.float32), SR)
    layers = [LayerConfig(out_channels=CHANNELS, kernel_size=120, stride=HOP, padding=20)]
    geometry = StackGeometry(layers)
    assert geometry.output_length(len(t)) == FRAMES
    # channel c holds c / 7 everywhere (brighter upwards), except a band of frames at the maximum
    features = np.repeat((np.arange(CHANNELS) / (CHANNELS - 1))[:, None], FRAMES, axis=1).astype(np.float32)
    features[:, BAND[0]:BAND[1]] = 1.5
    config = {"input": str(audio), "audio": {"sample_rate": None, "channels": "keep"},
              "model": {"name": "synthetic", "in_channels": 2, "layers": [vars(layers[0])]}}
    path = write_features(base / "tone.npz", features, geometry, SR, config)
    return path, audio


@pytest.mark.slow
def test_plot_pixels(synthetic, tmp_path):
    from conv_pipeline.inspect.plot import plot_features

    path, audio = synthetic
    res = plot_features(path, tmp_path / "out" / "tone.png")
    assert res.path == tmp_path / "out" / "tone.png" and res.audio == str(audio)
    img = rgb(res.path)
    assert img.shape == (650, 1200, 3) and res.size == (1200, 650)

    left, top, right, bottom = res.heatmap_box
    assert 0 < left < right < 1200 and res.waveform_box[3] < top < bottom < 650  # below the waveform
    assert res.waveform_box[0] == left and res.waveform_box[2] == right  # one time axis, aligned
    x0, x1 = res.xlim
    assert x0 <= frame_time(0) and x1 >= frame_time(FRAMES - 1)

    def col(seconds: float) -> int:
        return int(round(left + (seconds - x0) / (x1 - x0) * (right - left)))

    inner = img[top + 3: bottom - 3]  # inside the spines
    # a learned stack is drawn as a z-score per channel: the channels' offsets (c / 7) vanish, so
    # outside the band every channel has one colour, constant along time
    out_band = inner[:, col(frame_time(15))]
    rows = np.linspace(0, len(out_band) - 1, CHANNELS * 2 + 1)[1::2].astype(int)  # one row per channel, top first
    lum = luminance(out_band[rows])
    assert np.ptp(lum) < 1, lum
    np.testing.assert_array_equal(inner[:, col(frame_time(10))], inner[:, col(frame_time(60))])
    # inside the band: every channel at the top colour, brighter than outside it
    band = inner[:, col(frame_time(sum(BAND) / 2))]
    assert luminance(band).min() > lum.max() + 40 and len({tuple(p) for p in band[rows]}) == 1
    # the band sits where the frame times say, to within two pixels
    row = inner[len(inner) // 2]
    brightest = luminance(row[left + 3: right - 3]) > luminance(row[col(frame_time(15))]) + 40
    xs = np.flatnonzero(brightest) + left + 3
    half = HOP / SR / 2
    assert abs(xs.min() - col(frame_time(BAND[0]) - half)) <= 2
    assert abs(xs.max() - col(frame_time(BAND[1] - 1) + half)) <= 2

    # waveform panel: both channel colours drawn, and frame 40's receptive field shaded light red
    wl, wt, wr, wb = res.waveform_box
    wave = img[wt + 3: wb - 3, wl + 3: wr - 3]
    blue = (wave[..., 2] > 150) & (wave[..., 0] < 120)  # matplotlib C0 (31, 119, 180) and its blend
    orange = (wave[..., 0] > 200) & (wave[..., 1] > 100) & (wave[..., 1] < 200) & (wave[..., 2] < 120)
    assert blue.sum() > 2000 and orange.sum() > 500
    pink = (wave[..., 0] > 240) & (wave[..., 1] > 150) & (wave[..., 1] < 200) & (abs(wave[..., 1] - wave[..., 2]) < 15)
    span = np.flatnonzero(pink.sum(axis=0) > 20) + wl + 3
    start = 40 * HOP - 20  # frame 40 reads samples [7980, 8099]
    assert span.size and abs(span.min() - col(start / SR)) <= 2 and abs(span.max() - col((start + 120) / SR)) <= 2


def test_plot_without_audio_still_draws_the_features(synthetic, tmp_path):
    from conv_pipeline.inspect.plot import plot_features

    path, _ = synthetic
    res = plot_features(path, tmp_path / "x.png", audio_path=tmp_path / "missing.wav")
    assert res.audio is None
    img = rgb(res.path)
    left, top, right, bottom = res.heatmap_box
    heat = img[top + 3: bottom - 3, left + 3: right - 3]
    assert len(np.unique(heat.reshape(-1, 3), axis=0)) >= 2  # not blank: the band and the rest
    wl, wt, wr, wb = res.waveform_box
    wave = img[wt + 3: wb - 3, wl + 3: wr - 3]
    assert not ((wave[..., 2] > 150) & (wave[..., 0] < 120)).any()  # no waveform drawn ...
    assert (luminance(wave) < 100).sum() > 50  # ... but the reason is written there


def test_long_feature_map_is_averaged_not_dropped(tmp_path):
    from conv_pipeline.config.schema import LayerConfig
    from conv_pipeline.geometry import StackGeometry
    from conv_pipeline.inspect.plot import plot_features
    from conv_pipeline.sink.writer import write_features

    frames = 30000
    feats = np.zeros((3, frames), np.float32)
    feats[1] = np.arange(frames) % 2  # alternating 0/1: averages to 0.5 everywhere
    geometry = StackGeometry([LayerConfig(3, 4, 2)])
    path = write_features(tmp_path / "long.npz", feats, geometry, 16000, {"model": {"name": "m", "layers": []}})
    res = plot_features(path, tmp_path / "long.png")
    heat = res.heatmap
    assert heat.per > 1 and heat.data.shape == (3, math.ceil(frames / heat.per))
    # channel 1 drawn flat (its mean, or its RMS about its mean, is the same in every column):
    # not aliased stripes of 0 and 1
    assert np.ptp(heat.data[1]) < 1e-9
    img = rgb(res.path)
    left, top, right, bottom = res.heatmap_box
    middle = img[(top + bottom) // 2, left + 5: right - 5]  # channel 1's row
    assert len(np.unique(middle, axis=0)) == 1


def test_envelope_matches_numpy_and_reads_in_blocks(tmp_path, monkeypatch):
    import soundfile

    from conv_pipeline.inspect.plot import waveform_envelope

    rng = np.random.default_rng(3)
    data = rng.uniform(-1, 1, size=(10007, 3)).astype(np.float32)
    sf.write(tmp_path / "n.wav", data, 1000, subtype="FLOAT")
    requested = []
    real_read = soundfile.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(soundfile.SoundFile, "read", spy)
    env = waveform_envelope(tmp_path / "n.wav", columns=100, channels=[2, 0], block_frames=1000)
    per = 101  # ceil(10007 / 100)
    assert env.samples_per_column == per and env.frames == 10007 and env.sample_rate == 1000
    assert 0 < max(requested) <= 1000 and all(r != -1 for r in requested)  # never the whole file at once
    picked = data[:, [2, 0]]
    starts = np.arange(0, 10007, per)
    np.testing.assert_array_equal(env.low, np.stack([picked[s:s + per].min(axis=0) for s in starts], axis=1))
    np.testing.assert_array_equal(env.high, np.stack([picked[s:s + per].max(axis=0) for s in starts], axis=1))
    np.testing.assert_allclose(env.times, (starts + np.minimum(starts + per, 10007) - 1) / 2 / 1000)

    mono = waveform_envelope(tmp_path / "n.wav", columns=20000, channels="mono")  # short: the samples themselves
    assert mono.samples_per_column == 1
    np.testing.assert_allclose(mono.low[0], data.mean(axis=1), atol=1e-6)
    np.testing.assert_array_equal(mono.low, mono.high)


@pytest.mark.slow
def test_cli_plot_true_on_real_audio(tmp_path):
    out = tmp_path / "feats"
    proc = subprocess.run(
        [sys.executable, "-m", "conv_pipeline", f"input={MONO}", f"output.dir={out}", "plot=true", "output.format=npz"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    png = out / "example_mono.png"
    assert f"wrote {png}" in proc.stdout
    img = rgb(png)
    assert img.shape == (650, 1200, 3)
    lower = img[400:600, 100:1100]  # the heatmap's area in the default layout
    assert len(np.unique(lower.reshape(-1, 3), axis=0)) > 50
