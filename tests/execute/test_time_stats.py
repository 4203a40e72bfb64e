"""The statistics pass of a norm over time (``StreamingStack(collect=j)``): for a small ``groups=1``
conv the conv is not run; its output's per-channel mean and variance come from the moments of its
input windows (``windows.Covariance``). Checked against the explicit conv output (``F.conv1d`` on
the whole input, float64), and a wav2vec2-shaped stack against whole-file execution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conv_pipeline.config.schema import LayerConfig
from conv_pipeline.execute.chunked import StreamingStack, iter_features
from conv_pipeline.stack.stack import ConvStack
from conv_pipeline.windows import Covariance
from helpers.tensors import rel_diff, split

W2V_SHAPES = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2


def collected(stack: ConvStack, x: torch.Tensor, sizes: list[int], j: int) -> tuple[StreamingStack, tuple]:
    """Layer ``j``'s statistics pass over ``x`` ``(C_in, n)`` in blocks of ``sizes``."""
    streamer = StreamingStack(stack, collect=j)
    for block in split(x, sizes):
        assert streamer.push(block).shape[-1] == 0  # a statistics pass emits no features
    streamer.flush()
    return streamer, streamer.collected()


def explicit(stack: ConvStack, x: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population variance of layer ``j``'s conv output on the whole input."""
    with torch.inference_mode():
        y = x[None].double()
        for layer in stack.layers[:j]:
            y = layer(y)
        conv = stack.layers[j].conv
        y = F.conv1d(y, conv.weight.double(), None if conv.bias is None else conv.bias.double(),
                     conv.stride, conv.padding, conv.dilation, conv.groups)[0]
    return y.mean(dim=1), y.var(dim=1, correction=0)


@pytest.mark.parametrize("in_ch, k, stride, padding, dilation", [
    (1, 10, 5, 0, 1), (1, 10, 5, 7, 1), (3, 4, 1, 2, 3), (2, 3, 7, 4, 1), (4, 5, 2, 9, 2),
])
@pytest.mark.parametrize("sizes", [[1], [7, 3], [64], [1000]])
def test_window_moments_equal_the_conv_outputs(in_ch, k, stride, padding, dilation, sizes):
    """Random weights and bias, padding, stride (also larger than the span), dilation, chunk sizes
    shorter than a window and longer than the input: 1e-9 relative, float64."""
    torch.manual_seed(k * 100 + stride)
    layers = [LayerConfig(6, k, stride, padding, dilation, norm="group_norm", activation="gelu")]
    stack = ConvStack(in_ch, layers).eval().double()
    x = 0.5 + torch.randn(in_ch, 523, dtype=torch.float64)  # an offset: the mean matters
    streamer, (mean, var) = collected(stack, x, sizes, 0)
    assert streamer.layers[0].gram is not None  # the conv was not run
    ref_mean, ref_var = explicit(stack, x, 0)
    assert rel_diff(mean, ref_mean) <= 1e-9 and rel_diff(var, ref_var) <= 1e-9


def test_a_later_layer_gets_its_windows_from_the_layers_before():
    """group_norm on layer 2: layer 1 runs (padding, gelu), layer 2's windows are 4 x 3 values."""
    torch.manual_seed(3)
    layers = [LayerConfig(4, 5, 2, 3, activation="gelu"), LayerConfig(8, 3, 2, 1, 2, norm="group_norm")]
    stack = ConvStack(2, layers).eval().double()
    x = torch.randn(2, 411, dtype=torch.float64)
    for sizes in ([5], [33, 2], [411]):
        streamer, (mean, var) = collected(stack, x, sizes, 1)
        assert streamer.layers[1].gram is not None
        ref_mean, ref_var = explicit(stack, x, 1)
        assert rel_diff(mean, ref_mean) <= 1e-9 and rel_diff(var, ref_var) <= 1e-9


def test_large_windows_and_grouped_convs_keep_the_output_moments():
    """k * C_in over 512, or groups > 1: the conv runs and its output's moments are kept (same values)."""
    torch.manual_seed(4)
    for in_ch, k, groups in [(64, 9, 1), (4, 3, 2)]:
        stack = ConvStack(in_ch, [LayerConfig(4, k, 2, groups=groups, norm="group_norm")]).eval().double()
        x = torch.randn(in_ch, 200, dtype=torch.float64)
        streamer, (mean, var) = collected(stack, x, [37], 0)
        assert streamer.layers[0].gram is None
        ref_mean, ref_var = explicit(stack, x, 0)
        assert rel_diff(mean, ref_mean) <= 1e-9 and rel_diff(var, ref_var) <= 1e-9


def test_covariance_merges_chunks_like_numpy():
    rng = np.random.default_rng(5)
    rows = rng.normal(3.0, 2.0, size=(300, 4)) @ rng.normal(size=(4, 4))
    cov = Covariance(4, "cpu")
    for part in np.split(rows, [1, 2, 50, 51, 299]):
        cov.add(torch.from_numpy(part))
    w, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    mean, var = cov.linear_mean_var(torch.from_numpy(w), torch.from_numpy(b))
    y = rows @ w + b
    np.testing.assert_allclose(mean.numpy(), y.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), y.var(axis=0), rtol=1e-10)
    np.testing.assert_allclose((cov.m2 / cov.count).numpy(), np.cov(rows.T, bias=True), rtol=1e-10)


@pytest.mark.parametrize("sizes", [[5920], [997, 3], [20800]])
def test_wav2vec2_shaped_stack_equals_whole_file(sizes):
    """wav2vec2 base's shapes (group_norm over time after the 10/5 conv), 64 channels, float32:
    chunked (the statistics from the windows) equals the stack on the whole input within 1e-5."""
    layers = [LayerConfig(64, k, s, activation="gelu", norm="group_norm" if i == 0 else None, bias=False)
              for i, (k, s) in enumerate(W2V_SHAPES)]
    torch.manual_seed(0)
    stack = ConvStack(1, layers).eval()
    t = torch.arange(20800) / 16000
    x = (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.1 * torch.randn(20800) + 0.05)[None]
    out = torch.cat(list(iter_features(split(x, sizes), stack)), dim=1)
    with torch.inference_mode():
        ref = stack(x[None])[0]
    assert out.shape == ref.shape == (64, 64)
    assert rel_diff(out, ref) <= 1e-5
