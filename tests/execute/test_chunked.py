"""Chunked execution (``conv_pipeline.execute.chunked``): the frames of the whole-file
computation, in bounded memory.

References are computed independently of the executor: the stack's own modules on the whole
input (``whole``), ``load_audio`` and ``extract`` on the whole file. The streaming reader and
resampler are tested in ``tests/load/test_stream.py``, the streaming writer in
``tests/sink/test_writer.py``.
"""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conv_pipeline.load.audio import load_audio
from conv_pipeline.config.schema import LayerConfig
from conv_pipeline.errors import ConfigError, InputError
from conv_pipeline.stack.stack import ConvStack
from conv_pipeline.config.compose import compose_config
from conv_pipeline.execute.whole import extract
from conv_pipeline.engines.single import run
from conv_pipeline.execute.chunked import StreamingStack, iter_features
from conv_pipeline.execute.stream_file import extract_file_chunked
from conv_pipeline.sink.writer import TMP_MARKER
from helpers.audio import make_audio
from helpers.paths import ROOT
from helpers.run import run_cli
from helpers.strategies import stacks
from helpers.tensors import max_abs, rel_diff, split

W2V_SHAPES = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2


def whole(stack: ConvStack, x: torch.Tensor) -> torch.Tensor:
    """``stack(x[None])[0]``, layer by layer on row-major inputs: torch 2.14's CPU grouped conv
    crashes (SIGSEGV) on a 1-frame input with the transposed strides a layer norm leaves."""
    with torch.inference_mode():
        y = x[None]
        for layer in stack.layers:
            y = layer(y.clone(memory_format=torch.contiguous_format))
        return y[0]


def largest_value(stack: ConvStack, x: torch.Tensor) -> float:
    """The largest magnitude any layer computes (float64, whole input): the scale of float32
    rounding at the output, even where the output itself cancels to small values."""
    with torch.inference_mode():
        y, top = x.double()[None], 0.0
        for layer in copy.deepcopy(stack).double().layers:
            y = layer(y.clone(memory_format=torch.contiguous_format))
            top = max(top, max_abs(y))
    return top


def float32_error(stack: ConvStack, x: torch.Tensor) -> float:
    """How far float32 rounding moves the whole-file result from the float64 one: a random stack
    can amplify rounding (a norm over near-constant values: up to 1/sqrt(eps) per norm), and then
    any two orders of summation differ by about that much."""
    y32 = whole(copy.deepcopy(stack).float(), x.float()).double()
    y64 = whole(copy.deepcopy(stack).double(), x.double())
    return max_abs(y32 - y64)


# every layer option, output widths from a list (so that groups of 3 occur), norms over time too
STREAM_LAYERS = dict(in_channels=st.sampled_from([1, 2, 4]), max_layers=4, out_channels=(1, 2, 3, 4, 6),
                     groups=(1, 2, 3), stride=(1, 4), padding=(0, 4), norms=(None, "layer_norm", "group_norm"))
FLOAT32_LAYERS = {**STREAM_LAYERS, "out_channels": (2, 4, 8), "norms": (None,)}  # the float32 test: no norms


def _random_case(in_ch, layers, length, seed, dtype):
    torch.manual_seed(seed)
    stack = ConvStack(in_ch, layers).eval().to(dtype)
    n_out = stack.geometry.output_length(length)
    assume(n_out >= 1)
    x = torch.randn(in_ch, length, dtype=dtype)
    return stack, x, n_out


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(case=stacks(**STREAM_LAYERS), length=st.integers(1, 300), sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4),
       seed=st.integers(0, 2**31 - 1))
def test_chunked_equals_whole_file_exactly_in_float64(case, length, sizes, seed):
    """The algorithm is exact: every stack the config allows (padding, dilation, stride, groups,
    bias, every activation, layer_norm, group_norm over time), any chunk sizes (shorter than the
    receptive field, not multiples of the hop). Float64, so only the order of sums differs."""
    stack, x, n_out = _random_case(*case, length, seed, torch.float64)
    ref = whole(stack, x)
    out = torch.cat(list(iter_features(split(x, sizes), stack)), dim=1)
    assert out.shape == ref.shape == (stack.out_channels, n_out)
    # float64 rounding (1e-16) amplified by the stack: far below float32's (6e-8) amplified alike
    assert max_abs(out - ref) <= 1e-9 * max(1.0, max_abs(ref)) + 1e-6 * float32_error(stack, x)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(case=stacks(**FLOAT32_LAYERS), length=st.integers(1, 400),
       sizes=st.lists(st.integers(1, 80), min_size=1, max_size=3), seed=st.integers(0, 2**31 - 1))
