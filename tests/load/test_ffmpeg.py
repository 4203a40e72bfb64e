"""FFmpeg inputs (``conv_pipeline.load.ffmpeg``, ``audio.decoder``): AAC in .m4a and in a .mp4
with a video track, Opus in .webm, ALAC, made here with PyAV's own encoders. Our decode equals
PyAV's plain decode (whole, block by block, streamed and resampled); the bad-input matrix is one
line; FFmpeg prints nothing on stderr; the CLI's ``model=mel audio.channels=mono`` equals FFmpeg's
decode -> torchaudio resample -> torchaudio ``MelSpectrogram``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

av = pytest.importorskip("av")

import torchaudio  # noqa: E402
import torchaudio.functional as AF  # noqa: E402
import yaml  # noqa: E402

from conv_pipeline.config.checks import validate_audio  # noqa: E402
from conv_pipeline.config.schema import AudioConfig  # noqa: E402
from conv_pipeline.errors import ConfigError, InputError  # noqa: E402
from conv_pipeline.load import remote  # noqa: E402
from conv_pipeline.load.audio import load_audio, probe  # noqa: E402
from conv_pipeline.load.blocks import open_blocks  # noqa: E402
from conv_pipeline.load.stream import open_audio_stream  # noqa: E402
from helpers.paths import ROOT  # noqa: E402
from helpers.run import assert_one_line_error, cli_completed, run_cli  # noqa: E402

KEEP = AudioConfig(sample_rate=None, channels="keep")
MONO16 = AudioConfig(sample_rate=16000, channels="mono")


# ---------------------------------------------------------------- making files with PyAV's encoders
def signal(rate: int, seconds: float = 1.3, channels: int = 2) -> np.ndarray:
    """Two tones plus a little noise, float32 ``(channels, n)``."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(rate)
    x = [0.4 * np.sin(2 * np.pi * (330 + 220 * c) * t) + 0.05 * rng.standard_normal(t.size) for c in range(channels)]
    return np.stack(x).astype(np.float32)


def encode(path: Path, codec: str, rate: int, x: np.ndarray, fmt: str | None = None, video: bool = False,
           options: dict | None = None) -> Path:
    """``x`` ``(C, n)`` encoded with PyAV's ``codec`` into ``path``, in frames with explicit pts
    (so the muxer records the encoder's priming: an MP4 edit list, Opus pre-skip); with a small
    video track first when ``video``."""
    layout = {1: "mono", 2: "stereo"}[x.shape[0]]
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        vstream = None
        if video:
            vstream = out.add_stream("mpeg4", rate=25)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        if codec == "wmav2":
            stream.bit_rate = 128000
        in_format = "s16p" if codec == "alac" else "fltp"
        data = np.round(x * 32767).astype(np.int16) if codec == "alac" else x
        for i in range(0, x.shape[1], 3000):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i : i + 3000]), format=in_format, layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if vstream is not None:
            for _ in range(int(25 * x.shape[1] / rate)):
                image = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
                for packet in vstream.encode(image):
                    out.mux(packet)
            for packet in vstream.encode(None):
                out.mux(packet)
    return path


def ffmpeg_decode(path: Path) -> np.ndarray:
    """PyAV's plain decode of the first audio stream, converted to planar float by FFmpeg's own
    libswresample (integer formats: x / 2**15, x / 2**31), concatenated: float32 ``(C, n)``."""
    to_float = av.AudioResampler(format="fltp")  # the format only: same rate and layout
    with av.open(str(path)) as c:
        frames = [g for f in c.decode(c.streams.audio[0]) for g in to_float.resample(f)]
    return np.concatenate([f.to_ndarray() for f in frames + to_float.resample(None)], axis=1)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ffmpeg")
    return {
        "m4a": encode(d / "music.m4a", "aac", 44100, signal(44100), fmt="ipod"),
        "mp4": encode(d / "clip.mp4", "aac", 48000, signal(48000), video=True),
        "webm": encode(d / "talk.webm", "libopus", 48000, signal(48000)),
    }


