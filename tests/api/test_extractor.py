"""``conv_pipeline.api.Extractor`` (issue 14): features of a waveform in memory equal what the CLI
writes for a file holding the same samples, bit for bit (numpy and torch input, mono and
stereo, int16/int32 PCM, resampled, normalised, whole and chunked, batches, a run's
``config.yaml``), with the CLI's frame times; bad input and bad settings are one-line
``InputError`` / ``ConfigError``s.

The references are the CLI's own outputs (``engines/single.py: run`` in this process, and
``python -m conv_pipeline`` as a process in the slow test) read back with ``numpy.load``, and
``torch.nn.functional.conv1d`` for a bare conv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from helpers.audio import make_audio
from helpers.run import run_cli, run_pipeline

from conv_pipeline.api import Extractor, Features
from conv_pipeline.config.compose import compose_config
from conv_pipeline.config.plan import build_plan
from conv_pipeline.config.schema import (
    AudioConfig,
    Config,
    FrontendConfig,
    LayerConfig,
    ModelConfig,
    RuntimeConfig,
)
from conv_pipeline.errors import ConfigError, InputError, PipelineError

SR = 16000
FRAMES = 40000  # 2.5 s: more than one 2 s chunk (the default runtime.chunk_seconds)


def _value(v) -> str:
    """A test value as a command-line override value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return str(v)


