"""Padded batches (``conv_pipeline.execute.whole.extract_batch``): each file's features equal the
stack run on that file alone, for every stack the config allows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conv_pipeline.config.schema import ModelConfig
from conv_pipeline.execute.whole import extract_batch
from conv_pipeline.stack.stack import ConvStack
from helpers.strategies import stacks


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=stacks(), extra=st.lists(st.integers(0, 60), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_padded_batch_equals_each_file_alone(spec, extra, seed):
    """In float64, so that what is compared is the padding, not float32 rounding: a batched conv
    rounds differently from a single one (~1e-7), and a norm over a few nearly equal values
    (layer_norm over 2 channels) can amplify that past 1e-5 even with no padding at all."""
    in_channels, layers = spec
    stack = ConvStack.from_config(ModelConfig(layers=layers), in_channels=in_channels, seed=seed).double().eval()
    need = stack.geometry.min_input_length
    gen = torch.Generator().manual_seed(seed)
    waves = [torch.randn(in_channels, need + n, generator=gen, dtype=torch.float64) for n in extra]
    for w in waves:  # torch's GroupNorm refuses a single frame per channel (alone or batched)
        lengths = stack.geometry.lengths(w.shape[-1])
        assume(all(lengths[i + 1] > 1 for i, layer in enumerate(layers) if layer.norm == "group_norm"))
    got = extract_batch(waves, stack)
    assert len(got) == len(waves)
    for w, y in zip(waves, got):
        with torch.inference_mode():
            alone = stack(w[None])[0]  # the single-file computation: no padding, no lengths
        assert y.dtype == torch.float32
        assert tuple(y.shape) == (stack.out_channels, stack.geometry.output_length(w.shape[-1]))
        assert y.shape == alone.shape
        assert float((y.double() - alone).abs().max()) <= 1e-5 * max(1.0, float(alone.abs().max()))
