"""``ConvStack``: the whole stack, an ordinary ``nn.Module`` built from a ``ModelConfig``.

Flow: source -> load -> **stack** -> execute -> sink -> engines. The layers are the front-end's
(``frontends.py``, when ``model.frontend`` is set), then one ``ConvLayer`` (``layer.py``) per
``model.layers`` entry. ``geometry`` (``StackGeometry``) predicts the output length and
``execute`` checks every result against it. Weights come from ``seed`` (``from_config``) or from
``model.checkpoint`` (``build_stack``, ``checkpoint.py``).

Shapes: ``(batch, in_channels, frames) -> (batch, out_channels, geometry.output_length(frames))``.
With ``lengths`` the stack runs a padded batch exactly as if each item ran alone: positions past
each item's valid length (``StackGeometry.lengths``) are zeroed before every layer and norms over
time pool over valid frames only, so padding never leaks into valid frames ("Padded batches" in
``docs/geometry.md``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from conv_pipeline.config.checks import validate_model
from conv_pipeline.config.schema import FrontendConfig, LayerConfig, ModelConfig
from conv_pipeline.errors import ConfigError, InputError
from conv_pipeline.stack.checkpoint import load_checkpoint
from conv_pipeline.stack.layer import ConvLayer


class ConvStack(nn.Module):
    """A stack of ``ConvLayer``s.

    Args:
        in_channels: channels of the input audio.
        layers: layer specs, first layer first.

    Shapes: ``forward(x)`` takes ``(batch, in_channels, frames)`` and returns
    ``(batch, out_channels, geometry.output_length(frames))``.
    """

    def __init__(
        self, in_channels: int, layers: Sequence[LayerConfig], frontend: Optional[FrontendConfig] = None
    ) -> None:
        super().__init__()
        from conv_pipeline.config.checks import frontend_out_channels
        from conv_pipeline.stack.frontends import build_frontend

        self.model_config = ModelConfig(in_channels=in_channels, layers=list(layers), frontend=frontend)
        self.geometry = validate_model(self.model_config)
        self.in_channels = in_channels
        modules: list[nn.Module] = build_frontend(frontend, in_channels) if frontend is not None else []
        chans = frontend_out_channels(frontend) if frontend is not None else in_channels
        for spec in layers:
            modules.append(ConvLayer(chans, spec))
            chans = spec.out_channels
        self.out_channels = chans
        self.layers = nn.ModuleList(modules)

    @property
    def mixes_time(self) -> bool:
        """True when some layer normalises over time (chunked execution then needs two passes)."""
        return any(layer.mixes_time for layer in self.layers)

    @classmethod
    def from_config(cls, model: ModelConfig, in_channels: Optional[int] = None, seed: int = 0) -> "ConvStack":
        """Build with weights initialised from ``seed`` (same config and seed give the same weights)."""
        channels = in_channels if in_channels is not None else model.in_channels
        if channels == "auto":
            raise ConfigError("model.in_channels is 'auto': pass in_channels (the audio's channel count)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            stack = cls(int(channels), model.layers, model.frontend)
        stack.model_config.name = model.name
        return stack

    @classmethod
    def from_preset(cls, name: str, overrides: Sequence[str] = (), in_channels: Optional[int] = None, seed: int = 0):
        """Build from a preset under ``configs/model`` plus Hydra-style overrides, e.g.
        ``ConvStack.from_preset("default", ["model.layers.0.out_channels=32"], in_channels=1)``;
        ``model.checkpoint=PATH`` among the overrides loads those weights."""
        from conv_pipeline.config.compose import compose_config

        cfg = compose_config([f"model={name}", *overrides])
        stack = cls.from_config(cfg.model, in_channels=in_channels, seed=seed)
        if cfg.model.checkpoint:
            load_checkpoint(stack, cfg.model.checkpoint)
        return stack

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames for each item's valid input ``lengths`` (shape ``(batch,)``)."""
        return torch.tensor([self.geometry.output_length(int(n)) for n in lengths], dtype=torch.long)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x``: ``(batch, in_channels, frames)``; ``lengths``: valid frames per item, or None.

        Returns ``(batch, out_channels, frames_out)``; with ``lengths``, each item's frames past
        its own valid output length are padding (trim them with ``output_lengths``).
        """
        if not isinstance(x, torch.Tensor):
            raise InputError(
                f"input must be a torch.Tensor (batch, channels, frames), got {type(x).__name__}; "
                "conv_pipeline.Extractor takes numpy or torch audio of any of (frames,), (channels, frames), (batch, channels, frames)"
            )
        if x.dim() != 3:
            raise InputError(f"input must be 3-D (batch, channels, frames), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise InputError(f"input has {x.shape[1]} channels, the stack expects {self.in_channels}")
        self.geometry.check_input_length(int(x.shape[-1]))  # too short for one frame: InputError naming the minimum
        if lengths is None:
            for layer in self.layers:
                x = layer(x)
            return x
        per_layer = [self.geometry.lengths(int(n)) for n in lengths]  # per item: [L_0, ..., L_n]
        in_place_ok = not torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            # the caller's input is never modified; a layer's own output may be, when no autograd
            inputs = [lens[i] for lens in per_layer]
            x = _zero_past(x, inputs, in_place=i > 0 and in_place_ok)
            # an edge-padded layer (stack/classic.py) pads each item at its own end
            edge = {"lengths": inputs} if hasattr(layer, "edge_padding") else {}
            x = layer(x, [lens[i + 1] for lens in per_layer], **edge)
        return x


def _zero_past(x: torch.Tensor, valid: Sequence[int], in_place: bool = False) -> torch.Tensor:
    """Zero ``x[b, :, valid[b]:]`` for every item shorter than the batch (``in_place``: only
    the padded tails are touched, no new tensor)."""
    frames = x.shape[-1]
    short = [(b, v) for b, v in enumerate(valid) if v < frames]
    if not short:
        return x
    if in_place:
        for b, v in short:
            x[b, :, v:] = 0
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
