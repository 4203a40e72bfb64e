"""``ConvStack.forward`` refuses what it cannot run with the project's one-line ``InputError``
(numpy input, too few samples for one frame), never a raw torch error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conv_pipeline.errors import InputError
from conv_pipeline.stack.stack import ConvStack


@pytest.mark.parametrize("preset", ["default", "mel", "wav2vec2_base"])
def test_too_short_input_names_the_minimum(preset):
    stack = ConvStack.from_preset(preset, in_channels=1).eval()
    n = stack.geometry.min_input_length
    with torch.no_grad():
        assert stack(torch.zeros(1, 1, n)).shape[-1] == 1
        with pytest.raises(InputError, match=f"needs at least {n} "):
            stack(torch.zeros(1, 1, n - 1))
        # the minimum is torch's own: the layers run by hand on one sample fewer give no frame
        x = torch.zeros(1, 1, n - 1)
        with pytest.raises(RuntimeError):
            for layer in stack.layers:
                x = layer(x)
                if x.shape[-1] == 0:
                    raise RuntimeError("no frame")


def test_numpy_input_is_one_line_pointing_at_the_extractor():
    stack = ConvStack.from_preset("default", in_channels=1)
    with pytest.raises(InputError, match="must be a torch.Tensor .*got ndarray; conv_pipeline.Extractor"):
        stack(np.zeros((1, 1, 2000), np.float32))