def cli_features(audio: Path, out: Path, overrides: dict, fmt: str = "npy") -> np.ndarray | dict:
    """What the single-file CLI writes for ``audio`` with ``overrides`` (``{dotted key: value}``)."""
    args = [f"{k}={_value(v)}" for k, v in overrides.items()] + [f"output.format={fmt}"]
    result = run_pipeline(audio, out, *args)
    if fmt == "npz":
        with np.load(result.output, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return np.load(result.output, allow_pickle=False)


def read(path: Path, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """The file's samples as ``(channels, frames)`` in ``dtype`` (float32: what the decoder gives)."""
    data, rate = sf.read(str(path), dtype=dtype, always_2d=True)
    return np.ascontiguousarray(data.T), rate


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("api")
    make_audio(root / "mono.wav", channels=1, frames=FRAMES, seed=1)
    make_audio(root / "stereo.wav", channels=2, frames=FRAMES, seed=2)
    return root


@pytest.fixture(scope="module")
def mel() -> Extractor:
    return Extractor("mel")


@pytest.fixture(scope="module")
def mel_cli(clips) -> dict:
    return cli_features(clips / "mono.wav", clips / "mel", {"model": "mel"}, fmt="npz")


def tiny(**runtime) -> Config:
    """``Conv1d(2, 3, 5)`` (the tutorial layer) as a ``Config``, composed without Hydra."""
    return Config(model=ModelConfig(name="tiny", in_channels=2, layers=[LayerConfig(out_channels=3, kernel_size=5)]),
                  audio=AudioConfig(sample_rate=SR), runtime=RuntimeConfig(**runtime))


# ---------------------------------------------------------------- equal to the CLI
@pytest.mark.slow
def test_numpy_mono_equals_cli_mel(mel, mel_cli, clips):
    """The issue's "done when": numpy 1-D input gives the CLI's model=mel features, bit for bit."""
    wave, rate = read(clips / "mono.wav")
    out = mel(wave[0], sample_rate=rate)
    assert isinstance(out, Features) and isinstance(out.features, np.ndarray)
    assert out.features.dtype == np.float32 and out.features.shape == mel_cli["features"].shape == (80, 248)
    assert np.array_equal(out.features, mel_cli["features"])


@pytest.mark.slow
def test_frame_times_equal_cli_metadata(mel, mel_cli, clips):
    wave, rate = read(clips / "mono.wav")
    out = mel(wave, sample_rate=rate)
    assert out.frame_times.dtype == np.float64
    assert np.array_equal(out.frame_times, mel_cli["frame_times"])
    assert (out.sample_rate, out.hop, out.receptive_field, out.left_padding) == (
        mel_cli["sample_rate"], mel_cli["hop"], mel_cli["receptive_field"], mel_cli["left_padding"])
    assert out.frame_times[0] == pytest.approx((400 - 1) / 2 / SR)  # centre of frame 0: samples 0..399


@pytest.mark.slow
def test_torch_stereo_equals_cli_mel(mel, clips, tmp_path):
    """Torch ``(channels, frames)`` in, a torch tensor out; mel's mono policy downmixes as for the file."""
    wave, rate = read(clips / "stereo.wav")
    out = mel(torch.from_numpy(wave), sample_rate=rate)
    assert isinstance(out.features, torch.Tensor) and out.features.dtype == torch.float32
    ref = cli_features(clips / "stereo.wav", tmp_path, {"model": "mel"})
    assert np.array_equal(out.features.numpy(), ref)


@pytest.mark.slow
def test_int16_input_scaled_like_soundfile(mel, mel_cli, clips):
    pcm, rate = read(clips / "mono.wav", "int16")
    assert pcm.dtype == np.int16 and np.abs(pcm).max() > 1000
    assert np.array_equal(mel(pcm, sample_rate=rate).features, mel_cli["features"])
    assert np.array_equal(mel(torch.from_numpy(pcm), sample_rate=rate).features.numpy(), mel_cli["features"])


@pytest.mark.slow
def test_default_preset_stereo_equals_cli(clips, tmp_path):
    """``model.in_channels=auto`` with ``keep``: a 2-channel stack with the CLI's seeded weights."""
    wave, rate = read(clips / "stereo.wav")
    ex = Extractor("default")
    out = ex(wave, sample_rate=rate)
    assert ex.stack_for(2).in_channels == 2
    assert np.array_equal(out.features, cli_features(clips / "stereo.wav", tmp_path, {}))
    assert out.features.shape == (128, 248)


CASES = {  # name: (file channels, rate, subtype, read as, input type, overrides)
    "whole": (2, SR, "PCM_16", "float32", "numpy", {"runtime.chunk_seconds": None}),
    "resampled-chunked": (1, 22050, "PCM_16", "int16", "numpy", {"model": "mel"}),
    "resampled-whole": (1, 22050, "PCM_16", "int16", "torch", {"model": "mel", "runtime.chunk_seconds": None}),
    "normalized-chunked": (2, SR, "PCM_16", "float32", "numpy", {"audio.normalize": True, "runtime.chunk_seconds": 0.7}),
    "normalized-whole": (2, SR, "PCM_16", "float32", "torch", {"audio.normalize": True, "runtime.chunk_seconds": None}),
    "int32": (1, SR, "PCM_32", "int32", "numpy", {"model": "mel", "model.frontend.n_mels": 64}),
    "float64": (2, 8000, "DOUBLE", "float64", "numpy", {"audio.channels": [1, 0], "seed": 5}),
    "8k-to-16k-mono": (2, 8000, "FLOAT", "float32", "torch", {"audio.channels": "mono", "runtime.chunk_seconds": 0.3}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_cli(case, tmp_path):
    """The load stage (PCM scaling, channel policy, resampling, normalisation) and the execution
    (whole, chunked) as the CLI runs them for a file: the same float32 features, bit for bit."""
    channels, rate, subtype, dtype, kind, overrides = CASES[case]
    path = tmp_path / "in.wav"
    make_audio(path, channels=channels, frames=int(2.3 * rate), sr=rate, seed=3, subtype=subtype)
    wave, _ = read(path, dtype)
    preset = overrides.get("model", "default")
    ex = Extractor(preset, **{k: v for k, v in overrides.items() if k != "model"})
    out = ex(torch.from_numpy(wave) if kind == "torch" else wave, sample_rate=rate)
    got = out.features.numpy() if kind == "torch" else out.features
    assert np.array_equal(got, cli_features(path, tmp_path / "out", overrides))
    assert out.sample_rate == SR


@pytest.mark.slow
def test_config_yaml_reproduces_the_run(clips, tmp_path):
    """An Extractor built from the config.yaml a run wrote (or its folder) gives that run's
    features: its seed, channel policy and chunking; another seed does not."""
    settings = {"seed": 7, "audio.channels": [1, 0], "runtime.chunk_seconds": 0.5}
    ref = cli_features(clips / "stereo.wav", tmp_path, settings)
    wave, rate = read(clips / "stereo.wav")
    for source in (tmp_path / "config.yaml", tmp_path, str(tmp_path / "config.yaml")):
        assert np.array_equal(Extractor(source)(wave, sample_rate=rate).features, ref)
    other = Extractor(tmp_path, seed=8)(wave, sample_rate=rate).features
    assert other.shape == ref.shape and not np.array_equal(other, ref)


# ---------------------------------------------------------------- batches and plain convs
def test_batch_items_equal_single_calls():
    ex = Extractor(tiny(chunk_seconds=0.01))  # 160-sample chunks
    x = np.random.default_rng(0).uniform(-1, 1, (3, 2, 1000)).astype(np.float32)
    out = ex(x, sample_rate=SR)
    assert out.features.shape == (3, 3, 996)  # frames - 5 + 1
    for i in range(3):
        single = ex(x[i], sample_rate=SR)
        assert np.array_equal(out.features[i], single.features)
        assert np.array_equal(out.frame_times, single.frame_times)
    tout = ex(torch.from_numpy(x), sample_rate=SR)
    assert isinstance(tout.features, torch.Tensor) and torch.equal(tout.features, torch.from_numpy(out.features))


@pytest.mark.parametrize("chunk", [None, 0.01])
def test_equals_conv1d(chunk):
    """Whole and chunked execution of a bare conv against ``torch.nn.functional.conv1d``."""
    ex = Extractor(tiny(chunk_seconds=chunk))
    conv = ex.stack_for(2).layers[0].conv
    x = torch.randn(2, 1200, generator=torch.Generator().manual_seed(1))
    ref = F.conv1d(x[None], conv.weight, conv.bias)[0]
    out = ex(x, sample_rate=SR)
    np.testing.assert_allclose(out.features.numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert np.allclose(out.frame_times, (np.arange(1196) + 2) / SR)  # centre of a 5-sample window


def test_config_sources_and_overrides_are_not_shared():
    cfg = tiny(chunk_seconds=None)
    a = Extractor(cfg, seed=3)
    assert cfg.seed == 0 and a.plan.config.seed == 3  # the caller's config is a copy's source only
    from omegaconf import OmegaConf

    b = Extractor(OmegaConf.structured(cfg), runtime={"chunk_seconds": 0.05})
    assert b.plan.chunk_seconds == 0.05 and b.plan.config.model.layers[0].kernel_size == 5
    c = Extractor({"model": {"in_channels": 2, "layers": [{"out_channels": 4, "kernel_size": 3}]}})
    assert c.stack_for(2).out_channels == 4


# ---------------------------------------------------------------- settings
@pytest.mark.slow
def test_overrides_mean_what_the_command_line_means():
    """``audio.sample_rate`` moves a preset's front-end rate (interpolations kept); the plan equals
    the CLI's for the same ``KEY=VALUE``s."""
    ex = Extractor("mel", audio={"sample_rate": 8000}, **{"model.frontend.n_mels": 40})
    cli = build_plan(compose_config(["model=mel", "audio.sample_rate=8000", "model.frontend.n_mels=40"]),
                     "file", need_input=False)
    assert ex.plan.config.model == cli.config.model and ex.plan.config.audio == cli.config.audio
    assert ex.sample_rate == 8000 and ex.plan.config.model.frontend.sample_rate == 8000


@pytest.mark.slow
def test_bad_setting_is_the_plans_config_error():
    with pytest.raises(ConfigError) as err:
        Extractor("mel", **{"model.frontend.n_mels": 0})
    with pytest.raises(ConfigError) as cli:
        build_plan(compose_config(["model=mel", "model.frontend.n_mels=0"]), "file", need_input=False)
    assert str(err.value) == str(cli.value)


@pytest.mark.parametrize(
    "source, overrides, expected",
    [
        ("tiny", {"audio.chanels": "mono"}, "unknown config key 'audio.chanels' (did you mean audio.channels?)"),
        ("tiny", {"audio": {"normalise": True}}, "unknown config key 'audio.normalise' (did you mean audio.normalize?)"),
        ("tiny", {"seed": "abc"}, "seed"),
        ("tiny", {"runtime.chunk_seconds": -1}, "runtime.chunk_seconds"),
        ("tiny", {"model.in_channels": 3, "audio.channels": [0, 1]}, "audio.channels=[0,1] gives 2 channel(s)"),
        (3, {}, "a config is a preset name"),
        ("no/such/config.yaml", {}, "no such config file"),
    ],
)
def test_config_errors(source, overrides, expected):
    with pytest.raises(ConfigError) as err:
        Extractor(tiny() if source == "tiny" else source, **overrides)
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_unknown_preset_has_did_you_mean():
    with pytest.raises(ConfigError, match=r"model=mell: no such model preset \(did you mean mel\?\)"):
        Extractor("mell")


# ---------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def stereo_tiny() -> Extractor:
    return Extractor(tiny(chunk_seconds=None))


BAD_INPUTS = {
    "0-d": (np.float32(0.5), "has shape () (0 dimensions)"),
    "4-d": (np.zeros((1, 1, 2, 100), np.float32), "has shape (1, 1, 2, 100) (4 dimensions)"),
    "empty": (np.zeros((2, 0), np.float32), "is empty (shape (2, 0))"),
    "no channels": (torch.zeros(0, 100), "is empty (shape (0, 100))"),
    "complex": (np.ones((2, 100), np.complex64), "holds complex samples"),
    "complex torch": (torch.ones(2, 100, dtype=torch.complex64), "holds complex samples"),
    "int8": (np.ones((2, 100), np.int8), "samples of dtype int8"),
    "int64 torch": (torch.ones(2, 100, dtype=torch.int64), "samples of dtype int64"),
    "bool": (np.ones((2, 100), bool), "samples of dtype bool"),
    "list": ([[0.0] * 100] * 2, "must be a numpy array or a torch tensor"),
    "nan": (np.where(np.arange(200).reshape(2, 100) == 7, np.nan, 0.1), "contains 1 NaN or Inf sample(s)"),
    "inf torch": (torch.full((2, 100), float("inf")), "contains 200 NaN or Inf sample(s)"),
    "float64 overflow": (np.full((2, 100), 1e300), "contains 200 NaN or Inf sample(s)"),
    "transposed": (np.zeros((100, 2), np.float32), "(soundfile.read returns (frames, channels): pass its transpose"),
    "too short": (np.zeros((2, 4), np.float32), "has 4 samples at 16000 Hz but the stack needs at least 5"),
    "one channel": (np.zeros(100, np.float32), "has 1 channel(s) after audio.channels=keep but the stack takes 2"),
    "three channels": (np.zeros((3, 100), np.float32), "has 3 channel(s) after audio.channels=keep but the stack takes 2"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_input_error(stereo_tiny, name):
    waveform, expected = BAD_INPUTS[name]
    with pytest.raises(InputError) as err:
        stereo_tiny(waveform, sample_rate=SR)
    assert expected in str(err.value), str(err.value)
    assert "\n" not in str(err.value) and str(err.value).startswith(("waveform", "sample_rate"))


@pytest.mark.parametrize("rate, expected", [
    (None, "sample_rate is required"),
    (0, "sample_rate=0 is outside the rates"),
    (-16000, "sample_rate=-16000 is outside the rates"),
    (16000.0, "sample_rate must be a positive integer (Hz), got 16000.0 (float)"),
    ("16000", "got '16000' (str)"),
    (True, "got True (bool)"),
])
def test_bad_sample_rate(stereo_tiny, rate, expected):
    with pytest.raises(InputError) as err:
        stereo_tiny(np.zeros((2, 100), np.float32), sample_rate=rate)
    assert expected in str(err.value)
    assert stereo_tiny(np.zeros((2, 100), np.float32), sample_rate=np.int64(SR)).sample_rate == SR


def test_channel_index_the_input_lacks():
    ex = Extractor(tiny(), audio={"channels": [1, 1]})
    with pytest.raises(InputError, match=r"waveform: has 1 channel\(s\) but audio.channels=\[1,1\] asks for channel 1"):
        ex(np.zeros(100, np.float32), sample_rate=SR)
    assert ex(np.zeros((2, 100), np.float32), sample_rate=SR).features.shape == (3, 96)


def test_too_short_names_the_minimum_at_the_inputs_rate():
    """mel needs 400 samples at 16 kHz: 200 at 8 kHz (ceil(2 * 200) = 400). The boundary is exact."""
    mel = Extractor(Config(model=ModelConfig(name="mel", in_channels=1, frontend=FrontendConfig(type="mel")),
                           audio=AudioConfig(sample_rate=SR, channels="mono")))
    assert mel(np.zeros(400, np.float32), sample_rate=SR).features.shape == (80, 1)
    assert mel(np.zeros(200, np.float32), sample_rate=8000).features.shape == (80, 1)
    with pytest.raises(InputError, match=r"has 399 samples at 16000 Hz but the stack needs at least 400 \(receptive"):
        mel(np.zeros(399, np.float32), sample_rate=SR)
    with pytest.raises(InputError, match=r"has 199 samples at 8000 Hz but the stack needs at least 200 \(400 at the"):
        mel(np.zeros(199, np.float32), sample_rate=8000)


def test_errors_are_pipeline_errors(stereo_tiny):
    """What the CLI turns into one line and exit status 2: never a raw torch error."""
    for bad in (np.zeros((2, 3, 4, 5)), np.zeros((5, 2))):
        with pytest.raises(PipelineError):
            stereo_tiny(bad, sample_rate=SR)


# ---------------------------------------------------------------- the CLI as a process
@pytest.mark.slow
def test_equals_the_command_line(clips, tmp_path):
    """``python -m conv_pipeline input=F.wav model=mel output.dir=D``, read back with numpy.load."""
    proc = run_cli(f"input={clips / 'stereo.wav'}", "model=mel", f"output.dir={tmp_path / 'D'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ref = np.load(tmp_path / "D" / "stereo.npy", allow_pickle=False)
    wave, rate = read(clips / "stereo.wav")
    ex = Extractor("mel")
    assert np.array_equal(ex(wave, sample_rate=rate).features, ref)
    assert np.array_equal(ex(torch.from_numpy(wave), sample_rate=rate).features.numpy(), ref)
    mono = wave.mean(axis=0, dtype=np.float32)  # the downmix, given as 1-D: the same stack input
    assert np.array_equal(ex(mono, sample_rate=rate).features, ref)
