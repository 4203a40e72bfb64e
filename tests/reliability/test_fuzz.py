"""Issue 7: fuzzing. Hypothesis over the whole config space and over the audio loader's input.

* Any valid stack (front-ends, every layer option, norms, activations, groups) and any input
  length: the geometry's predicted shape is the actual shape alone, in a padded batch, chunked
  (any block sizes), and in the feature file the pipeline writes (whole and chunked).
* Any config with a defect: a ``ConfigError`` before any audio is read (the loader is replaced by
  a tripwire), nothing written; never another exception.
* Any bytes (``binary()``, and mutations of valid WAV/FLAC/AIFF/AU/Ogg/MP3/W64 files): the loader
  gives finite float32 ``(channels, frames)`` audio, or a one-line ``PipelineError`` naming the
  file; the whole-file and block readers agree; features of what loads have the predicted shape.

Examples are derandomized (the same every run: the suite stays reproducible); set
``FUZZ_EXAMPLES=N`` to run N per property and ``FUZZ_RANDOM=1`` for fresh random examples (a
longer campaign: ``FUZZ_EXAMPLES=3000 FUZZ_RANDOM=1 pytest tests/reliability/test_fuzz.py``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import conv_pipeline.load.decode as decode_mod
from conv_pipeline.load.audio import Audio, AudioInfo, load_audio
from conv_pipeline.load.blocks import open_blocks
from conv_pipeline.execute.whole import extract_batch
from conv_pipeline.engines.job import run_batch
from conv_pipeline.config.schema import AudioConfig, BatchConfig, BatchOptions, Config, LayerConfig, ModelConfig, OutputConfig, RuntimeConfig
from conv_pipeline.config.checks import validate_model
from conv_pipeline.errors import ConfigError, PipelineError
from conv_pipeline.stack.stack import ConvStack
from conv_pipeline.execute.whole import extract
from conv_pipeline.engines.single import run
from conv_pipeline.execute.chunked import iter_features
from helpers.bad_inputs import signal as make_signal
from helpers.figures import FIGURES
from helpers.strategies import EXTENSIONS, broken_models, mutated, valid_models

N = int(os.environ.get("FUZZ_EXAMPLES", "0"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"


def fuzz_settings(default: int):
    return settings(
        max_examples=N or default,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------- the config space
REGRESSION = ModelConfig(  # torch segfaulted on this one (a transposed 1-frame input to a grouped conv)
    name="fuzz", in_channels=1,
    layers=[LayerConfig(8, 5, norm="layer_norm"), LayerConfig(4, 2, stride=3, padding=4, dilation=2, groups=2)],
)


@pytest.mark.slow
@fuzz_settings(40)
@given(spec=valid_models(), extra=st.integers(0, 400), others=st.lists(st.integers(0, 300), min_size=1, max_size=3),
       chunks=st.lists(st.integers(1, 97), min_size=1, max_size=4), seed=st.integers(0, 2**16))
@example(spec=(REGRESSION, 1), extra=0, others=[3], chunks=[2, 3], seed=0)
def test_predicted_shape_is_the_shape_in_every_mode(spec, extra, others, chunks, seed):
    model, in_channels = spec
    geometry = validate_model(model)
    stack = ConvStack.from_config(model, in_channels=in_channels, seed=seed).eval()
    need = geometry.min_input_length
    length = need + extra
    gen = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(in_channels, length, generator=gen)
    predicted = (stack.out_channels, geometry.output_length(length))
    info = AudioInfo("fuzz.wav", 8000, in_channels, length, "WAV", "FLOAT")

    alone = extract(Audio(x, 8000, info), stack)
    assert tuple(alone.shape) == predicted
    batch = [x] + [0.5 * torch.randn(in_channels, need + n, generator=gen) for n in others]
    batched = extract_batch(batch, stack)
    assert tuple(batched[0].shape) == predicted
    assert all(tuple(b.shape) == (stack.out_channels, geometry.output_length(w.shape[-1])) for b, w in zip(batched, batch))
    blocks, start, i = [], 0, 0
    while start < length:
        blocks.append(x[:, start : start + chunks[i % len(chunks)]])
        start += chunks[i % len(chunks)]
        i += 1
    streamed = torch.cat(list(iter_features(blocks, stack)), dim=1)
    assert tuple(streamed.shape) == predicted
    scale = float(alone.abs().max().clamp_min(1.0))
    assert float((streamed - alone).abs().max()) <= 1e-3 * scale
    FIGURES.outcome("fuzz", True, "")


@pytest.mark.slow
@fuzz_settings(20)
@given(spec=valid_models(), extra=st.integers(0, 200), chunk=st.sampled_from([None, 0.003, 0.011]),
       fmt=st.sampled_from(["npy", "npz"]), seed=st.integers(0, 99))
def test_the_file_written_has_the_predicted_shape(spec, extra, chunk, fmt, seed, tmp_path_factory):
    """Through ``pipeline.run`` (the CLI's code): the file on disk has the predicted shape."""
    model, in_channels = spec
    geometry = validate_model(model)
    length = geometry.min_input_length + extra
    folder = tmp_path_factory.mktemp("written")
    wav = folder / "x.wav"
    sf.write(str(wav), make_signal(length, in_channels, 8000, seed=seed), 8000, subtype="FLOAT")
    cfg = Config(input=str(wav), seed=seed, model=dataclasses.replace(model, in_channels="auto"),
                 output=OutputConfig(dir=str(folder / "out"), format=fmt), runtime=RuntimeConfig(chunk_seconds=chunk))
    result = run(cfg)
    loaded = np.load(result.output, allow_pickle=False)
    arr = loaded if fmt == "npy" else loaded["features"]
    ok = arr.shape == (ConvStack.from_config(model, in_channels=in_channels).out_channels, geometry.output_length(length))
    FIGURES.outcome("fuzz", ok, f"written shape {arr.shape} for {model}")
    assert ok


# ---------------------------------------------------------------- configs with a defect
def _tripwire(*a, **k):
    raise AssertionError("audio was read before the config was checked")


def _trip_on_audio_reads(monkeypatch):
    """Every decoder entry point (soundfile's, looked up at call time by every loader) trips on a
    read; writing (the next example's input) still works."""
    real = sf.SoundFile

    def soundfile(file, mode="r", *a, **k):
        if "r" in mode:
            _tripwire()
        return real(file, mode, *a, **k)

    monkeypatch.setattr(sf, "SoundFile", soundfile)
    monkeypatch.setattr(sf, "info", _tripwire)


@pytest.mark.slow
@fuzz_settings(120)
@given(model=broken_models(), groups_mismatch=st.booleans())
def test_a_broken_config_fails_before_any_audio_is_read(model, groups_mismatch, tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.mktemp("broken")
    wav = folder / "x.wav"
    sf.write(str(wav), make_signal(4000, 2, 8000), 8000)
    _trip_on_audio_reads(monkeypatch)  # every audio read opens the file through soundfile
    out = folder / "out"
    for chunk in (None, 0.1):
        cfg = Config(input=str(wav), model=model, output=OutputConfig(dir=str(out)),
                     runtime=RuntimeConfig(chunk_seconds=chunk))
        try:
            run(cfg)
            outcome = "no error"
        except ConfigError as err:
            outcome = "ok" if "\n" not in str(err) else f"multi-line: {err}"
        except BaseException as err:  # noqa: BLE001 - anything else is the bug this test looks for
            outcome = f"{type(err).__name__}: {err}"
        ok = outcome == "ok" and not out.exists()
        FIGURES.outcome("fuzz", ok, f"broken config {model}: {outcome}")
        assert ok, outcome


@fuzz_settings(15)
@given(model=broken_models())
def test_a_broken_config_stops_the_batch_job_before_any_audio_is_read(model, tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.mktemp("broken_batch")
    (folder / "in").mkdir()
    sf.write(str(folder / "in" / "x.wav"), make_signal(4000, 2, 8000), 8000)
    _trip_on_audio_reads(monkeypatch)
    cfg = BatchConfig(input=str(folder / "in"), model=model, output=OutputConfig(dir=str(folder / "out")),
                      batch=BatchOptions(progress="none"))
    try:
        run_batch(cfg)
        outcome = "no error"
    except ConfigError as err:
        outcome = "ok" if "\n" not in str(err) else f"multi-line: {err}"
    except BaseException as err:  # noqa: BLE001
        outcome = f"{type(err).__name__}: {err}"
    ok = outcome == "ok" and not (folder / "out").exists()
    FIGURES.outcome("fuzz", ok, f"broken config (batch) {model}: {outcome}")
    assert ok, outcome


# ---------------------------------------------------------------- the loader on any bytes
def _outcome(fn):
    try:
        return "ok", fn()
    except PipelineError as err:
        return "error", err
    except BaseException as err:  # noqa: BLE001 - the bug this test looks for
        return "crash", err


SMALL_STACK = ConvStack.from_config(ModelConfig(layers=[LayerConfig(3, 5, stride=2, activation="relu")]), in_channels=1)


def check_loader(data: bytes, ext: str, folder: Path, rate) -> None:
    path = folder / f"fuzz.{ext}"
    path.write_bytes(data)
    cfg = AudioConfig(sample_rate=rate, channels="mono")
    kind, whole = _outcome(lambda: load_audio(path, cfg))
    problems = []
    if kind == "crash":
        problems.append(f"load_audio crashed: {type(whole).__name__}: {whole}")
    elif kind == "error":
        msg = str(whole)
        if "\n" in msg or str(path) not in msg:
            problems.append(f"unclear error: {msg!r}")
    else:
        w = whole.waveform
        if w.dtype != torch.float32 or w.dim() != 2 or w.shape[0] != 1 or w.shape[1] < 1 or not torch.isfinite(w).all():
            problems.append(f"bad audio: {w.dtype} {tuple(w.shape)}")
    bkind, blocks = _outcome(lambda: [b for b in open_blocks(path, cfg, block_frames=700)])
    if bkind == "crash":
        problems.append(f"block reader crashed: {type(blocks).__name__}: {blocks}")
    elif rate is None and bkind != kind:
        problems.append(f"whole-file {kind} but blocks {bkind}: {whole!r} / {blocks!r}")
    elif rate is None and kind == "ok":
        got = torch.cat(blocks, dim=1) if blocks else torch.zeros(1, 0)
        if got.shape != whole.waveform.shape or float((got - whole.waveform).abs().max()) > 1e-5:
            problems.append(f"blocks {tuple(got.shape)} != whole {tuple(whole.waveform.shape)}")
    if kind == "ok" and not problems:
        fkind, feats = _outcome(lambda: extract(whole, SMALL_STACK))
        want = SMALL_STACK.geometry.output_length(whole.frames)
        if fkind == "crash" or (fkind == "ok" and tuple(feats.shape) != (3, want)):
            problems.append(f"features: {fkind} {feats!r}")
    FIGURES.outcome("fuzz", not problems, f"loader on {len(data)} bytes .{ext} (rate {rate}): {problems}")
    assert not problems, problems


@pytest.fixture
def small_memory(monkeypatch):
    """The loader's memory checks see 512 MB available: a header that asks for more is refused
    without this test ever allocating it (the machine is shared)."""
    monkeypatch.setattr(decode_mod, "_available_bytes", lambda: 512 << 20)


@pytest.mark.slow
@fuzz_settings(250)
@given(case=mutated(), rate=st.sampled_from([None, None, 8000, 16000]))
def test_loader_on_mutated_audio_files(case, rate, tmp_path_factory, small_memory):
    check_loader(*case, tmp_path_factory.mktemp("mut"), rate)


@fuzz_settings(80)
@given(data=st.binary(max_size=3000), ext=st.sampled_from(EXTENSIONS))
def test_loader_on_any_bytes(data, ext, tmp_path_factory, small_memory):
    check_loader(data, ext, tmp_path_factory.mktemp("bin"), None)
