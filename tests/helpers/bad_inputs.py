"""The bad-input catalogue (issue 7): every kind of file users feed the tool, how to make it,
and what must happen to it. Shared by the reliability suite (``tests/reliability/``:
test_reliability.py through the CLI and the batch job, test_faults.py, test_security.py,
test_fuzz.py) and RELIABILITY.md (which lists the same cases).

Every case is run with ``MATRIX_OVERRIDES``: the ``default`` preset (16 kHz, receptive field
1040 samples, at least 400 samples for one frame) as a stereo model (``model.in_channels=2``).
``expect`` is ``"ok"`` (features written, equal to an independent reference) or a list of
substrings the one-line error must contain (besides the file's name).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import pytest
import soundfile as sf

from helpers.figures import FIGURES
from helpers.files import temp_files
from helpers.reference import reference_features

SR = 16000
MIN_FRAMES = 400  # default preset: geometry.min_input_length
MATRIX_OVERRIDES = ["model.in_channels=2"]  # on top of the default preset (audio.sample_rate=16000)


def signal(frames: int, channels: int = 2, sr: int = SR, seed: int = 0, amp: float = 0.5) -> np.ndarray:
    """Deterministic tone plus noise, ``(frames, channels)`` float32 within [-amp, amp]."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / sr
    x = 0.6 * np.sin(2 * np.pi * 330 * t)[:, None] + 0.3 * rng.uniform(-1, 1, (frames, channels))
    return (amp * x / 0.9).astype(np.float32)


def _write(fmt: Optional[str] = None, subtype: Optional[str] = None, frames: int = 8000, channels: int = 2,
           sr: int = SR, data: Optional[np.ndarray] = None, **kw) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        x = signal(frames, channels, sr) if data is None else data
        tmp = path.with_name("_writing_" + path.suffix)  # soundfile cannot name every file (non-UTF-8)
        sf.write(str(tmp), x, sr, format=fmt, subtype=subtype, **kw)
        os.replace(tmp, path)

    return make


