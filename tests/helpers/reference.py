"""Features recomputed without the pipeline: ``F.conv1d`` layer by layer with the weights and
layer specs an output folder holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def reference_features(out_dir: Path, waveform: np.ndarray) -> np.ndarray:
    """Recompute features independently: F.conv1d layer by layer with the weights in
    ``out_dir/model.safetensors`` and the layer specs in ``out_dir/config.yaml``.

    ``waveform``: ``(channels, frames)`` as the stack sees it (after channel policy/resampling).
    """
    import torch
    import torch.nn.functional as F
    import yaml
    from safetensors.torch import load_file

    cfg = yaml.safe_load((Path(out_dir) / "config.yaml").read_text())
    state = load_file(str(Path(out_dir) / "model.safetensors"))
    x = torch.from_numpy(np.asarray(waveform, np.float32))[None]  # (1, C, T)
    for i, spec in enumerate(cfg["model"]["layers"]):
        w, b = state[f"layers.{i}.conv.weight"], state.get(f"layers.{i}.conv.bias")
        x = F.conv1d(x, w, b, spec["stride"], spec["padding"], spec["dilation"], spec["groups"])
        if spec["norm"] == "layer_norm":
            x = F.layer_norm(
                x.transpose(1, 2), (x.shape[1],), state[f"layers.{i}.norm.norm.weight"], state[f"layers.{i}.norm.norm.bias"]
            ).transpose(1, 2)
        act = spec["activation"]
        if act is not None:
            x = getattr(F, act)(x) if act not in ("tanh", "sigmoid") else getattr(torch, act)(x)
    return x[0].numpy()
