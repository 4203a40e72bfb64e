"""Chunked execution of the stft/mel front-ends, whose conv runs as an FFT
(``conv_pipeline.stack.spectral``): equal to torchaudio / ``torch.stft`` and to the dense conv
with the same weights for chunk sizes shorter than ``n_fft`` and not multiples of the hop; the FFT
path is taken; a checkpoint whose first conv is not a DFT basis streams as the conv."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from conv_pipeline.execute.chunked import iter_features
from conv_pipeline.stack.stack import ConvStack

CHUNKS = [pytest.param(1, marks=pytest.mark.slow), 57, 160, 399, 401, 1000, 16000]


def signal(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return (0.3 * torch.sin(2 * torch.pi * 300 * t) + 0.05 * torch.randn(n, generator=g)).float()


def chunked(stack: ConvStack, x: torch.Tensor, size: int) -> torch.Tensor:
    return torch.cat(list(iter_features(list(x[None].split(size, dim=-1)), stack)), dim=-1)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def count_rfft(monkeypatch) -> list[int]:
    calls = [0]
    real = torch.fft.rfft

    def rfft(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft", rfft)
    return calls


@pytest.mark.parametrize("size", CHUNKS)
def test_chunked_mel_equals_torchaudio(monkeypatch, size):
    x = signal(16000 + 1234)
    stack = ConvStack.from_preset("mel", in_channels=1).eval()
    calls = count_rfft(monkeypatch)
    got = chunked(stack, x, size)
    assert calls[0] >= 1
    ref = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=80, center=False, power=2.0)(x)
    assert got.shape == ref.shape
    assert rel(got, ref) <= 1e-5


@pytest.mark.parametrize("size", [57, 399, 1000])
@pytest.mark.parametrize("overrides", [[], ["model.frontend.power=2", "model.frontend.log=true"]])
def test_chunked_stft_equals_torch_stft(size, overrides):
    x = signal(9000, seed=1)
    stack = ConvStack.from_preset("stft", overrides, in_channels=1).eval()
    got = chunked(stack, x, size)
    ref = torch.stft(x, 400, 160, window=torch.hann_window(400), center=False, return_complex=True).abs()
    if overrides:
        ref = torch.log(ref**2 + 1e-6)
    assert got.shape == ref.shape
    assert rel(got, ref) <= 1e-5


@pytest.mark.parametrize("size", [399, 1000])
def test_chunked_with_non_dft_weights_streams_the_conv(monkeypatch, size):
    stack = ConvStack.from_preset("mel", in_channels=1).eval()
    with torch.no_grad():
        stack.layers[0].conv.weight.add_(1e-3 * torch.randn_like(stack.layers[0].conv.weight))
    x = signal(6000, seed=2)
    calls = count_rfft(monkeypatch)
    got = chunked(stack, x, size)
    assert calls[0] == 0
    with torch.no_grad():  # the dense conv with the same weights
        y = F.conv1d(x[None, None], stack.layers[0].conv.weight, None, 160)
        re, im = y.chunk(2, dim=1)
        ref = F.conv1d(re * re + im * im, stack.layers[1].conv.weight)[0]
    assert rel(got, ref) <= 1e-5


def test_user_layers_after_the_mel_front_end_stream_exactly():
    over = ["model.frontend.log=true", "model.layers=[{out_channels:16,kernel_size:3,stride:2,padding:1,activation:gelu}]"]
    stack = ConvStack.from_preset("mel", over, in_channels=1).eval()
    x = signal(12000, seed=3)
    with torch.inference_mode():
        whole = stack(x[None, None])[0]
    for size in (333, 4000):
        assert rel(chunked(stack, x, size), whole) <= 1e-5


@pytest.mark.parametrize("dense", [False, True])
def test_chunked_filterbank_runs_over_its_bands_or_dense(dense):
    """The mel matrix (1x1 conv, 392 non-zero weights of 16,080) streams as one product per band of
    its input channels (``stack/bands.py``); the same layer with every weight non-zero as the full
    product. Either way: ``F.conv1d`` of the power spectrum with the layer's weights, chunk by chunk."""
    from conv_pipeline.execute.chunked import StreamingStack

    stack = ConvStack.from_preset("mel", in_channels=1).eval()
    fb = stack.layers[1].conv
    if dense:
        with torch.no_grad():
            fb.weight.add_(1e-4)
    assert (StreamingStack(stack).layers[1].bands is None) == dense
    x = signal(9000, seed=4)
    got = chunked(stack, x, 1000)
    with torch.no_grad():
        y = F.conv1d(x[None, None], stack.layers[0].conv.weight, None, 160)
        re, im = y.chunk(2, dim=1)
        ref = F.conv1d(re * re + im * im, fb.weight, fb.bias)[0]
    assert got.shape == ref.shape
    assert rel(got, ref) <= 1e-5
