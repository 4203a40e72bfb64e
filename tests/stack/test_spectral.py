"""The windowed-DFT conv run as an FFT (``conv_pipeline.stack.spectral``): the same numbers as the
dense conv with the same weights (``F.conv1d``) and as torchaudio / ``torch.stft``, whole and in
padded batches; the FFT path is really taken; weights that are not a DFT basis run as the conv.
Chunked execution of the same layers: ``tests/execute/test_spectral_chunked.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from conv_pipeline.stack import spectral
from conv_pipeline.stack.checkpoint import save_weights
from conv_pipeline.stack.stack import ConvStack

HOP, N_FFT = 160, 400


def signal(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(n, generator=g)).float()


def dense(stack: ConvStack, x: torch.Tensor) -> torch.Tensor:
    """The stack's numbers the slow way: ``F.conv1d`` with its weights, (re, im) -> power, mel as a 1x1 conv.
    ``x`` ``(T,)`` -> ``(C, T')``."""
    with torch.no_grad():
        return _dense(stack, x)


def _dense(stack: ConvStack, x: torch.Tensor) -> torch.Tensor:
    first = stack.layers[0]
    y = F.conv1d(x[None, None], first.conv.weight, None, first.conv.stride)  # (1, 2F, T')
    re, im = y.chunk(2, dim=1)
    power = first.act.power if isinstance(first.act, spectral.PairMagnitude) else first.act[0].power
    y = (re * re + im * im) ** (power / 2)
    for layer in stack.layers[1:]:
        y = F.conv1d(y, layer.conv.weight, layer.conv.bias)
    return y[0]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


class Counter:
    """Counts ``torch.fft.rfft`` calls (the FFT path) while it patches it."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        real = torch.fft.rfft

        def rfft(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(torch.fft, "rfft", rfft)


def mel_ref(**kw):
    return torchaudio.transforms.MelSpectrogram(16000, n_fft=N_FFT, hop_length=HOP, center=False, power=2.0, **{"n_mels": 80, **kw})


@pytest.mark.parametrize("length", [400, 401, 560, pytest.param(16000 * 2 + 77, marks=pytest.mark.slow)])
def test_mel_fft_equals_dense_conv_and_torchaudio(monkeypatch, length):
    x = signal(length)
    stack = ConvStack.from_preset("mel", in_channels=1).eval()
    count = Counter(monkeypatch)
    with torch.inference_mode():
        got = stack(x[None, None])[0]
    assert count.calls >= 1  # the FFT path was taken
    ref, conv = mel_ref()(x), dense(stack, x)
    assert got.shape == ref.shape == conv.shape == (80, stack.geometry.output_length(length))
    assert rel(got, conv) <= 1e-5 and rel(got, ref) <= 1e-5


@pytest.mark.parametrize("power", [1, 2, 0.5])
def test_stft_fft_equals_torch_stft(monkeypatch, power):
    x = signal(16000 + 321, seed=1)
    stack = ConvStack.from_preset("stft", [f"model.frontend.power={power}"], in_channels=1).eval()
    count = Counter(monkeypatch)
    with torch.no_grad():
        got = stack(x[None, None])[0]
    assert count.calls >= 1
    ref = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=False, return_complex=True).abs() ** power
    assert got.shape == ref.shape
    assert rel(got, ref) <= 1e-5 and rel(got, dense(stack, x)) <= 1e-5


@pytest.mark.slow
def test_other_windows_sizes_and_log():
    x = signal(9000, seed=2)
    over = ["model.frontend.n_fft=512", "model.frontend.hop_length=128", "model.frontend.window=hamming",
            "model.frontend.win_length=300", "model.frontend.log=true"]
    stack = ConvStack.from_preset("mel", over, in_channels=1).eval()
    with torch.inference_mode():
        got = stack(x[None, None])[0]
    assert stack.layers[0].spectral.value is not None
    win = torch.nn.functional.pad(torch.hamming_window(300), (106, 106))
    spec = torch.stft(x, 512, 128, window=win, center=False, return_complex=True).abs() ** 2
    fb = torchaudio.functional.melscale_fbanks(257, 0.0, 8000.0, 80, 16000, norm=None, mel_scale="htk")
    ref = torch.log(fb.T @ spec + 1e-6)
    assert rel(got, ref) <= 1e-5


@pytest.mark.slow
def test_padded_batch_of_different_lengths(monkeypatch):
    lengths = [16000, 401, 7000, 400, 12345]
    xs = [signal(n, seed=i) for i, n in enumerate(lengths)]
    batch = torch.zeros(len(xs), 1, max(lengths))
    for i, x in enumerate(xs):
        batch[i, 0, : x.numel()] = x
    stack = ConvStack.from_preset("mel", in_channels=1).eval()
    count = Counter(monkeypatch)
    with torch.inference_mode():
        y = stack(batch, torch.tensor(lengths))
    assert count.calls >= 1
    mel = mel_ref()
    for i, x in enumerate(xs):
        got = y[i, :, : stack.geometry.output_length(lengths[i])]
        assert rel(got, mel(x)) <= 1e-5 and rel(got, dense(stack, x)) <= 1e-5


@pytest.mark.slow
def test_long_input_split_between_threads_equals_one_thread():
    x = signal(16000 * 60, seed=3)  # 5998 frames: more than SERIAL_FRAMES, split when threads > 1
    stack = ConvStack.from_preset("mel", in_channels=1).eval()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.inference_mode():
            two = stack(x[None, None])[0]
        assert torch.get_num_threads() == 2  # restored after the serial parts
        torch.set_num_threads(1)
        with torch.inference_mode():
            one = stack(x[None, None])[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)  # the same blocks, the same arithmetic
    assert rel(one, mel_ref()(x)) <= 1e-5


@pytest.mark.slow
def test_non_dft_checkpoint_runs_as_the_conv(tmp_path, monkeypatch):
    stack = ConvStack.from_preset("mel", in_channels=1).eval()
    with torch.no_grad():  # a "learned" front-end: the DFT basis plus noise
        stack.layers[0].conv.weight.add_(1e-3 * torch.randn_like(stack.layers[0].conv.weight))
    path = tmp_path / "w.safetensors"
    save_weights(stack, path)
    loaded = ConvStack.from_preset("mel", [f"model.checkpoint={path}"], in_channels=1).eval()
    x = signal(8000, seed=4)
    count = Counter(monkeypatch)
    with torch.inference_mode():
        got = loaded(x[None, None])[0]
    assert count.calls == 0 and loaded.layers[0].spectral.value is None
    assert rel(got, dense(loaded, x)) <= 1e-5
    assert rel(got, mel_ref()(x)) > 1e-4  # really other weights


def test_weight_changed_in_place_is_noticed(monkeypatch):
    stack = ConvStack.from_preset("stft", in_channels=1).eval()
    x = signal(4000, seed=5)
    with torch.no_grad():
        stack(x[None, None])
        assert stack.layers[0].spectral.value is not None
        stack.layers[0].conv.weight.data[3, 0, 7] += 0.01  # .data: the version counter does not move
        count = Counter(monkeypatch)
        got = stack(x[None, None])[0]
    assert count.calls == 0 and stack.layers[0].spectral.value is None
    assert rel(got, dense(stack, x)) <= 1e-5
    with torch.no_grad():  # back to a DFT basis of another window: detected again
        stack.layers[0].conv.weight.copy_(spectral.stft_kernels(N_FFT, torch.hamming_window(N_FFT, dtype=torch.float64)))
        got = stack(x[None, None])[0]
    assert count.calls >= 1
    ref = torch.stft(x, N_FFT, HOP, window=torch.hamming_window(N_FFT), center=False, return_complex=True).abs()
    assert rel(got, ref) <= 1e-5


def test_layouts_the_fft_does_not_cover_fall_back():
    base = ConvStack.from_preset("stft", in_channels=1).layers[0].conv
    with_bias = torch.nn.Conv1d(1, base.out_channels, N_FFT, HOP, bias=True)
    dilated = torch.nn.Conv1d(1, base.out_channels, N_FFT, HOP, dilation=2, bias=False)
    reflect = torch.nn.Conv1d(1, base.out_channels, N_FFT, HOP, padding=3, padding_mode="reflect", bias=False)
    for conv in (with_bias, dilated, reflect):
        with torch.no_grad():
            conv.weight.copy_(base.weight)
        assert spectral.dft_window(conv) is None
    assert spectral.dft_window(base) is not None


def test_autograd_uses_the_conv():
    stack = ConvStack.from_preset("mel", in_channels=1)
    x = signal(4000, seed=6)[None, None].requires_grad_()
    y = stack(x)
    y.sum().backward()
    assert x.grad is not None and stack.layers[0].conv.weight.grad is not None
    with torch.no_grad():
        assert rel(y.detach()[0], stack(x.detach())[0]) <= 1e-5


def test_fixed_weights_skip_the_value_check_but_follow_versioned_writes(monkeypatch):
    """``fix_weights`` (the engines' stacks): the FFT decision is kept without comparing the
    weight's values each call, and a write that bumps the version (``copy_`` under no_grad, as
    ``load_state_dict`` does) is still noticed: a non-DFT weight then runs as the conv."""
    stack = spectral.fix_weights(ConvStack.from_preset("stft", in_channels=1).eval())
    x = signal(4000, seed=6)
    equal_calls = []
    real_equal = torch.equal
    monkeypatch.setattr(torch, "equal", lambda a, b: equal_calls.append(1) or real_equal(a, b))
    with torch.no_grad():
        stack(x[None, None])
        stack(x[None, None])
    assert stack.layers[0].spectral.value is not None and equal_calls == []
    with torch.no_grad():
        w = stack.layers[0].conv.weight
        w.copy_(w + 0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(1), dtype=w.dtype))
        count = Counter(monkeypatch)
        got = stack(x[None, None])[0]
    assert count.calls == 0 and stack.layers[0].spectral.value is None  # no longer a DFT basis: the conv
    assert rel(got, dense(stack, x)) <= 1e-5
