"""The conv stack: an ordinary ``nn.Module`` built from a ``ModelConfig``.

Each layer is ``Conv1d -> norm (optional, per frame) -> activation (optional)``. With
``lengths`` the stack runs a padded batch exactly as if each item ran alone: positions past
each item's valid length (from the geometry module) are zeroed before every layer, so padding
never leaks into valid frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from .config import ACTIVATIONS, NORMS, LayerConfig, ModelConfig, validate_model
from .errors import ConfigError, InputError

__all__ = ["ConvStack", "build_stack", "load_checkpoint", "save_weights", "checkpoint_in_channels"]

_ACTIVATION_TYPES = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
}
assert set(_ACTIVATION_TYPES) == set(ACTIVATIONS)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at every frame: ``(batch, channels, frames)`` in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)  # (B, C, T) -> (B, T, C) -> (B, C, T)


_NORM_TYPES = {"layer_norm": ChannelLayerNorm}
assert set(_NORM_TYPES) == set(NORMS)


class ConvLayer(nn.Module):
    """``Conv1d``, then an optional per-frame norm, then an optional activation."""

    def __init__(self, in_channels: int, spec: LayerConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels,
            spec.out_channels,
            spec.kernel_size,
            stride=spec.stride,
            padding=spec.padding,
            dilation=spec.dilation,
            groups=spec.groups,
            bias=spec.bias,
        )
        self.norm = _NORM_TYPES[spec.norm](spec.out_channels) if spec.norm else None
        self.act = _ACTIVATION_TYPES[spec.activation]() if spec.activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # (B, C_in, T) -> (B, C_out, T')
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class ConvStack(nn.Module):
    """A stack of ``ConvLayer``s.

    Args:
        in_channels: channels of the input audio.
        layers: layer specs, first layer first.

    Shapes: ``forward(x)`` takes ``(batch, in_channels, frames)`` and returns
    ``(batch, out_channels, geometry.output_length(frames))``.
    """

    def __init__(self, in_channels: int, layers: Sequence[LayerConfig]) -> None:
        super().__init__()
        self.model_config = ModelConfig(in_channels=in_channels, layers=list(layers))
        self.geometry = validate_model(self.model_config)
        self.in_channels = in_channels
        self.out_channels = layers[-1].out_channels
        chans = [in_channels] + [layer.out_channels for layer in layers]
        self.layers = nn.ModuleList(ConvLayer(chans[i], spec) for i, spec in enumerate(layers))

    @classmethod
    def from_config(cls, model: ModelConfig, in_channels: Optional[int] = None, seed: int = 0) -> "ConvStack":
        """Build with weights initialised from ``seed`` (same config and seed give the same weights)."""
        channels = in_channels if in_channels is not None else model.in_channels
        if channels == "auto":
            raise ConfigError("model.in_channels is 'auto': pass in_channels (the audio's channel count)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            stack = cls(int(channels), model.layers)
        stack.model_config.name = model.name
        return stack

    @classmethod
    def from_preset(cls, name: str, overrides: Sequence[str] = (), in_channels: Optional[int] = None, seed: int = 0):
        """Build from a preset under ``configs/model`` plus Hydra-style overrides, e.g.
        ``ConvStack.from_preset("default", ["model.layers.0.out_channels=32"], in_channels=1)``."""
        from .pipeline import compose_config

        cfg = compose_config([f"model={name}", *overrides])
        return cls.from_config(cfg.model, in_channels=in_channels, seed=seed)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames for each item's valid input ``lengths`` (shape ``(batch,)``)."""
        return torch.tensor([self.geometry.output_length(int(n)) for n in lengths], dtype=torch.long)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x``: ``(batch, in_channels, frames)``; ``lengths``: valid frames per item, or None.

        Returns ``(batch, out_channels, frames_out)``; with ``lengths``, each item's frames past
        its own valid output length are padding (trim them with ``output_lengths``).
        """
        if x.dim() != 3:
            raise InputError(f"input must be 3-D (batch, channels, frames), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise InputError(f"input has {x.shape[1]} channels, the stack expects {self.in_channels}")
        if lengths is None:
            for layer in self.layers:
                x = layer(x)
            return x
        per_layer = [self.geometry.lengths(int(n)) for n in lengths]  # per item: [L_0, ..., L_n]
        for i, layer in enumerate(self.layers):
            x = _zero_past(x, [lens[i] for lens in per_layer])
            x = layer(x)
        return x


def _zero_past(x: torch.Tensor, valid: Sequence[int]) -> torch.Tensor:
    """Zero ``x[b, :, valid[b]:]`` for every item shorter than the batch."""
    frames = x.shape[-1]
    if all(v >= frames for v in valid):
        return x
    idx = torch.arange(frames, device=x.device)  # (T,)
    keep = idx[None, :] < torch.tensor(valid, device=x.device)[:, None]  # (B, T)
    return x * keep[:, None, :].to(x.dtype)  # (B, C, T)


def build_stack(model: ModelConfig, in_channels: int, seed: int = 0) -> ConvStack:
    """A stack for ``in_channels`` input channels: seeded weights, or the checkpoint's when one is set."""
    stack = ConvStack.from_config(model, in_channels=in_channels, seed=seed)
    if model.checkpoint:
        load_checkpoint(stack, model.checkpoint)
    return stack


