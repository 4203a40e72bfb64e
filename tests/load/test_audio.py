"""The loader: formats, channel policy, resampling, and its errors."""

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from conv_pipeline.load.signal import apply_channel_policy, resampled_length
from conv_pipeline.load.audio import load_audio, probe
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.errors import ConfigError, InputError
from helpers.audio import make_audio

FORMATS = [
    ("x.wav", dict(subtype="PCM_16")),
    ("x.wav", dict(subtype="PCM_24")),
    ("x.wav", dict(subtype="PCM_32")),
    ("x.wav", dict(subtype="PCM_U8")),
    ("x.wav", dict(subtype="FLOAT")),
    ("x.wav", dict(subtype="ULAW")),
    ("x.wav", dict(subtype="ALAW")),
    ("x.flac", dict(subtype="PCM_24")),
    ("x.ogg", dict(subtype="VORBIS")),
    ("x.mp3", dict(subtype="MPEG_LAYER_III")),
    ("x.aiff", dict(subtype="PCM_16", endian="BIG")),
    ("x.au", dict(subtype="PCM_16")),
]


@pytest.mark.parametrize("name, kw", FORMATS, ids=[f"{n}-{k['subtype']}" for n, k in FORMATS])
def test_formats_decode_to_float32_channels_first(tmp_path, name, kw):
    path = tmp_path / name
    expected = make_audio(path, channels=2, frames=4800, sr=16000, **kw)  # what libsndfile decodes
    audio = load_audio(path)
    assert audio.waveform.dtype == torch.float32
    assert audio.waveform.shape == expected.shape  # (channels, frames)
    assert audio.sample_rate == 16000 and audio.info.channels == 2
    np.testing.assert_array_equal(audio.waveform.numpy(), expected)


def test_decoded_by_content_not_extension(tmp_path):
    flac = tmp_path / "x.flac"
    expected = make_audio(flac, channels=1, frames=1000)
    disguised = tmp_path / "x.wav"
    disguised.write_bytes(flac.read_bytes())
    np.testing.assert_array_equal(load_audio(disguised).waveform.numpy(), expected)


def test_channel_policy():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)  # (channels, frames)
    assert torch.equal(apply_channel_policy(x, "keep"), x)
    torch.testing.assert_close(apply_channel_policy(x, "mono"), x.mean(0, keepdim=True))
    assert torch.equal(apply_channel_policy(x, [2, 0]), x[[2, 0]])
    assert torch.equal(apply_channel_policy(x, [1, 1]), x[[1, 1]])
    with pytest.raises(InputError, match=r"selects channel 3 but the file has 3 channel\(s\)"):
        apply_channel_policy(x, [0, 3])


def test_stereo_to_mono_equals_the_mean_bit_for_bit(tmp_path):
    """Two channels are mixed as (a + b) * 0.5 on the decoder's interleaved layout: the same float32
    values as ``mean(0)``, including huge, tiny (subnormal) and infinite samples."""
    rng = np.random.default_rng(3)
    frames = rng.standard_normal((5000, 2)).astype(np.float32)  # (T, C), as libsndfile gives them
    frames[:4] = [[3e38, 3e38], [1e-45, 2e-45], [np.inf, 1.0], [-1e-40, 3e-41]]
    interleaved = torch.from_numpy(frames).T  # (C, T) view
    for x in (interleaved, interleaved.contiguous()):
        mono = apply_channel_policy(x, "mono")
        assert mono.shape == (1, 5000)
        assert torch.equal(mono, x.contiguous().mean(0, keepdim=True))
    path = tmp_path / "s.wav"
    sf.write(path, frames[4:], 16000, subtype="FLOAT")
    loaded = load_audio(path, AudioConfig(channels="mono")).waveform
    assert loaded.is_contiguous() and torch.equal(loaded, torch.from_numpy(frames[4:].T.copy()).mean(0, keepdim=True))
    kept = load_audio(path).waveform
    assert kept.is_contiguous() and torch.equal(kept, torch.from_numpy(frames[4:].T.copy()))


def test_resampling_equals_torchaudio(tmp_path):
    path = tmp_path / "x.wav"
    x = make_audio(path, channels=2, frames=44100, sr=44100, subtype="FLOAT")
    audio = load_audio(path, AudioConfig(sample_rate=16000, channels="mono"))
    ref = AF.resample(torch.from_numpy(x).mean(0, keepdim=True), 44100, 16000)
    assert audio.sample_rate == 16000 and audio.info.sample_rate == 44100
    assert audio.waveform.shape == (1, resampled_length(44100, 44100, 16000)) == ref.shape
    torch.testing.assert_close(audio.waveform, ref)


@pytest.mark.parametrize(
    "audio_cfg, needle",
    [
        (AudioConfig(sample_rate=0), "audio.sample_rate must be null or an integer >= 1"),
        (AudioConfig(channels="stereo"), "audio.channels must be 'keep', 'mono' or a list"),
        (AudioConfig(channels=[]), "non-empty list"),
        (AudioConfig(channels=[-1]), "non-empty list of channel indices >= 0"),
    ],
)
def test_bad_audio_config(tmp_path, audio_cfg, needle):
    path = tmp_path / "x.wav"
    make_audio(path, channels=1, frames=100)
    with pytest.raises(ConfigError, match=needle):
        load_audio(path, audio_cfg)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="is a directory"):
        load_audio(tmp_path)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty file \(0 bytes\)"):
        load_audio(empty)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(InputError, match="not a readable audio file"):
        load_audio(text)
    noise = tmp_path / "noise.flac"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="not a readable audio file"):
        load_audio(noise)
    header_only = tmp_path / "header.wav"
    sf.write(header_only, np.zeros((0, 2), np.float32), 16000)
    assert probe(header_only).frames == 0
    with pytest.raises(InputError, match=r"no audio frames"):
        load_audio(header_only)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(tmp_path, bad):
    data = np.zeros((100, 2), np.float32)
    data[37, 1] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(InputError, match=r"bad.wav: contains 1 NaN or Inf sample"):
        load_audio(path)