def test_chunked_equals_whole_file_float32_within_1e5(case, length, sizes, seed):
    """The issue's tolerance on float32 stacks: 1e-5 of the largest value (the largest any layer
    computes: a random last layer can cancel to small values, and float32 rounding scales with
    what was summed, in either computation)."""
    stack, x, n_out = _random_case(*case, length, seed, torch.float32)
    out = torch.cat(list(iter_features(split(x, sizes), stack)), dim=1)
    ref = whole(stack, x)
    assert out.shape == (stack.out_channels, n_out)
    assert max_abs(out - ref) <= 1e-5 * largest_value(stack, x)


@pytest.mark.parametrize("norm", [pytest.param("layer_norm", marks=pytest.mark.slow), "group_norm"])
def test_wav2vec2_shaped_stacks_float32(norm):
    """wav2vec2 large (layer_norm on every layer) and base (group_norm over time on layer 1),
    narrowed to 64 channels, on 1.3 s of a tone in noise, 0.37 s chunks."""
    norms = [norm] * 7 if norm == "layer_norm" else ["group_norm"] + [None] * 6
    layers = [LayerConfig(64, k, s, activation="gelu", norm=n, bias=norm == "layer_norm") for (k, s), n in zip(W2V_SHAPES, norms)]
    torch.manual_seed(0)
    stack = ConvStack(1, layers).eval()
    t = torch.arange(20800) / 16000
    x = (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.1 * torch.randn(20800))[None]
    out = torch.cat(list(iter_features(split(x, [5920]), stack)), dim=1)
    ref = whole(stack, x)
    assert out.shape == ref.shape == (64, stack.geometry.output_length(20800)) == (64, 64)
    assert rel_diff(out, ref) <= 1e-5


def test_layer_norm_then_grouped_conv_on_one_frame_does_not_crash():
    """The input a per-frame norm leaves is transposed; torch 2.14 segfaults on a grouped conv of
    such a 1-frame tensor. The executor hands convs row-major buffers."""
    torch.manual_seed(0)
    stack = ConvStack(1, [LayerConfig(8, 5, norm="layer_norm"), LayerConfig(4, 2, stride=3, padding=4, dilation=2, groups=2)])
    x = torch.randn(1, 5)
    out = torch.cat(list(iter_features([x[:, :2], x[:, 2:]], stack)), dim=1)
    assert out.shape == (4, 3)
    assert rel_diff(out, whole(stack, x)) <= 1e-6