# ---------------------------------------------------------------- header, whole file, blocks
@pytest.mark.parametrize("kind, rate", [("m4a", 44100), ("mp4", 48000), ("webm", 48000)])
def test_header_whole_and_blocks_equal_ffmpegs_own_decode(media, kind, rate):
    path = media[kind]
    ref = ffmpeg_decode(path)  # (2, n) float32
    info = probe(path)
    assert (info.sample_rate, info.channels, info.decoder, info.frames_exact) == (rate, 2, "ffmpeg", False)
    assert abs(info.frames - ref.shape[1]) <= 0.1 * rate  # an estimate, within the stated slack
    whole = load_audio(path, KEEP)
    assert whole.waveform.dtype == torch.float32 and np.array_equal(whole.waveform.numpy(), ref)
    assert whole.info.frames == ref.shape[1]
    reader = open_blocks(path, KEEP, block_frames=777)
    blocks = list(reader)
    assert all(b.shape[1] == 777 for b in blocks[:-1]) and reader.frames_read == ref.shape[1]
    assert np.array_equal(torch.cat(blocks, 1).numpy(), ref)
    assert np.array_equal(torch.cat(list(reader), 1).numpy(), ref)  # a second pass decodes again


@pytest.mark.parametrize("kind", ["m4a", "webm"])
def test_mono_resampled_whole_and_streamed_equal_torchaudio(media, kind):
    path = media[kind]
    ref = AF.resample(torch.from_numpy(ffmpeg_decode(path)).mean(0, keepdim=True), probe(path).sample_rate, 16000)
    whole = load_audio(path, MONO16).waveform
    stream = open_audio_stream(path, MONO16, chunk_seconds=0.37)
    streamed = torch.cat(list(stream), 1)
    assert whole.shape == streamed.shape == ref.shape and stream.frames_read == ref.shape[1]
    torch.testing.assert_close(whole, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(streamed, ref, atol=1e-5, rtol=0)


def test_priming_is_dropped_where_ffmpeg_marks_it(tmp_path, media):
    """AAC in MP4 (edit list) and Opus (pre-skip, end padding): the decode starts with the signal,
    not with the encoder's priming; Opus ends where the signal ends."""
    for kind, rate in [("m4a", 44100), ("webm", 48000)]:
        x = signal(rate)[0]
        y = load_audio(media[kind], KEEP).waveform[0].numpy()
        if kind == "webm":
            assert y.shape[0] == x.shape[0]
        else:  # AAC frames of 1024: the last one's padding is kept, as FFmpeg decodes it
            assert x.shape[0] <= y.shape[0] < x.shape[0] + 1024
        n = x.shape[0] - 4096
        lags = range(-1200, 1201)
        corr = [float(np.dot(x[2048 : 2048 + n], y[2048 + lag : 2048 + lag + n])) for lag in lags]
        assert abs(lags[int(np.argmax(corr))]) <= 2, kind  # aligned: no priming left at the start


@pytest.mark.parametrize("name, codec, fmt", [("speech.wma", "wmav2", "asf"), ("song.mka", "flac", "matroska"),
                                              ("clip.mov", "mp3", "mov"), ("loss.m4a", "alac", "ipod"),
                                              ("raw.aac", "aac", "adts")])
def test_other_codecs_equal_ffmpegs_own_decode(tmp_path, name, codec, fmt):
    """WMA, FLAC in Matroska (decoded as integers), MP3 in a QuickTime file, ALAC, raw ADTS AAC:
    what FFmpeg decodes."""
    path = encode(tmp_path / name, codec, 44100, signal(44100, seconds=0.6), fmt=fmt)
    ref = ffmpeg_decode(path)
    assert probe(path).decoder == "ffmpeg"
    assert np.array_equal(load_audio(path, KEEP).waveform.numpy(), ref)
    assert np.array_equal(torch.cat(list(open_blocks(path, KEEP, 1000)), 1).numpy(), ref)


@pytest.mark.slow
def test_blocks_hold_bounded_memory(tmp_path):
    """Two minutes of AAC read in 0.1 s blocks: the peak of Python/numpy allocations stays near a
    few blocks (tracemalloc sees numpy's buffers), not the file's 7.7 MB of float32."""
    import tracemalloc

    rate, seconds = 16000, 120
    path = encode(tmp_path / "long.m4a", "aac", rate, signal(rate, seconds=seconds, channels=1), fmt="ipod")
    reader = open_blocks(path, KEEP, block_frames=rate // 10)
    tracemalloc.start()
    try:
        n = sum(int(b.shape[1]) for b in reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == reader.frames_read >= rate * seconds
    assert peak < 40 * 4 * rate // 10 < 4 * n / 20, peak  # under 40 blocks' worth, a twentieth of the file


def test_alac_decodes_losslessly(tmp_path):
    x = signal(44100, seconds=0.5)
    path = encode(tmp_path / "lossless.m4a", "alac", 44100, x, fmt="ipod")
    expected = np.round(x * 32767).astype(np.int16).astype(np.float32) / 32768  # as libsndfile scales PCM_16
    got = load_audio(path, KEEP).waveform.numpy()
    assert got.shape == expected.shape and np.array_equal(got, expected)


# ---------------------------------------------------------------- audio.decoder
def test_decoder_setting(tmp_path, media, caplog):
    wav = tmp_path / "pcm.wav"
    sf.write(str(wav), signal(16000, 0.4).T, 16000, subtype="PCM_16")
    by_sf = load_audio(wav, KEEP)
    by_ff = load_audio(wav, AudioConfig(sample_rate=None, decoder="ffmpeg"))
    assert by_sf.info.decoder == "soundfile" and by_ff.info.decoder == "ffmpeg"
    assert np.array_equal(by_sf.waveform.numpy(), by_ff.waveform.numpy())  # int16 / 2**15 both ways
    with pytest.raises(InputError, match=r"music\.m4a: not a readable audio file \("):
        load_audio(media["m4a"], AudioConfig(decoder="soundfile"))
    with pytest.raises(InputError, match=r"music\.m4a: not a readable audio file \("):
        open_audio_stream(media["m4a"], AudioConfig(decoder="soundfile"), 0.5)
    hidden = tmp_path / "no_extension"  # auto: libsndfile refuses it, FFmpeg reads it by content
    hidden.write_bytes(media["webm"].read_bytes())
    assert np.array_equal(load_audio(hidden, KEEP).waveform.numpy(), ffmpeg_decode(media["webm"]))
    for bad in ("mp3", 3, None):
        with pytest.raises(ConfigError, match="audio.decoder"):
            validate_audio(AudioConfig(decoder=bad))


def test_without_pyav_one_line_with_the_install_hint(media, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # import av fails
    with pytest.raises(InputError, match=r"music\.m4a: needs FFmpeg .*pip install 'conv_pipeline\[ffmpeg\]'"):
        load_audio(media["m4a"], KEEP)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    with pytest.raises(ConfigError, match=r"audio.decoder=ffmpeg needs the av package, .*conv_pipeline\[ffmpeg\]' \(or set audio.decoder=auto\)"):
        validate_audio(AudioConfig(decoder="ffmpeg"))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 64)
    with pytest.raises(InputError, match=r"not a readable audio file .*conv_pipeline\[ffmpeg\]"):
        probe(junk)
    fsspec = pytest.importorskip("fsspec")
    fsspec.filesystem("memory").pipe_file("/nopyav/junk.wav", junk.read_bytes())
    with pytest.raises(InputError, match=r"memory://nopyav/junk\.wav: not a readable audio file .*conv_pipeline\[ffmpeg\]"):
        remote.probe("memory://nopyav/junk.wav")  # a URL says the same as a path


def test_remote_probe_reads_ffmpeg_headers(media):
    fsspec = pytest.importorskip("fsspec")
    fsspec.filesystem("memory").pipe_file("/ff/clip.mp4", media["mp4"].read_bytes())
    fsspec.filesystem("memory").pipe_file("/ff/clip.bin", media["mp4"].read_bytes())
    local = probe(media["mp4"])
    for url in ("memory://ff/clip.mp4", "memory://ff/clip.bin"):  # by extension, and by fallback
        info = remote.probe(url)
        assert (info.sample_rate, info.channels, info.frames, info.decoder) == (48000, 2, local.frames, "ffmpeg")
    with pytest.raises(InputError, match=r"memory://ff/clip\.mp4: not a readable audio file"):
        remote.probe("memory://ff/clip.mp4", decoder="soundfile")


# ---------------------------------------------------------------- bad inputs
def _bad_files(d: Path, media: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    m4a = media["m4a"].read_bytes()
    (d / "cut.m4a").write_bytes(m4a[: len(m4a) // 2])  # the index (moov) is at the end: gone
    (d / "stub.mp4").write_bytes(m4a[:64])
    corrupt = bytearray(m4a)
    for i in np.random.default_rng(0).integers(2000, len(m4a) - 2000, 300):
        corrupt[i] ^= 0xFF
    (d / "corrupt.m4a").write_bytes(bytes(corrupt))
    (d / "noise.webm").write_bytes(np.random.default_rng(1).bytes(4096))
    silent = d / "silent.mp4"
    with av.open(str(silent), "w") as out:  # a video without audio
        v = out.add_stream("mpeg4", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            for packet in v.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in v.encode(None):
            out.mux(packet)
    return {
        "truncated": (d / "cut.m4a", "not a readable audio file (FFmpeg: "),
        "stub": (d / "stub.mp4", "not a readable audio file (FFmpeg: "),
        "corrupt": (d / "corrupt.m4a", "decoding failed (FFmpeg: "),
        "not media": (d / "noise.webm", "not a readable audio file (FFmpeg: "),
        "video without audio": (silent, "has no audio stream (FFmpeg finds video (mpeg4))"),
    }


def test_bad_inputs_are_one_line_input_errors(tmp_path, media):
    for what, (path, words) in _bad_files(tmp_path, media).items():
        for run in (lambda p: load_audio(p, MONO16), lambda p: list(open_audio_stream(p, MONO16, 0.25))):
            with pytest.raises(InputError) as err:
                run(path)
            message = str(err.value)
            assert message.startswith(f"{path}: ") and words in message and "\n" not in message, (what, message)


def test_truncated_webm_is_decoded_as_far_as_it_goes_with_a_warning(tmp_path, media, caplog):
    webm = media["webm"].read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(webm[: len(webm) // 2])  # Matroska has no index to lose: the clusters end early
    ref = ffmpeg_decode(cut)
    with caplog.at_level(logging.WARNING, logger="conv_pipeline.audio"):
        got = load_audio(cut, KEEP)
    assert np.array_equal(got.waveform.numpy(), ref) and 0 < ref.shape[1] < probe(media["webm"]).frames // 2 + 4800
    assert "holds less audio than its header declares" in caplog.text


@pytest.mark.slow
def test_no_decoder_messages_on_stderr(tmp_path, media):
    """FFmpeg's own log would print about the damaged file (the control); ours prints nothing."""
    bad = _bad_files(tmp_path, media)
    script = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout)\n"
        "from conv_pipeline.load.audio import load_audio\n"
        "from conv_pipeline.load import ffmpeg\n"
        "from conv_pipeline.errors import InputError\n"
        "av = ffmpeg.load_av('x')\n"
        "if sys.argv[1] == 'control': av.logging.set_level(av.logging.VERBOSE); av.logging.restore_default_callback()\n"
        "for p in sys.argv[2:]:\n"
        "    try: load_audio(p)\n"
        "    except InputError as e: print(e)\n"
    )
    files = [str(bad["corrupt"][0]), str(bad["truncated"][0]), str(media["webm"])]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # Python's own warnings are not the decoders' noise
    ours, control = (subprocess.run([sys.executable, "-c", script, which, *files], capture_output=True, text=True,
                                     cwd=ROOT, env=env, timeout=300) for which in ("ours", "control"))
    assert ours.returncode == 0 and ours.stderr == "", ours.stderr
    assert ours.stdout.count("decoding failed") == 1 and ours.stdout.count("not a readable") == 1
    assert control.stderr.strip(), "the control shows FFmpeg has something to say about these files"


# ---------------------------------------------------------------- the command line (issue 16's done-when)
def _mel_reference(path: Path) -> np.ndarray:
    preset = yaml.safe_load((ROOT / "configs" / "model" / "mel.yaml").read_text())
    fe = preset["model"]["frontend"]
    x = torch.from_numpy(ffmpeg_decode(path)).mean(0, keepdim=True)  # FFmpeg's own decode, mono
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
    x = AF.resample(x, rate, preset["audio"]["sample_rate"])
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=preset["audio"]["sample_rate"], n_fft=fe["n_fft"], hop_length=fe["hop_length"],
        n_mels=fe["n_mels"], center=False, power=2.0,
    )
    return mel(x)[0].numpy()  # (n_mels, frames)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["m4a", "mp4", "webm"])
def test_cli_mel_mono_equals_ffmpeg_then_torchaudio(tmp_path, media, kind, capfd):
    ref = _mel_reference(media[kind])
    for chunk in ("null", "0.37"):
        out = tmp_path / f"feats-{chunk}"
        argv = [f"input={media[kind]}", f"output.dir={out}", "model=mel", "audio.channels=mono",
                f"runtime.chunk_seconds={chunk}"]
        proc = cli_completed(argv, capfd) if chunk == "0.37" or kind != "webm" else run_cli(*argv, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        y = np.load(out / f"{media[kind].stem}.npy")
        assert y.shape == ref.shape  # the same samples: aligned to the sample, priming included
        np.testing.assert_allclose(y, ref, atol=1e-3 * float(np.abs(ref).max()), rtol=0)


@pytest.mark.slow
def test_cli_video_without_audio_is_one_line(tmp_path, media):
    silent = _bad_files(tmp_path, media)["video without audio"][0]
    proc = run_cli(f"input={silent}", f"output.dir={tmp_path / 'o'}", "model=mel", cwd=tmp_path)
    assert_one_line_error(proc, "has no audio stream")
    assert not (tmp_path / "o").exists()
