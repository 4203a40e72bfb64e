"""The resampler (``load/polyphase.py``, ``signal.resample``, ``stream.StreamingResampler``) against
``torchaudio.functional.resample`` computed independently, whole and streamed; ``audio.resampler=soxr``
against the ``soxr`` package itself; the config's refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from conv_pipeline.config.checks import validate_audio
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.errors import ConfigError, InputError
from conv_pipeline.load.audio import load_audio
from conv_pipeline.load.polyphase import PolyphaseFilter, filter_weights, layout
from conv_pipeline.load.signal import MAX_RESAMPLE_TAPS, check_resample, resample, resampled_length
from conv_pipeline.load.stream import StreamingResampler, make_resampler, open_audio_stream
from helpers.audio import make_audio
from helpers.tensors import split

# The rates in use, upsampling, odd rates, and ratios where every tap is non-zero (3 -> 2, 5 -> 7);
# the first three in the quick subset, the rest marked slow.
QUICK = [(44100, 16000), (8000, 16000), (3, 2)]
MORE = [(48000, 16000), (22050, 16000), (16000, 22050), (11025, 16000), (16000, 44100), (96000, 16000),
        (16000, 8000), (5, 7), (1000, 32000)]
RATES = QUICK + [pytest.param(*pair, marks=pytest.mark.slow) for pair in MORE]
LENGTHS = [1, 2, 5, 440, 441, 442, 4097]


def unit_noise(channels: int, frames: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(channels, frames, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


@pytest.mark.parametrize("orig,new", RATES)
def test_whole_equals_torchaudio(orig, new):
    """Same filter over the same windows: within 1e-6 of torchaudio on unit-scale audio, same length."""
    for frames in LENGTHS:
        x = unit_noise(2, frames, seed=frames)
        ref = AF.resample(x, orig, new)
        got = resample(x, orig, new)
        assert got.shape == ref.shape == (2, resampled_length(frames, orig, new)) == (2, math.ceil(new * frames / orig))
        assert max_abs(got, ref) <= 1e-6, (orig, new, frames)


def test_float64_and_leading_dims_follow_torchaudio():
    x = unit_noise(6, 3001, dtype=torch.float64).reshape(2, 3, 3001)
    ref = AF.resample(x, 44100, 16000)
    got = resample(x, 44100, 16000)
    assert got.dtype == torch.float64 and got.shape == ref.shape
    assert max_abs(got, ref) <= 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("orig,new", [(44056, 16000), (47952, 16000)])
def test_odd_rates_equal_torchaudio(orig, new):
    """Rates sharing little: torchaudio's dense bank is millions of taps, ours a fraction of it."""
    x = unit_noise(1, 3 * orig // 2 + 3)
    ref = AF.resample(x, orig, new)
    got = resample(x, orig, new)
    assert got.shape == ref.shape and max_abs(got, ref) <= 1e-6
    streamed = StreamingResampler(orig, new, 1)
    y = torch.cat([streamed.push(b) for b in split(x, [orig // 3 + 1, 7])] + [streamed.flush()], dim=1)
    assert y.shape == ref.shape and max_abs(y, ref) <= 1e-6


@pytest.mark.parametrize("orig,new", RATES)
def test_streaming_any_block_sizes_equals_torchaudio(orig, new):
    """Blocks of 1 sample, of sizes that are multiples of nothing, and the whole at once."""
    x = unit_noise(2, 2003, seed=7)
    ref = AF.resample(x, orig, new)
    for sizes in ([1], [1, 2, 3], [97, 13], [1000, 1], [2003]):
        r = StreamingResampler(orig, new, 2)
        y = torch.cat([r.push(b) for b in split(x, sizes)] + [r.flush()], dim=1)
        assert y.shape == ref.shape, (orig, new, sizes)
        assert max_abs(y, ref) <= 1e-6, (orig, new, sizes)


@pytest.mark.slow
def test_streaming_slices_and_an_empty_signal():
    """A push longer than one slice of windows (several matrix-product passes), and no input at all."""
    x = unit_noise(2, 44100 * 13 + 5)
    ref = AF.resample(x, 44100, 16000)
    r = StreamingResampler(44100, 16000, 2)
    y = torch.cat([r.push(x), r.flush()], dim=1)
    assert y.shape == ref.shape and max_abs(y, ref) <= 1e-6
    assert max_abs(resample(x, 44100, 16000), ref) <= 1e-6
    empty = StreamingResampler(44100, 16000, 2)
    assert empty.flush().shape == (2, 0)


def test_only_the_nonzero_taps_are_held():
    """torchaudio's bank for 44.1 -> 16 kHz is 160 x 475 taps, 34 of each phase non-zero: the
    polyphase filter holds at most 34 per phase, in fewer than a third of the numbers, and
    reproduces every tap of the dense bank (impulses at each of the 475 positions of a window)."""
    lay = layout(44100, 16000)
    assert lay.orig == 441 and lay.new == 160 and lay.span == 475 and lay.taps == 34
    filt = PolyphaseFilter(44100, 16000)
    assert filt.weight.numel() == lay.weights <= filter_weights(44100, 16000) < 160 * 475 / 3
    per_phase = (filt.weight != 0).sum(dim=1)  # (groups, group): non-zero taps of each phase
    assert int(per_phase.max()) <= 34 and int(per_phase.sum()) <= 160 * 34
    k = torch.arange(475)  # impulse k at offset k of its own window, the windows 4 * 441 samples apart
    impulses = torch.zeros(1, 475 * 4 * 441)
    impulses[0, k * 4 * 441 + 441 + k] = 1.0
    assert max_abs(resample(impulses, 44100, 16000), AF.resample(impulses, 44100, 16000)) <= 1e-7


def test_filter_size_limit_is_about_what_is_allocated():
    for rate in (8000, 11025, 22050, 44100, 47952, 48000, 96000, 192000, 44056, 16001):
        check_resample("x.wav", rate, 16000)  # accepted: the polyphase filter is small
        assert filter_weights(rate, 16000) <= MAX_RESAMPLE_TAPS
    assert filter_weights(999983, 16000) > MAX_RESAMPLE_TAPS
    with pytest.raises(InputError, match=r"resampling 999983 Hz to 16000 Hz needs a filter of \d+ million taps"):
        check_resample("x.wav", 999983, 16000)
    check_resample("x.wav", 999983, 16000, "soxr")  # soxr builds its own filter


# ---------------------------------------------------------------- audio.resampler=soxr
soxr = pytest.importorskip("soxr")


@pytest.mark.parametrize("orig,new", [(44100, 16000), (22050, 16000), (8000, 16000), (16000, 22050)])
def test_soxr_is_the_soxr_package_at_torchaudios_length(orig, new):
    x = unit_noise(2, 3 * orig // 2 + 11)
    want = soxr.resample(x.numpy().T.copy(), orig, new, quality="HQ").T  # (C, T')
    got = resample(x, orig, new, "soxr")
    n = resampled_length(x.shape[1], orig, new)
    assert got.shape == (2, n) and got.dtype == torch.float32
    common = min(n, want.shape[1])
    np.testing.assert_array_equal(got[:, :common].numpy(), want[:, :common])
    assert not got[:, common:].any()  # padded with zeros where soxr gave fewer


def test_soxr_streaming_equals_soxr_whole():
    x = unit_noise(2, 44100 + 3)
    whole = resample(x, 44100, 16000, "soxr")
    for sizes in ([1, 2, 3, 1000], [4410], [44103]):
        r = make_resampler(44100, 16000, 2, "soxr")
        y = torch.cat([r.push(b) for b in split(x, sizes)] + [r.flush()], dim=1)
        assert y.shape == whole.shape
        assert max_abs(y, whole) <= 1e-6


def test_soxr_is_not_torchaudio():
    """Documented as different: on unit-scale noise the two filters differ well above 1e-6."""
    x = unit_noise(1, 44100)
    assert max_abs(resample(x, 44100, 16000, "soxr"), AF.resample(x, 44100, 16000)) > 1e-3


def test_soxr_through_load_audio_and_the_stream(tmp_path):
    path = tmp_path / "a.wav"
    data = make_audio(path, channels=2, frames=44100 + 17, sr=44100, subtype="FLOAT")
    audio = AudioConfig(sample_rate=16000, channels="mono", resampler="soxr")
    whole = load_audio(path, audio).waveform
    want = soxr.resample(data.mean(0, dtype=np.float32)[:, None], 44100, 16000, quality="HQ")[:, 0]
    assert whole.shape == (1, resampled_length(44100 + 17, 44100, 16000))
    np.testing.assert_allclose(whole[0, : want.shape[0]].numpy(), want[: whole.shape[1]], atol=1e-6)
    streamed = torch.cat(list(open_audio_stream(path, audio, chunk_seconds=0.07)), dim=1)
    assert streamed.shape == whole.shape and max_abs(streamed, whole) <= 1e-6


# ---------------------------------------------------------------- the config
def test_an_unknown_resampler_is_refused_with_a_hint():
    message = r"^audio.resampler must be one of torchaudio, soxr, got 'sxor' \(did you mean soxr\?\)$"
    with pytest.raises(ConfigError, match=message):
        validate_audio(AudioConfig(resampler="sxor"))
    with pytest.raises(ConfigError, match=r"got 'fast'$"):
        validate_audio(AudioConfig(resampler="fast"))


def test_soxr_missing_names_the_install(monkeypatch):
    import importlib.util
    import sys

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "soxr" else real(name, *a))
    with pytest.raises(ConfigError, match=r"audio.resampler=soxr needs the soxr package.*pip install soxr"):
        validate_audio(AudioConfig(resampler="soxr"))
    monkeypatch.setitem(sys.modules, "soxr", None)  # import soxr raises ImportError
    with pytest.raises(ConfigError, match=r"pip install soxr"):
        resample(unit_noise(1, 100), 44100, 16000, "soxr")


@pytest.mark.slow
def test_cli_refuses_an_unknown_resampler_in_one_line(tmp_path):
    from helpers.run import run_cli

    wav = tmp_path / "a.wav"
    make_audio(wav, channels=1, frames=1600, sr=16000)
    proc = run_cli(f"input={wav}", "audio.resampler=sxor", f"output.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "audio.resampler must be one of torchaudio, soxr" in lines[0] and "did you mean soxr" in lines[0]
