"""A filterbank 1x1 conv computed over its bands (``conv_pipeline.stack.bands``): the same numbers
as ``F.conv1d`` with the same weights, for any input strides, batches and biases; the bands path
is really taken for a mel matrix and not for a dense weight; a weight written in place is decided
again; autograd gets the conv's gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from conv_pipeline.config.schema import LayerConfig
from conv_pipeline.stack import bands
from conv_pipeline.stack.layer import ConvLayer
from conv_pipeline.stack.spectral import fix_weights


def mel_weight(n_freq: int = 201, n_mels: int = 80) -> torch.Tensor:
    return AF.melscale_fbanks(n_freq, 0.0, 8000.0, n_mels, 16000, norm=None, mel_scale="htk").T.contiguous()


def layer_with(weight: torch.Tensor, bias: bool = False) -> ConvLayer:
    out_ch, in_ch = weight.shape
    layer = ConvLayer(in_ch, LayerConfig(out_channels=out_ch, kernel_size=1, bias=bias))
    with torch.no_grad():
        layer.conv.weight.copy_(weight[:, :, None])
        if bias:
            layer.conv.bias.copy_(torch.linspace(-1, 1, out_ch))
    return layer


def power_frames(batch: int, frames: int, n_freq: int = 201, time_major: bool = True) -> torch.Tensor:
    """``(B, F, T)`` non-negative, as a transposed view of ``(B, T, F)`` (the FFT path's layout) or row-major."""
    g = torch.Generator().manual_seed(batch * 1000 + frames)
    x = torch.rand(batch, frames, n_freq, generator=g) ** 4 * 50
    return x.transpose(1, 2) if time_major else x.transpose(1, 2).contiguous()


def test_a_mel_matrix_gets_bands_and_a_dense_weight_does_not():
    mel = bands.row_bands(mel_weight())
    assert mel is not None and len(mel.groups) >= 2
    assert sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in mel.groups) <= 0.4 * 80 * 201
    for r0, r1, c0, c1 in mel.groups:  # every non-zero weight lies inside its group's span
        w = mel_weight()[r0:r1]
        assert bool((w[:, :c0] == 0).all()) and bool((w[:, c1:] == 0).all())
    assert bands.row_bands(torch.randn(80, 201)) is None


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("time_major", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_bands_equal_the_dense_conv(batch, time_major, bias):
    layer = fix_weights(layer_with(mel_weight(), bias))
    x = power_frames(batch, 517, time_major=time_major)
    with torch.inference_mode():
        got = layer(x)
        ref = F.conv1d(x.contiguous(), layer.conv.weight, layer.conv.bias)
    assert layer.bands.value is not None  # the bands path ran
    assert got.shape == ref.shape == (batch, 80, 517)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def test_rows_without_weights_give_zeros_and_a_lone_frame_works():
    w = mel_weight()
    w[:25] = 0  # the first groups reach no input at all
    layer = layer_with(w)
    for frames in (1, 40):
        x = power_frames(2, frames)
        with torch.no_grad():
            got = layer(x)
            ref = F.conv1d(x.contiguous(), layer.conv.weight)
        assert layer.bands.value is not None
        assert bool((got[:, :25] == 0).all())
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def test_a_weight_written_in_place_is_decided_again():
    layer = layer_with(mel_weight())
    x = power_frames(1, 64)
    with torch.no_grad():
        layer(x)
        assert layer.bands.value is not None
        dense = torch.randn(80, 201)
        layer.conv.weight.data.copy_(dense[:, :, None])  # behind autograd's back: values compared
        got = layer(x)
        assert layer.bands.value is None
        torch.testing.assert_close(got, F.conv1d(x.contiguous(), layer.conv.weight), rtol=1e-5, atol=1e-4)


def test_autograd_runs_the_conv_and_gets_its_gradients():
    layer = layer_with(mel_weight())
    x = power_frames(1, 50).detach().requires_grad_(True)
    layer(x).square().sum().backward()
    gx, gw = x.grad.clone(), layer.conv.weight.grad.clone()
    x2 = x.detach().clone().requires_grad_(True)
    w2 = layer.conv.weight.detach().clone().requires_grad_(True)
    F.conv1d(x2, w2).square().sum().backward()
    torch.testing.assert_close(gx, x2.grad)
    torch.testing.assert_close(gw, w2.grad)
