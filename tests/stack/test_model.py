"""The conv stack against a direct torch.nn.functional computation; seeding; checkpoints."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from safetensors.torch import save_file

from conv_pipeline.config.schema import LayerConfig, ModelConfig
from conv_pipeline.errors import ConfigError
from conv_pipeline.stack.stack import ConvStack, build_stack
from conv_pipeline.stack.checkpoint import load_checkpoint, save_weights, same_weights
from helpers.strategies import layer_lists

ACT = {None: lambda x: x, "relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "leaky_relu": F.leaky_relu}


def reference(x, stack, specs):
    """The stack computed layer by layer with F.conv1d and the same weights."""
    for layer, spec in zip(stack.layers, specs):
        c = layer.conv
        x = F.conv1d(x, c.weight, c.bias, spec.stride, spec.padding, spec.dilation, spec.groups)
        if spec.norm == "layer_norm":
            n = layer.norm.norm
            x = F.layer_norm(x.transpose(1, 2), (x.shape[1],), n.weight, n.bias, n.eps).transpose(1, 2)
        x = ACT[spec.activation](x)
    return x


# stereo stacks with every option ``reference`` computes: even widths (groups of 1 or 2), per-frame norms
stereo_stacks = layer_lists(2, out_channels=(2, 4, 6), kernel_size=(1, 7), activations=tuple(ACT), norms=(None, "layer_norm"))


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(specs=stereo_stacks, extra=st.integers(0, 50), seed=st.integers(0, 3))
def test_stack_equals_functional_reference(specs, extra, seed):
    stack = ConvStack.from_config(ModelConfig(layers=specs), in_channels=2, seed=seed).eval()
    length = stack.geometry.min_input_length + extra
    x = torch.randn(3, 2, length)
    with torch.no_grad():
        y = stack(x)
        ref = reference(x, stack, specs)
    assert y.shape == (3, specs[-1].out_channels, stack.geometry.output_length(length))
    torch.testing.assert_close(y, ref)


def test_same_seed_same_weights_and_no_global_rng_side_effect():
    model = ModelConfig(layers=[LayerConfig(out_channels=8, kernel_size=5), LayerConfig(out_channels=4, kernel_size=3)])
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = ConvStack.from_config(model, in_channels=2, seed=7)
    assert torch.equal(torch.rand(1), before)  # building did not consume the caller's RNG
    b = ConvStack.from_config(model, in_channels=2, seed=7)
    c = ConvStack.from_config(model, in_channels=2, seed=8)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert not torch.equal(a.layers[0].conv.weight, c.layers[0].conv.weight)


def test_checkpoints_round_trip_and_refusals(tmp_path):
    model = ModelConfig(layers=[LayerConfig(out_channels=8, kernel_size=5, activation="relu"), LayerConfig(out_channels=4, kernel_size=3)])
    src = ConvStack.from_config(model, in_channels=2, seed=1)
    st_path = tmp_path / "model.safetensors"
    save_weights(src, st_path)
    assert same_weights(src, st_path)
    pt_path = tmp_path / "model.pt"
    torch.save(src.state_dict(), pt_path)
    for path in (st_path, pt_path):
        model.checkpoint = str(path)
        loaded = build_stack(model, in_channels=2, seed=99)
        for k, v in src.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k])
    other = ConvStack.from_config(ModelConfig(layers=[LayerConfig(out_channels=8, kernel_size=7)]), in_channels=2)
    with pytest.raises(ConfigError, match=r"unexpected layers.1.conv.bias.*shape mismatch layers.0.conv.weight \(8, 2, 5\) vs model \(8, 2, 7\)"):
        load_checkpoint(other, st_path)
    partial = tmp_path / "partial.safetensors"
    save_file({"layers.0.conv.weight": torch.zeros(8, 2, 5)}, str(partial))
    with pytest.raises(ConfigError, match=r"missing layers.0.conv.bias, layers.1.conv.bias, layers.1.conv.weight"):
        load_checkpoint(ConvStack.from_config(model, in_channels=2), partial)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(st_path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        load_checkpoint(src, truncated)


def test_padded_batch_masking_gives_single_item_results():
    specs = [
        LayerConfig(out_channels=4, kernel_size=5, padding=2, activation="relu"),
        LayerConfig(out_channels=4, kernel_size=3, padding=3, dilation=2, activation="gelu"),
        LayerConfig(out_channels=3, kernel_size=4, stride=2, padding=1),
    ]
    stack = ConvStack.from_config(ModelConfig(layers=specs), in_channels=2, seed=3).eval()
    lengths = [40, 23, 31]
    items = [torch.randn(2, n) for n in lengths]
    batch = torch.zeros(3, 2, max(lengths))
    for i, it in enumerate(items):
        batch[i, :, : it.shape[1]] = it
    with torch.no_grad():
        y = stack(batch, torch.tensor(lengths))
        unmasked = stack(batch)
        outs = stack.output_lengths(torch.tensor(lengths))
        for i, it in enumerate(items):
            alone = stack(it[None])[0]
            assert alone.shape[1] == outs[i]
            torch.testing.assert_close(y[i, :, : outs[i]], alone, atol=1e-5, rtol=0)
    # without the mask, padding leaks into the shorter items' last valid frames
    assert (unmasked[1, :, : outs[1]] - y[1, :, : outs[1]]).abs().max() > 1e-4


def test_group_norm_on_a_single_frame_matches_the_chunk_free_definition():
    """One output frame: nn.GroupNorm refuses it, the stack gives the definition's answer (bias)."""
    specs = [LayerConfig(out_channels=4, kernel_size=8, stride=4, norm="group_norm", activation=None)]
    stack = ConvStack.from_config(ModelConfig(layers=specs), in_channels=1, seed=0).eval()
    with torch.no_grad():
        stack.layers[0].norm.norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.4]))
        y = stack(torch.randn(2, 1, 8))  # one frame per item
        yb = stack(torch.randn(2, 1, 11), torch.tensor([8, 11]))
    torch.testing.assert_close(y, torch.tensor([0.1, -0.2, 0.3, 0.4]).expand(2, 4)[..., None])
    torch.testing.assert_close(yb[:, :, :1], torch.tensor([0.1, -0.2, 0.3, 0.4]).expand(2, 4)[..., None])