def _bytes(data: Union[bytes, Callable[[], bytes]]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_bytes(data() if callable(data) else data)

    return make


def encoded(fmt: str, subtype: Optional[str] = None, frames: int = 8000, channels: int = 2, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, signal(frames, channels, sr), sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _truncated(fmt: str, subtype: str, keep: float = 0.5) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        data = encoded(fmt, subtype)
        path.write_bytes(data[: int(len(data) * keep)])

    return make


def _damaged(data: bytes, where: float = 0.5, n: int = 400, seed: int = 5) -> bytes:
    """``data`` with ``n`` random bytes written over it at ``where`` (a fraction of its length)."""
    out = bytearray(data)
    i = int(len(out) * where)
    out[i : i + n] = np.random.default_rng(seed).bytes(n)
    return bytes(out)


def _wav_lying_header(path: Path) -> None:
    """A WAV whose RIFF and data sizes claim ten times the frames that follow."""
    data = bytearray(encoded("WAV", "PCM_16"))
    i = data.index(b"data")
    (size,) = struct.unpack_from("<I", data, i + 4)
    struct.pack_into("<I", data, i + 4, size * 10)
    struct.pack_into("<I", data, 4, len(data) - 8 + size * 9)
    path.write_bytes(bytes(data))


def _flac_huge_total(path: Path) -> None:
    """A FLAC whose STREAMINFO claims 2**36 - 1 frames (1 TiB decoded); the file holds 8000."""
    data = bytearray(encoded("FLAC", "PCM_16"))
    i = 8 + 13  # "fLaC", block header (4), then 13 bytes to the 36-bit total-samples field
    v = int.from_bytes(data[i : i + 5], "big")
    data[i : i + 5] = ((v & ~((1 << 36) - 1)) | ((1 << 36) - 1)).to_bytes(5, "big")
    path.write_bytes(bytes(data))


def _wav_rate(rate: int) -> Callable[[Path], None]:
    """A valid PCM_16 WAV whose header says ``rate`` Hz (soundfile cannot write every rate)."""

    def make(path: Path) -> None:
        data = bytearray(encoded("WAV", "PCM_16"))
        struct.pack_into("<I", data, 24, rate)  # fmt chunk: sample rate
        struct.pack_into("<I", data, 28, rate * 4)  # byte rate (2 channels x 2 bytes)
        path.write_bytes(bytes(data))

    return make


def _float_with(value: float, where: str = "one") -> Callable[[Path], None]:
    def make(path: Path) -> None:
        x = signal(8000)
        if where == "one":
            x[4321, 1] = value
        elif where == "constant":
            x = np.full_like(x, value)
        else:
            x = (x * value).astype(np.float32)
        sf.write(str(path), x, SR, subtype="FLOAT")

    return make


def _text(path: Path) -> None:
    path.write_text("This is not audio.\nJust some notes, saved with the wrong name.\n" * 40)


def _random(seed: int, n: int = 6000) -> Callable[[Path], None]:
    return _bytes(lambda: np.random.default_rng(seed).bytes(n))


def _dir(path: Path) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("a folder named like an audio file")


def _symlink_loop(path: Path) -> None:
    other = path.with_name(path.stem + "_other" + path.suffix)
    os.symlink(other.name, path)
    os.symlink(path.name, other)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _unreadable(path: Path) -> None:
    _write("WAV", "PCM_16")(path)
    os.chmod(path, 0)


@dataclass
class Case:
    """One bad (or unusual) input.

    ``name``: the case's id; ``filename``: its file name (may hold odd characters); ``make(path)``
    creates it (``None``: nothing is created, the path is missing); ``expect``: ``"ok"`` or the
    substrings of its one-line error; ``what``: the input in words; ``behaviour``: what must
    happen, in words (RELIABILITY.md). ``audio``: for ``ok`` cases whose decoded audio can be
    checked against what was written, the expected ``(frames, channels)`` and a tolerance.
    ``cli``: whether ``python -m conv_pipeline input=...`` can name it (``False``: only through a
    batch list or folder). ``overrides``: extra config for this case. ``corpus_refused``: a batch
    job whose inputs include this file is refused before anything is processed (the channel rule
    is checked against every input's header), so it is not among a batch group's files.
    """

    name: str
    filename: str
    make: Optional[Callable[[Path], None]]
    expect: Union[str, list[str]]
    what: str
    behaviour: str = ""
    audio: Optional[tuple[np.ndarray, float]] = None
    cli: bool = True
    overrides: list[str] = field(default_factory=list)
    corpus_refused: bool = False

    @property
    def ok(self) -> bool:
        return self.expect == "ok"

    @property
    def needles(self) -> list[str]:
        return [] if self.ok else list(self.expect)  # type: ignore[arg-type]


def _sig(frames: int = 8000, channels: int = 2, sr: int = SR) -> np.ndarray:
    return signal(frames, channels, sr)


CASES: list[Case] = [
    Case("missing", "missing.wav", None, ["no such file"], "missing file",
         "refused: no such file"),
    Case("directory", "folder.wav", _dir, ["is a directory"], "a directory where a file is expected",
         "refused: is a directory"),
    Case("empty", "empty.wav", _bytes(b""), ["empty file (0 bytes)"], "empty (0-byte) file",
         "refused: empty file"),
    Case("header_only", "header_only.wav", _write("WAV", "PCM_16", frames=0), ["no audio frames"],
         "header-only WAV (0 frames)", "refused: no audio frames"),
    Case("truncated_wav", "truncated.wav", _truncated("WAV", "PCM_16"), "ok",
         "truncated WAV (header says 8000 frames, about half are there)",
         "processed: the frames that are there (libsndfile counts them); a warning says so"),
    Case("lying_wav", "lying_header.wav", _wav_lying_header, "ok",
         "WAV whose header claims 10x the frames present",
         "processed: the frames that are there; a warning says so"),
    Case("truncated_flac", "truncated.flac", _truncated("FLAC", "PCM_16"), ["truncated or corrupt"],
         "truncated FLAC (stream cut in the middle of a frame)",
         "refused: \"decoding failed (libsndfile's reason): the audio data is truncated or corrupt\""),
    Case("flac_huge_header", "huge_header.flac", _flac_huge_total, ["truncated or corrupt"],
         "FLAC whose header claims 2^36 frames (1 TiB decoded)",
         "refused without allocating what the header claims"),
    Case("random_wav", "random.wav", _random(1), ["not a readable audio file"], "random bytes named .wav",
         "refused: not a readable audio file"),
    Case("random_flac", "random.flac", _random(2), ["not a readable audio file"], "random bytes named .flac",
         "refused: not a readable audio file"),
    Case("random_ogg", "random.ogg", _random(3), ["not a readable audio file"], "random bytes named .ogg",
         "refused: not a readable audio file"),
    Case("text", "notes.wav", _text, ["not a readable audio file"], "a text file named .wav",
         "refused: not a readable audio file"),
    Case("flac_named_wav", "really_flac.wav", _bytes(lambda: encoded("FLAC", "PCM_16")), "ok",
         "valid FLAC named .wav", "processed: decoded by content", audio=(_sig(), 1 / 32768)),
    Case("wav_named_mp3", "really_wav.mp3", _bytes(lambda: encoded("WAV", "PCM_16")), "ok",
         "valid WAV named .mp3", "processed: decoded by content", audio=(_sig(), 1 / 32768)),
    Case("one_sample", "one_sample.wav", _write("WAV", "PCM_16", frames=1), ["has 1 samples", "at least 400"],
         "1-sample file", "refused: names the minimum length"),
    Case("shorter_than_rf", "short.wav", _write("WAV", "PCM_16", frames=300), ["has 300 samples", "at least 400"],
         "file shorter than the receptive field", "refused: names the minimum length"),
    Case("mono", "mono.wav", _write("WAV", "PCM_16", channels=1), ["1 channel(s)", "audio.channels=[0,0]"],
         "mono file into a stereo model", "refused: names the channel fix", corpus_refused=True),
    Case("surround_5_1", "surround51.wav", _write("WAV", "PCM_16", channels=6), ["6 channel(s)", "audio.channels=[0,1]"],
         "5.1 (6-channel) file into a stereo model", "refused: names the channel fix", corpus_refused=True),
    Case("eight_channels", "eight.wav", _write("WAV", "PCM_16", channels=8), ["8 channel(s)", "audio.channels=[0,1]"],
         "8-channel file into a stereo model", "refused: names the channel fix", corpus_refused=True),
    Case("rate_8k", "rate8k.wav", _write("WAV", "PCM_16", frames=4000, sr=8000), "ok",
         "8 kHz file (audio.sample_rate=16000)", "processed: resampled to 16 kHz",
         audio=(_sig(4000, 2, 8000), 1 / 32768)),
    Case("rate_192k", "rate192k.wav", _write("WAV", "PCM_24", frames=96000, sr=192000), "ok",
         "192 kHz file (audio.sample_rate=16000)", "processed: resampled to 16 kHz",
         audio=(_sig(96000, 2, 192000), 1 / 2**23)),
    Case("rate_8k_native", "rate8k_native.wav", _write("WAV", "PCM_16", frames=4000, sr=8000), "ok",
         "8 kHz file, audio.sample_rate=null", "processed at 8 kHz (recorded as the features' rate)",
         audio=(_sig(4000, 2, 8000), 1 / 32768), overrides=["audio.sample_rate=null"]),
    Case("rate_192k_native", "rate192k_native.wav", _write("WAV", "PCM_16", frames=96000, sr=192000), "ok",
         "192 kHz file, audio.sample_rate=null", "processed at 192 kHz",
         audio=(_sig(96000, 2, 192000), 1 / 32768), overrides=["audio.sample_rate=null"]),
    Case("odd_rate", "odd_rate.wav", _wav_rate(999983), ["resampling 999983 Hz to 16000 Hz"],
         "WAV at 999983 Hz (a prime: shares no factor with 16000, a filter of 26 million taps)",
         "refused before allocating the filter; names the fix"),
    Case("odd_rate_native", "odd_rate_native.wav", _wav_rate(16001), "ok",
         "WAV at 16001 Hz, audio.sample_rate=null", "processed at its own rate",
         overrides=["audio.sample_rate=null"]),
    Case("pcm_u8", "u8.wav", _write("WAV", "PCM_U8"), "ok", "8-bit unsigned WAV",
         "processed: decoded to [-1, 1)", audio=(_sig(), 1 / 128)),
    Case("pcm_24", "pcm24.wav", _write("WAV", "PCM_24"), "ok", "24-bit WAV", "processed",
         audio=(_sig(), 1 / 2**23)),
    Case("float32", "float32.wav", _write("WAV", "FLOAT"), "ok", "32-bit float WAV", "processed",
         audio=(_sig(), 1e-7)),
    Case("double", "double.wav", _write("WAV", "DOUBLE"), "ok", "64-bit float WAV", "processed",
         audio=(_sig(), 1e-7)),
    Case("alaw", "alaw.wav", _write("WAV", "ALAW"), "ok", "A-law WAV", "processed",
         audio=(_sig(), 0.02)),
    Case("ulaw", "ulaw.wav", _write("WAV", "ULAW"), "ok", "µ-law WAV", "processed",
         audio=(_sig(), 0.02)),
    Case("aiff_be", "bigendian.aiff", _write("AIFF", "PCM_16", endian="BIG"), "ok", "big-endian 16-bit AIFF",
         "processed", audio=(_sig(), 1 / 32768)),
    Case("aifc_float", "float.aifc", _write("AIFF", "FLOAT"), "ok", "AIFF-C with float samples",
         "processed", audio=(_sig(), 1e-7)),
    Case("ima_adpcm", "adpcm.wav", _write("WAV", "IMA_ADPCM"), "ok", "IMA ADPCM WAV", "processed"),
    Case("flac24", "hires.flac", _write("FLAC", "PCM_24"), "ok", "24-bit FLAC", "processed",
         audio=(_sig(), 1 / 2**23)),
    Case("ogg_vorbis", "vorbis.ogg", _write("OGG", "VORBIS"), "ok", "Ogg Vorbis", "processed"),
    Case("mp3", "song.mp3", _write("MP3", "MPEG_LAYER_III"), "ok", "MP3", "processed"),
    Case("w64", "wave64.w64", _write("W64", "PCM_16"), "ok", "Sony Wave64", "processed",
         audio=(_sig(), 1 / 32768)),
    Case("au", "sun.au", _write("AU", "PCM_16"), "ok", "Sun AU (big-endian)", "processed",
         audio=(_sig(), 1 / 32768)),
    Case("mp3_damaged", "damaged.mp3", _bytes(lambda: _damaged(encoded("MP3", "MPEG_LAYER_III"))), "ok",
         "MP3 with 400 bytes of garbage in the middle (libmpg123 prints errors on stderr)",
         "processed: the frames the decoder recovers; a warning says fewer than the header's; "
         "the decoder's own stderr noise is held back"),
    Case("mp3_truncated", "cut.mp3", _truncated("MP3", "MPEG_LAYER_III"), "ok", "MP3 cut in half",
         "processed: the frames that are there; a warning says so"),
    Case("ogg_truncated", "cut.ogg", _truncated("OGG", "VORBIS"), ["truncated or damaged"],
         "Ogg Vorbis cut in half (libsndfile then finds no frame count and decodes nothing)",
         "refused: says the file is truncated or damaged"),
    Case("opus", "voice.opus", _write("OGG", "OPUS", sr=48000), "ok", "Ogg Opus at 48 kHz", "processed"),
    Case("opus_truncated", "cut.opus", _bytes(lambda: encoded("OGG", "OPUS", sr=48000)[:3000]),
         ["not a readable audio file"], "Ogg Opus cut short", "refused: not a readable audio file"),
    Case("nan", "nan.wav", _float_with(np.nan), ["NaN or Inf"], "float WAV with a NaN",
         "refused: counts the NaN/Inf samples"),
    Case("inf", "inf.wav", _float_with(np.inf), ["NaN or Inf"], "float WAV with an Inf",
         "refused: counts the NaN/Inf samples"),
    Case("loud", "loud.wav", _float_with(1000.0, "all"), "ok", "float WAV with values near ±1000",
         "processed as is (float audio is not clipped)"),
    Case("huge_values", "huge_values.wav", _float_with(3e38, "all"), "ok",
         "float WAV with values up to ±1.5e38 (features near 1e37, still finite)", "processed as is"),
    Case("overflow", "overflow.wav", _float_with(1e30, "all"), ["too large"],
         "float WAV with values near ±1e30 into model=mel (the power spectrum, |X|^2 near 1e64, overflows float32 to Inf)",
         "refused: no file of Inf/NaN features is written", overrides=["model=mel", "model.in_channels=1"]),
    Case("silence", "silence.wav", _write("WAV", "PCM_16", data=np.zeros((8000, 2), np.float32)), "ok",
         "digital silence", "processed", audio=(np.zeros((8000, 2), np.float32), 0.0)),
    Case("symlink_loop", "loop.wav", _symlink_loop, ["symbolic link"], "a symbolic link loop (a -> b -> a)",
         "refused: names the link problem"),
    Case("fifo", "pipe.wav", _fifo, ["not a regular file"], "a named pipe (FIFO) named .wav",
         "refused at once (never blocks waiting for a writer)"),
    Case("unreadable", "locked.wav", _unreadable, ["permission denied"], "unreadable file (mode 000)",
         "refused: permission denied (root reads anyway: real processes run without CAP_DAC_OVERRIDE; "
         "in-process runs see os.access deny it)"),
    Case("odd_name", "my song 'live' \"x\" é ü.wav", _write("WAV", "PCM_16"), "ok",
         "path with spaces, quotes and non-ASCII characters", "processed",
         audio=(_sig(), 1 / 32768)),
    Case("long_name", "x" * 246 + ".wav", _write("WAV", "PCM_16"), "ok",
         "a 250-byte file name (the temporary output name would pass the 255-byte limit)",
         "processed: temporary names are shortened to fit", audio=(_sig(), 1 / 32768)),
    Case("non_utf8_name", os.fsdecode(b"bad\xffname.wav"), _write("WAV", "PCM_16"), "ok",
         "file name that is not valid UTF-8", "processed; manifest stays valid JSON",
         audio=(_sig(), 1 / 32768)),
]

BY_NAME = {c.name: c for c in CASES}


def build(case: Case, folder: Path) -> Path:
    """Create ``case``'s input in ``folder``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / case.filename
    if case.make is not None:
        case.make(path)
    return path


# ---------------------------------------------------------------- running the entry points
def hydra_quote(value: object) -> str:
    """``value`` as a single-quoted Hydra string: any path can then be given as ``input=...``."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def compose_batch(overrides: list[str]):
    """The batch job's config (``configs/batch.yaml``) composed with ``overrides``, as
    ``scripts/batch_process.py`` would."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from conv_pipeline.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="conv_pipeline.configs", version_base=None):
            return compose(config_name="batch", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def _drop_dac_capabilities() -> None:  # pragma: no cover - runs in the child before exec
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def unprivileged_preexec():
    """A ``preexec_fn`` under which file permissions apply to the child even when the tests run
    as root (its bounding set loses CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so after ``exec``
    root reads and writes like the files' owner), ``None`` when not root (nothing to drop).
    Raises ``RuntimeError`` when neither works (the caller skips)."""
    import subprocess
    import tempfile

    if os.geteuid() != 0:
        return None
    with tempfile.TemporaryDirectory() as d:
        locked = Path(d) / "locked"
        locked.write_text("x")
        locked.chmod(0)
        try:
            proc = subprocess.run(["cat", str(locked)], preexec_fn=_drop_dac_capabilities, capture_output=True)
        except (OSError, subprocess.SubprocessError) as err:
            raise RuntimeError(f"cannot drop capabilities: {err}") from None
        if proc.returncode == 0:
            raise RuntimeError("dropping CAP_DAC_OVERRIDE did not make a mode-000 file unreadable")
    return _drop_dac_capabilities


# ---------------------------------------------------------------- checking outcomes
FEATURE_SUFFIXES = (".npy", ".npz")


def target_rate(case: Case, native: int) -> int:
    return native if "audio.sample_rate=null" in case.overrides else SR


def expected_waveform(path: Path, case: Case) -> np.ndarray:
    """What the stack must see, computed without the pipeline: soundfile's decode, torchaudio's resample."""
    import torch
    import torchaudio.functional as AF

    data, sr = sf.read(os.fsencode(path), dtype="float32", always_2d=True)  # (T, C)
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    target = target_rate(case, sr)
    if target != sr:
        wave = AF.resample(wave, sr, target)
    return wave.numpy()


def check_features(out_dir: Path, feature_file: Path, path: Path, case: Case) -> np.ndarray:
    """The file loads without pickle, is float32 (C_out, frames) and equals the reference."""
    got = np.load(feature_file, allow_pickle=False)
    want = reference_features(out_dir, expected_waveform(path, case))
    assert got.dtype == np.float32 and got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max()))
    assert float(np.abs(got - want).max()) <= 1e-4 * scale, case.name
    return got


def written_features(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in FEATURE_SUFFIXES] if folder.exists() else []


def deny_reading(monkeypatch, locked: Path) -> None:
    """In-process stand-in for an unreadable file (root reads mode-000 files): ``os.access``
    says no for ``locked`` (the real thing: ``test_real_processes_*``)."""
    real = os.access

    def access(path, mode, *a, **k):
        if os.fspath(path) == os.fspath(locked):
            return False
        return real(path, mode, *a, **k)

    monkeypatch.setattr(os, "access", access)


def is_clear_error(line: str, case: Case, path: Path) -> bool:
    return (
        path.name in line
        and all(n in line for n in case.needles)
        and "Traceback" not in line
        and "\n" not in line
    )


def check_batch_records(out: Path, paths: dict[str, Path], cases: list[Case], label: str) -> None:
    """Every case has exactly one record: ``ok`` with correct features, or ``failed`` with a clear
    one-line error; nothing else is in ``out`` (no partial output, no temporary file)."""
    from conv_pipeline.sink.manifest import MANIFEST_NAME, read_manifest

    records = read_manifest(out)
    assert len(records) == len(cases), sorted(records)  # every input has exactly one record
    ok_outputs = set()
    for case in cases:
        path = paths[case.name]
        rec = records.get(str(path))
        if rec is None:
            FIGURES.outcome("bad input", False, f"batch {label} {case.name}: no manifest record")
            pytest.fail(f"{case.name}: no record")
        if case.ok:
            good = rec.status == "ok" and rec.error is None and rec.output is not None
            FIGURES.outcome("bad input", good, f"batch {label} {case.name}: {rec.status} {rec.error}")
            assert good, rec
            got = check_features(out, out / rec.output, path, case)
            assert rec.shape == list(got.shape)
            assert rec.sample_rate == target_rate(case, sf.info(os.fsencode(path)).samplerate)
            ok_outputs.add(rec.output)
        else:
            clear = rec.status == "failed" and rec.output is None and rec.error is not None \
                and is_clear_error(rec.error, case, path)
            FIGURES.outcome("bad input", clear, f"batch {label} {case.name}: {rec.status} {rec.error}")
            assert clear, rec
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == ok_outputs | {MANIFEST_NAME, "model.safetensors", "config.yaml"}  # no partial output
    assert not temp_files(out)