def test_streaming_stack_emits_each_frame_once_its_window_is_read():
    """A 400/160 window with 1 zero of padding: after t samples, frame j is out once its window
    (samples 160 j - 1 .. 160 j + 398) has been read; flush adds the frames the right padding
    completes."""
    stack = ConvStack(1, [LayerConfig(4, 400, stride=160, padding=1)])
    s = StreamingStack(stack)
    total = 0
    for t in range(100, 1001, 100):
        total += s.push(torch.randn(1, 100)).shape[1]
        assert total == max(0, (t + 1 - 400) // 160 + 1)
    assert total + s.flush().shape[1] == stack.geometry.output_length(1000)


def test_norm_over_time_needs_reiterable_blocks():
    stack = ConvStack(1, [LayerConfig(4, 3, norm="group_norm")])
    with pytest.raises(TypeError, match="re-iterable"):
        list(iter_features(iter([torch.randn(1, 50)]), stack))


@pytest.mark.slow
def test_long_file_with_resampling_and_mono(tmp_path):
    """A file ~50 chunks long, 44.1 kHz stereo -> 16 kHz mono, through the default model."""
    path = tmp_path / "long.flac"
    make_audio(path, channels=2, frames=44100 * 12 + 5, sr=44100, subtype="PCM_16")
    cfg = compose_config(["audio.channels=mono"])
    stack = ConvStack.from_config(cfg.model, in_channels=1).eval()
    res = extract_file_chunked(path, stack, cfg.audio, chunk_seconds=0.25)
    decoded = load_audio(path, cfg.audio)
    ref = extract(decoded, stack).numpy()
    assert res.written.shape == res.shape == ref.shape == (128, stack.geometry.output_length(decoded.frames))
    assert res.num_samples == decoded.frames and res.sample_rate == 16000
    assert np.abs(res.written - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["mel", "wav2vec2_base"])
def test_presets_with_front_ends_and_time_norms(tmp_path, preset):
    """A mel front-end (STFT magnitude pairs, mel 1x1 conv) and the wav2vec2 base encoder
    (audio.normalize, GroupNorm over time: two extra passes) chunked == whole file."""
    path = tmp_path / "v.wav"
    make_audio(path, channels=1, frames=16000 * 2 + 311, sr=16000)
    cfg = compose_config([f"model={preset}"])
    stack = ConvStack.from_config(cfg.model, in_channels=1).eval()
    ref = extract(load_audio(path, cfg.audio), stack).numpy()
    got = extract_file_chunked(path, stack, cfg.audio, chunk_seconds=0.3).written
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize(
    "case,needle",
    [("nan", "NaN or Inf"), ("too_short", "but the stack needs at least"), ("zero", "no audio frames"),
     ("channels", "selects channel 3")],
)
def test_errors_are_whole_file_mode_errors(tmp_path, case, needle):
    """Same one-line message with and without chunks; nothing written (not even the folder)."""
    path = tmp_path / f"{case}.wav"
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (8000 if case != "too_short" else 300, 2)).astype(np.float32)
    if case == "nan":
        data[7000, 1] = np.nan
        data[7001, 0] = np.inf
    if case == "zero":
        data = data[:0]
    sf.write(path, data, 8000, subtype="FLOAT")
    over = [f"input={path}", "model=tutorial", "model.layers.0.kernel_size=400"]
    if case == "channels":
        over.append("audio.channels=[0,3]")
    messages = []
    for chunk in ("null", "0.05"):
        out = tmp_path / f"out_{chunk}"
        with pytest.raises(InputError) as err:
            run(compose_config([*over, f"output.dir={out}", f"runtime.chunk_seconds={chunk}"]))
        messages.append(str(err.value))
        assert not out.exists()
    assert messages[0] == messages[1] and needle in messages[0]
    if case == "nan":
        assert "contains 2 NaN or Inf" in messages[1]  # counted over the whole file


@pytest.mark.parametrize("bad", [0, -1.5, "nan"])
def test_bad_chunk_seconds_is_a_config_error(tmp_path, bad):
    with pytest.raises(ConfigError, match="runtime.chunk_seconds must be null or a finite number of seconds > 0"):
        run(compose_config([f"input={tmp_path / 'missing.wav'}", f"runtime.chunk_seconds={bad}"]))


@pytest.mark.slow
def test_cli_chunked_equals_whole_file(tmp_path):
    """The CLI with chunks (not a multiple of anything) and with runtime.chunk_seconds=null."""
    wav = tmp_path / "song.wav"
    make_audio(wav, channels=2, frames=22050 * 6 + 3, sr=22050, subtype="PCM_16")
    outs = {}
    for chunk in ("null", "0.37"):
        out = tmp_path / f"o_{chunk}"
        proc = run_cli(f"input={wav}", f"output.dir={out}", f"runtime.chunk_seconds={chunk}", "output.format=npz", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "layer  kernel  stride" in proc.stderr
        outs[chunk] = np.load(out / "song.npz")
    a, b = outs["null"], outs["0.37"]
    frames_16k = -(-(22050 * 6 + 3) * 16000 // 22050)
    assert a.files == b.files
    assert a["features"].shape == b["features"].shape == (128, (frames_16k - 400) // 160 + 1)
    assert np.abs(a["features"] - b["features"]).max() <= 1e-5 * np.abs(a["features"]).max()
    for key in a.files:
        if key not in ("features", "config"):
            assert np.array_equal(a[key], b[key]), key


@pytest.mark.slow
def test_cli_killed_mid_file_leaves_no_output(tmp_path):
    """SIGKILL while the features stream into their temporary file: no file under the final name."""
    wav = tmp_path / "long.wav"
    frames = 16000 * 300
    with sf.SoundFile(wav, "w", 16000, 1, "PCM_16") as f:
        for _ in range(10):
            f.write(np.zeros(frames // 10, np.float32))
    out = tmp_path / "o"
    layers = "[{out_channels:256,kernel_size:10,stride:5},{out_channels:256,kernel_size:3,stride:2}]"
    proc = subprocess.Popen(
        [sys.executable, "-m", "conv_pipeline", f"input={wav}", f"output.dir={out}", "runtime.chunk_seconds=1",
         f"model.layers={layers}", "audio.sample_rate=null"],
        cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.exists() and any(TMP_MARKER in p.name for p in out.iterdir())):
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None, "finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert out.exists() and not (out / "long.npy").exists()