# ---------------------------------------------------------------- weights on disk
def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.checkpoint={str(path)!r}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(f"model.checkpoint={str(path)!r} is not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model.checkpoint={str(path)!r} cannot be loaded safely (weights_only=True): {first}"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"model.checkpoint={str(path)!r} does not hold a state_dict of tensors")
    return obj


def checkpoint_in_channels(path: str | Path, model: ModelConfig) -> int:
    """Input channels a checkpoint's first conv expects (``weight.shape[1] * groups``)."""
    state = _read_state_dict(path)
    weight = state.get("layers.0.conv.weight")
    if weight is None or weight.dim() != 3:
        raise ConfigError(
            f"model.checkpoint={str(path)!r} has no 3-D 'layers.0.conv.weight'; "
            "it was not written by conv_pipeline for this kind of stack"
        )
    return int(weight.shape[1]) * model.layers[0].groups


def load_checkpoint(stack: ConvStack, path: str | Path) -> None:
    """Load weights into ``stack``; refuse with the missing, unexpected or mismatched keys named."""
    state = _read_state_dict(path)
    own = stack.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:6]) + (" ..." if len(unexpected) > 6 else ""))
    if mismatched:
        problems.append("shape mismatch " + "; ".join(mismatched[:6]))
    if problems:
        raise ConfigError(
            f"model.checkpoint={str(path)!r} does not fit model.layers: {'; '.join(problems)}; "
            "use the model config the checkpoint was written with"
        )
    stack.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def weights_metadata(stack: ConvStack) -> dict[str, str]:
    from dataclasses import asdict

    cfg = asdict(stack.model_config)
    cfg.pop("checkpoint", None)
    return {"format": "conv_pipeline", "model": json.dumps(cfg, sort_keys=True)}


def save_weights(stack: ConvStack, path: str | Path) -> None:
    """Write the stack's weights (and its layer config as metadata) atomically as safetensors."""
    from safetensors.torch import save_file

    from .writer import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in stack.state_dict().items()}
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=weights_metadata(stack)))


def same_weights(stack: ConvStack, path: str | Path) -> bool:
    """True when ``path`` holds exactly ``stack``'s weights and layer config."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("model") != weights_metadata(stack)["model"]:
                return False
            own = stack.state_dict()
            if set(f.keys()) != set(own):
                return False
            return all(torch.equal(f.get_tensor(k), own[k].detach().cpu()) for k in own)
    except Exception:
        return False
