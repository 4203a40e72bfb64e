"""The heatmap's values and the layout: dB for spectra, a z-score per channel for learned stacks,
RMS where averaging would cancel oscillating features, a zoom panel and legend that cover no
waveform. Checked on the drawn data (``PlotResult.heatmap``) and the axes' boxes, not pixels."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

SR = 16000
pytestmark = pytest.mark.slow  # each draws a figure (about 0.3-1 s)


def _write(tmp_path, name, features, model, layers=None, hop=160, audio=None):
    from conv_pipeline.config.schema import LayerConfig
    from conv_pipeline.geometry import StackGeometry
    from conv_pipeline.sink.writer import write_features

    geometry = StackGeometry(layers or [LayerConfig(features.shape[0], 400, hop)])
    config = {"model": model, "audio": {"sample_rate": SR, "channels": "mono"}}
    if audio is not None:
        config["input"] = str(audio)
    return write_features(tmp_path / f"{name}.npz", features.astype(np.float32), geometry, SR, config)


def _plot(path, tmp_path, audio=None):
    from conv_pipeline.inspect.plot import plot_features

    return plot_features(path, tmp_path / (path.stem + ".png"), audio_path=audio)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


MEL = {"name": "mel", "frontend": {"type": "mel", "log": False, "power": None}, "layers": []}
LEARNED = {"name": "default", "layers": [{"out_channels": 4, "kernel_size": 400, "stride": 160}]}


def test_learned_stack_is_standardised_per_channel(tmp_path):
    rng = np.random.default_rng(0)
    frames = 300
    pattern = np.sin(np.linspace(0, 6 * np.pi, frames))  # slow: averaging keeps it
    # four channels with offsets and scales six orders of magnitude apart, one constant
    feats = np.stack([1e3 + 1e-3 * pattern, -50 + 10 * pattern, 0.01 * pattern[::-1], np.full(frames, 7.0)])
    feats[1] += rng.normal(0, 0.1, frames)
    res = _plot(_write(tmp_path, "learned", feats, LEARNED), tmp_path)
    heat = res.heatmap
    assert heat.scale == "zscore" and "z-score per channel" in heat.label and heat.per == 1
    data = heat.data
    feats = feats.astype(np.float32).astype(np.float64)  # as stored
    expected = (feats[:3] - feats[:3].mean(axis=1, keepdims=True)) / feats[:3].std(axis=1, keepdims=True)
    np.testing.assert_allclose(data[:3], expected, atol=1e-6)
    np.testing.assert_allclose(data[:3].mean(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(data[:3].std(axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(data[3], 0)  # a constant channel: the middle of the scale, no NaN
    assert heat.vmin < -1 and heat.vmax > 1  # every channel spans the colour range


def test_mel_power_is_drawn_in_db(tmp_path):
    rng = np.random.default_rng(1)
    power = rng.uniform(1e-6, 10.0, (80, 200)) ** 2
    power[:, 50] = 0.0  # digital silence: a floor, not -inf
    res = _plot(_write(tmp_path, "mel", power, MEL), tmp_path)
    heat = res.heatmap
    assert heat.scale == "db" and "dB" in heat.label and "power" in heat.label
    ok = power > 0
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(heat.data[ok], 10 * np.log10(power.astype(np.float32).astype(np.float64))[ok],
                                   rtol=1e-9)
    assert np.isfinite(heat.data).all()
    assert heat.vmax == pytest.approx(heat.data.max()) and heat.vmax - heat.vmin <= 80 + 1e-9


def test_stft_magnitude_is_20_log10_and_log_features_are_not_converted(tmp_path):
    mag = np.random.default_rng(2).uniform(0.01, 3.0, (201, 100))
    stft = {"name": "stft", "frontend": {"type": "stft", "log": False, "power": None}, "layers": []}
    heat = _plot(_write(tmp_path, "stft", mag, stft), tmp_path).heatmap
    assert heat.scale == "db" and "magnitude (dB" in heat.label
    np.testing.assert_allclose(heat.data, 20 * np.log10(mag.astype(np.float32).astype(np.float64)), rtol=1e-9)

    logmel = {**MEL, "frontend": {**MEL["frontend"], "log": True}}
    heat = _plot(_write(tmp_path, "logmel", np.log(mag[:80]), logmel), tmp_path).heatmap
    assert heat.scale == "log" and "dB" not in heat.label
    np.testing.assert_allclose(heat.data, np.log(mag[:80]).astype(np.float32), rtol=1e-6)


def test_oscillating_features_are_drawn_as_their_rms_not_a_flat_mean(tmp_path):
    # a raw conv of a tone (as model=tutorial gives): averaging 100s of frames cancels it to a
    # flat stripe; the RMS about the channel mean follows the loudness
    frames = 200_000
    t = np.arange(frames)
    loud = (t // 20_000) % 2 == 0  # loud and quiet halves of 20 000 frames
    envelope = np.where(loud, 1.0, 0.1)
    feats = np.stack([0.3 + envelope * np.sin(2 * np.pi * t / 37.0), 5 * envelope * np.cos(2 * np.pi * t / 11.0)])
    tut = {"name": "tutorial", "layers": [{"out_channels": 2, "kernel_size": 5}]}
    from conv_pipeline.config.schema import LayerConfig

    res = _plot(_write(tmp_path, "tut", feats, tut, layers=[LayerConfig(2, 5)]), tmp_path)
    heat = res.heatmap
    assert heat.per > 1 and "RMS" in heat.label
    col_loud = loud[np.minimum((np.arange(heat.data.shape[1]) + 0.5) * heat.per, frames - 1).astype(int)]
    for row in heat.data:  # every loud column above every quiet one (a column straddling both aside)
        pure = [i for i in range(len(row)) if i * heat.per // 20_000 == ((i + 1) * heat.per - 1) // 20_000]
        loud_vals = row[[i for i in pure if col_loud[i]]]
        quiet_vals = row[[i for i in pure if not col_loud[i]]]
        assert loud_vals.min() > quiet_vals.max() + 1.0


def test_zoom_panel_and_legend_cover_no_waveform(tmp_path):
    t = np.arange(SR * 3) / SR
    wave = (0.5 * np.sin(2 * np.pi * 220 * t) * (t < 0.5) + 0.05 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    audio = tmp_path / "a.wav"
    sf.write(audio, wave, SR)
    from conv_pipeline.geometry import StackGeometry
    from conv_pipeline.config.schema import LayerConfig

    layers = [LayerConfig(8, 400, 160)]
    n = StackGeometry(layers).output_length(len(t))
    feats = np.random.default_rng(3).normal(size=(8, n))
    res = _plot(_write(tmp_path, "a", feats, LEARNED, layers=layers, audio=audio), tmp_path)
    assert res.audio == str(audio)
    assert res.zoom_box is not None and res.legend_box is not None
    for box in (res.zoom_box, res.legend_box):
        assert not _overlap(box, res.waveform_box), (box, res.waveform_box)
        assert not _overlap(box, res.heatmap_box), (box, res.heatmap_box)
    assert res.zoom_box[0] > res.waveform_box[2]  # beside the waveform, to its right
    assert res.legend_box[3] <= res.waveform_box[1] + 1  # above it
    # the waveform's axes still span the whole time axis, aligned with the heatmap
    assert res.waveform_box[0] == res.heatmap_box[0] and res.waveform_box[2] == res.heatmap_box[2]

    no_audio = _plot(_write(tmp_path, "b", feats, LEARNED, layers=layers), tmp_path, audio=tmp_path / "missing.wav")
    assert no_audio.zoom_box is None and no_audio.legend_box is None


@pytest.mark.parametrize("cmvn,off", [(None, True), (False, True), ("False", True), ("none", True), ("null", True),
                                      ("mean", False), ("mean_var", False)])
def test_cmvn_reads_the_same_everywhere(cmvn, off):
    """Every reader of ``model.frontend.cmvn`` (the summary, the plot's scale) takes ``false``/``null``/``none`` as off, as ``config.checks.cmvn_mode`` does."""
    from conv_pipeline.config.compose import compose_config
    from conv_pipeline.inspect.scale import spectrum_power
    from conv_pipeline.inspect.summary import frontend_roles

    model = {"frontend": {"type": "mel", "cmvn": cmvn}, "layers": []}
    assert (spectrum_power(model) == 2.0) is off
    fe = compose_config(["model=mel", f"model.frontend.cmvn={'null' if cmvn is None else cmvn}"]).model.frontend
    assert any("CMVN" in role for role in frontend_roles(fe)) is not off
