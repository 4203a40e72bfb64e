"""The geometry module against real nn.Conv1d stacks, and its errors."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from conv_pipeline.errors import ConfigError, InputError
from conv_pipeline.geometry import LayerGeometry, StackGeometry
from helpers.strategies import layer_geometries as layer_st



def torch_rule(L, k, s, p, d):
    return math.floor((L + 2 * p - d * (k - 1) - 1) / s) + 1


def real_stack(layers, channels):
    mods = [
        nn.Conv1d(channels[i], channels[i + 1], l.kernel_size, l.stride, l.padding, l.dilation, groups=g)
        for i, (l, g) in enumerate(layers)
    ]
    return mods


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(
    layers=st.lists(st.tuples(layer_st, st.sampled_from([1, 2])), min_size=1, max_size=4),
    length=st.integers(1, 120),
    base=st.sampled_from([2, 4]),
)
def test_lengths_match_real_conv1d_stacks(layers, length, base):
    """Per layer: the predicted length equals what nn.Conv1d produces (or torch refuses when 0)."""
    geo = StackGeometry([l for l, _ in layers])
    channels = [base] + [base * (i + 2) for i in range(len(layers))]  # all divisible by groups 1, 2
    x = torch.randn(1, channels[0], length)
    predicted = geo.lengths(length)
    for i, mod in enumerate(real_stack(layers, channels)):
        l = layers[i][0]
        if predicted[i + 1] == 0:
            assert x.shape[-1] + 2 * l.padding < l.effective_kernel
            with pytest.raises(RuntimeError):
                mod(x)
            break
        with torch.no_grad():
            x = mod(x)
        assert x.shape[-1] == predicted[i + 1]
        assert predicted[i + 1] == torch_rule(predicted[i], l.kernel_size, l.stride, l.padding, l.dilation)


@settings(max_examples=150, deadline=None)
@given(layers=st.lists(layer_st, min_size=1, max_size=4))
def test_min_input_length_is_the_exact_minimum(layers):
    geo = StackGeometry(layers)
    n = geo.min_input_length
    assert geo.output_length(n) >= 1
    if n > 1:
        assert geo.output_length(n - 1) == 0


@settings(max_examples=60, deadline=None)
@given(layers=st.lists(layer_st, min_size=1, max_size=3), extra=st.integers(0, 40))
def test_frame_spans_match_the_gradient_support(layers, extra):
    """Frame t depends on exactly the input samples the geometry says (clipped to the file)."""
    geo = StackGeometry(layers)
    length = geo.min_input_length + extra
    torch.manual_seed(0)
    mods = [nn.Conv1d(1, 1, l.kernel_size, l.stride, l.padding, l.dilation, bias=False) for l in layers]
    for m in mods:
        nn.init.uniform_(m.weight, 0.5, 1.5)  # positive weights: no accidental cancellation
    x = torch.randn(1, 1, length, requires_grad=True)
    y = x
    for m in mods:
        y = m(y)
    n = y.shape[-1]
    assert n == geo.output_length(length)
    for t in {0, n // 2, n - 1}:
        (g,) = torch.autograd.grad(y[0, 0, t], x, retain_graph=True)
        support = (g[0, 0] != 0).nonzero().flatten().tolist()
        first, last = geo.frame_span(t)
        lo, hi = max(first, 0), min(last, length - 1)
        if lo > hi:  # the frame reads only padding
            assert support == []
            continue
        # every sample read lies in the span (a frame may read only padding of an inner layer)
        assert all(lo <= i <= hi for i in support)
        if all(l.padding == 0 for l in layers):  # no padding: the span's two ends are both read
            assert support[0] == first and support[-1] == last
        if all(l.stride == 1 and l.dilation == 1 for l in layers) and all(l.padding == 0 for l in layers[1:]):
            assert support == list(range(lo, hi + 1))


def test_wav2vec2_encoder_geometry():
    layers = [LayerGeometry(10, 5)] + [LayerGeometry(3, 2)] * 4 + [LayerGeometry(2, 2)] * 2
    geo = StackGeometry(layers)
    assert geo.receptive_field == 400
    assert geo.hop == 320
    assert geo.output_length(16000) == 49
    assert geo.min_input_length == 400
    assert geo.frame_span(1) == (320, 719)
    assert geo.frame_times(2, 16000) == pytest.approx([199.5 / 16000, 519.5 / 16000])


def test_seed_case_and_padding_times():
    geo = StackGeometry([LayerGeometry(5)])
    assert geo.output_length(6) == 2 and geo.output_length(100) == 96  # L - 4
    padded = StackGeometry([LayerGeometry(400, 160), LayerGeometry(3, 1, 1)])
    assert padded.receptive_field == 400 + 2 * 160
    assert padded.left_padding == 160
    assert padded.frame_starts(3) == [-160, 0, 160]
    assert padded.frame_times(1, 16000)[0] == pytest.approx((-160 + 359.5) / 16000)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(kernel_size=0), "kernel_size must be >= 1"),
        (dict(kernel_size=3, stride=0), "stride must be >= 1"),
        (dict(kernel_size=3, padding=-1), "padding must be >= 0"),
        (dict(kernel_size=3, dilation=0), "dilation must be >= 1"),
        (dict(kernel_size=2.5), "kernel_size must be an integer"),
    ],
)
def test_impossible_layers_raise_config_errors(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        LayerGeometry(**kwargs)


def test_empty_stack_and_too_short_input():
    with pytest.raises(ConfigError, match="empty"):
        StackGeometry([])
    geo = StackGeometry([LayerGeometry(400, 160), LayerGeometry(3, 1)])
    assert geo.min_input_length == 400 + 2 * 160
    with pytest.raises(InputError, match="needs at least 720"):
        geo.check_input_length(719, "x.wav")
    assert geo.check_input_length(720) == 1
