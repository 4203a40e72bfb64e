"""The seed tutorial's facts (shared/seed/README.md), first through torch, then through the CLI."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from helpers.audio import make_audio
from helpers.run import run_cli


def test_seed_conv1d_shapes_and_dot_products():
    torch.manual_seed(0)
    conv1d = nn.Conv1d(2, 3, 5)
    assert conv1d.in_channels == 2 and conv1d.out_channels == 3 and conv1d.kernel_size == (5,)
    assert conv1d.weight.shape == (3, 2, 5)  # (out_channels, in_channels, kernel_size)
    assert conv1d.bias.shape == (3,)
    x = torch.rand(4, 2, 6)  # (batch, in_channels, length)
    y = conv1d(x)
    assert y.shape == (4, 3, 2)  # (batch, out_channels, 6 - 5 + 1)
    w, b = conv1d.weight, conv1d.bias
    y000 = x[0, 0, 0:5] @ w[0, 0] + x[0, 1, 0:5] @ w[0, 1] + b[0]
    y001 = x[0, 0, 1:6] @ w[0, 0] + x[0, 1, 1:6] @ w[0, 1] + b[0]
    torch.testing.assert_close(y[0, 0, 0], y000)
    torch.testing.assert_close(y[0, 0, 1], y001)
    # every element: sum over input channels of a dot product, plus the bias
    for bi in range(4):
        for o in range(3):
            for t in range(2):
                manual = sum(x[bi, c, t : t + 5] @ w[o, c] for c in range(2)) + b[o]
                torch.testing.assert_close(y[bi, o, t], manual)


def test_seed_input_must_be_3d():
    conv1d = nn.Conv1d(2, 3, 5)
    with torch.no_grad():
        y2 = conv1d(torch.rand(2, 6))  # torch treats 2-D as unbatched (in_channels, length)
    assert y2.shape == (3, 2)
    from conv_pipeline.errors import InputError
    from conv_pipeline.stack.stack import ConvStack
    from conv_pipeline.config.schema import LayerConfig

    stack = ConvStack(2, [LayerConfig(out_channels=3, kernel_size=5)])
    try:
        stack(torch.rand(2, 6))
    except InputError as err:
        assert "3-D (batch, channels, frames)" in str(err)
    else:
        raise AssertionError("a 2-D input must be refused by the pipeline's stack")


@pytest.mark.slow
def test_seed_example_through_the_cli(tmp_path):
    """A 6-frame stereo WAV through model=tutorial gives (3, 2), equal to the dot products."""
    wav = tmp_path / "six.wav"
    x = make_audio(wav, channels=2, frames=6, sr=8000, subtype="FLOAT")  # (2, 6)
    out = tmp_path / "feats"
    proc = run_cli(f"input={wav}", "model=tutorial", f"output.dir={out}")
    assert proc.returncode == 0, proc.stderr
    y = np.load(out / "six.npy", allow_pickle=False)
    assert y.shape == (3, 2) and y.dtype == np.float32
    state = load_file(str(out / "model.safetensors"))
    w = state["layers.0.conv.weight"].numpy()  # (3, 2, 5)
    b = state["layers.0.conv.bias"].numpy()  # (3,)
    assert w.shape == (3, 2, 5) and b.shape == (3,)
    for o in range(3):
        for t in range(2):
            manual = x[0, t : t + 5] @ w[o, 0] + x[1, t : t + 5] @ w[o, 1] + b[o]
            assert abs(y[o, t] - manual) < 1e-5
